"""Real users for RBAC tests: a ServiceAccount's token (TokenRequest API) as a kubeconfig
and an API client, and the questions ``kubectl auth can-i`` asks (SelfSubjectAccessReview,
SelfSubjectRulesReview), asked *as that user*."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml
from kubernetes import client, config

from event_router.operator.kube import request


def sa_token(api: client.ApiClient, namespace: str, name: str, seconds: int = 3600) -> str:
    token: str = request(
        api,
        "POST",
        f"/api/v1/namespaces/{namespace}/serviceaccounts/{name}/token",
        body={
            "apiVersion": "authentication.k8s.io/v1",
            "kind": "TokenRequest",
            "spec": {"expirationSeconds": seconds},
        },
    )["status"]["token"]
    return token


def token_kubeconfig(admin_kubeconfig: str, token: str, path: Path, user: str = "user") -> str:
    """A kubeconfig for the admin's cluster that authenticates with ``token`` only."""
    admin = yaml.safe_load(Path(admin_kubeconfig).read_text())
    cluster = admin["clusters"][0]
    cfg = {
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [cluster],
        "users": [{"name": user, "user": {"token": token}}],
        "contexts": [{"name": user, "context": {"cluster": cluster["name"], "user": user}}],
        "current-context": user,
    }
    path.write_text(yaml.safe_dump(cfg))
    path.chmod(0o600)
    return str(path)


def client_for(kubeconfig: str) -> client.ApiClient:
    return config.new_client_from_config(config_file=kubeconfig)


def can_i(
    user_api: client.ApiClient,
    verb: str,
    resource: str,
    namespace: str | None = None,
    *,
    group: str = "",
    name: str | None = None,
    subresource: str | None = None,
) -> bool:
    """``kubectl auth can-i VERB RESOURCE`` as the user of ``user_api``."""
    attrs: dict[str, Any] = {"verb": verb, "resource": resource, "group": group}
    if namespace:
        attrs["namespace"] = namespace
    if name:
        attrs["name"] = name
    if subresource:
        attrs["subresource"] = subresource
    review = request(
        user_api,
        "POST",
        "/apis/authorization.k8s.io/v1/selfsubjectaccessreviews",
        body={
            "apiVersion": "authorization.k8s.io/v1",
            "kind": "SelfSubjectAccessReview",
            "spec": {"resourceAttributes": attrs},
        },
    )
    return bool(review["status"].get("allowed"))


def rules(user_api: client.ApiClient, namespace: str) -> list[dict[str, Any]]:
    """``kubectl auth can-i --list -n NAMESPACE`` as the user of ``user_api``: the resource
    rules (SelfSubjectRulesReview)."""
    review = request(
        user_api,
        "POST",
        "/apis/authorization.k8s.io/v1/selfsubjectrulesreviews",
        body={
            "apiVersion": "authorization.k8s.io/v1",
            "kind": "SelfSubjectRulesReview",
            "spec": {"namespace": namespace},
        },
    )
    out: list[dict[str, Any]] = review["status"].get("resourceRules") or []
    return out
