"""Least-privilege RBAC, pinned with the operator's real ServiceAccount token: what the API
server says it may do (SelfSubjectRulesReview, as ``kubectl auth can-i --list``) is exactly
the set below, and attempts beyond it are Forbidden. Both installs: ``manifests/`` (bound
cluster-wide) and ``manifests-namespaced/`` (bound in the watched namespaces only)."""

from __future__ import annotations

import asyncio
import re
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml
from kubernetes import client
from kubernetes.client.exceptions import ApiException

from event_router.operator.devtools import (
    OperatorProcess,
    apply,
    condition,
    create_rc,
    get_rc,
    wait_for,
)
from event_router.operator.kube import request
from event_router.operator.secrets import CONSENT_ANNOTATION
from tests.support.kustomize import render
from tests.support.tokens import can_i, client_for, rules, sa_token, token_kubeconfig
from tests.unit.test_operator_crd import base_spec

pytestmark = [pytest.mark.integration, pytest.mark.timeout(180)]

REPO = Path(__file__).resolve().parents[2]
SYSTEM_NS = "event-router-system"
SA = "event-router-operator"

#: everything the operator may do, "group/resource": verbs ("" is the core group). A change
#: here is a change of the operator's rights: review it as one.
ALLOWED: dict[str, set[str]] = {
    "event-router.vmware.com/routerconfigs": {"get", "list", "watch"},
    "event-router.vmware.com/routerconfigs/status": {"patch"},
    "event-router.vmware.com/routerconfigs/finalizers": {"update"},
    "/secrets": {"get", "list", "watch"},  # never written
    "/configmaps": {"get", "list", "watch", "create", "update", "patch"},
    "/serviceaccounts": {"get", "create", "patch"},
    "/services": {"get", "list", "watch", "create", "patch", "delete"},
    "rbac.authorization.k8s.io/roles": {"get", "create", "patch"},
    "rbac.authorization.k8s.io/rolebindings": {"get", "create", "patch"},
    "apps/deployments": {"get", "list", "watch", "create", "patch"},
    "coordination.k8s.io/leases": {"get", "list", "watch", "create", "update"},
    "policy/poddisruptionbudgets": {"get", "create", "patch", "delete"},
    "/events": {"create"},
    "events.k8s.io/events": {"create"},
    "eventing.knative.dev/brokers": {"get", "list", "watch"},
    "serving.knative.dev/services": {"get", "list", "watch"},
    "messaging.knative.dev/channels": {"get", "list", "watch"},
    "messaging.knative.dev/inmemorychannels": {"get", "list", "watch"},
    "apiextensions.k8s.io/customresourcedefinitions": {"get", "list", "watch"},
    "/namespaces": {"get", "list", "watch"},
    "kopf.dev/clusterkopfpeerings": {"get", "list", "watch", "patch", "create"},
    "kopf.dev/kopfpeerings": {"get", "list", "watch", "patch", "create"},
}
#: what every authenticated user may do (system:basic-user): not the operator's own
BASIC_USER = {
    "authorization.k8s.io/selfsubjectaccessreviews",
    "authorization.k8s.io/selfsubjectrulesreviews",
    "authentication.k8s.io/selfsubjectreviews",
}


def key(doc: dict[str, Any]) -> tuple[str, str]:
    return (doc["kind"], doc["metadata"]["name"])


def granted(rule_list: list[dict[str, Any]]) -> dict[str, set[str]]:
    out: dict[str, set[str]] = {}
    for rule in rule_list:
        for group in rule.get("apiGroups") or [""]:
            for resource in rule.get("resources") or []:
                key = f"{group}/{resource}"
                if key in BASIC_USER:
                    continue
                out.setdefault(key, set()).update(rule.get("verbs") or [])
    return out


def no_wildcards(rule_list: list[dict[str, Any]]) -> None:
    for rule in rule_list:
        for field in ("apiGroups", "resources", "verbs"):
            assert "*" not in (rule.get(field) or []), rule


def forbidden(api: client.ApiClient, method: str, path: str, body: Any = None) -> None:
    """The request must be refused by authorization (403), whatever exists."""
    with pytest.raises(ApiException) as e:
        request(api, method, path, body=body)
    assert e.value.status == 403, (method, path, e.value.status, e.value.body)


def apply_all(api: client.ApiClient, docs: list[dict[str, Any]]) -> None:
    for doc in docs:
        apply(api, doc)
        if doc["kind"] == "CustomResourceDefinition":
            name = doc["metadata"]["name"]

            def established(name: str = name) -> bool:
                got = request(
                    api, "GET", f"/apis/apiextensions.k8s.io/v1/customresourcedefinitions/{name}"
                )
                conds = (got.get("status") or {}).get("conditions") or []
                return any(c["type"] == "Established" and c["status"] == "True" for c in conds)

            wait_for(established, 30, f"CRD {name} established")


def delete_cluster_binding(api: client.ApiClient) -> None:
    try:
        request(
            api,
            "DELETE",
            f"/apis/rbac.authorization.k8s.io/v1/clusterrolebindings/{SA}",
        )
    except ApiException as e:
        if e.status != 404:
            raise


def operator_api(api: client.ApiClient, testenv: Any, tmp_path: Path) -> tuple[Any, str]:
    token = sa_token(api, SYSTEM_NS, SA)
    kubeconfig = token_kubeconfig(testenv.kubeconfig, token, tmp_path / "operator.kubeconfig")
    return client_for(kubeconfig), kubeconfig


def cluster_rules_of(docs: list[dict[str, Any]]) -> list[dict[str, Any]]:
    (role,) = [d for d in docs if d["kind"] == "ClusterRole"]
    rule_list: list[dict[str, Any]] = role["rules"]
    return rule_list


def escalation_attempts(op: Any, ns: str) -> None:
    """What the issue found possible with the old ClusterRole, each now Forbidden."""
    rbac = "/apis/rbac.authorization.k8s.io/v1"
    # a Role granting what the operator does not hold (escalation)
    forbidden(
        op,
        "POST",
        f"{rbac}/namespaces/{ns}/roles",
        {
            "apiVersion": "rbac.authorization.k8s.io/v1",
            "kind": "Role",
            "metadata": {"name": "grab"},
            "rules": [{"apiGroups": [""], "resources": ["secrets"], "verbs": ["delete"]}],
        },
    )
    # binding cluster-admin to anyone (no bind, no escalate)
    forbidden(
        op,
        "POST",
        f"{rbac}/namespaces/{ns}/rolebindings",
        {
            "apiVersion": "rbac.authorization.k8s.io/v1",
            "kind": "RoleBinding",
            "metadata": {"name": "grab"},
            "roleRef": {
                "apiGroup": "rbac.authorization.k8s.io",
                "kind": "ClusterRole",
                "name": "cluster-admin",
            },
            "subjects": [{"kind": "ServiceAccount", "name": "default", "namespace": ns}],
        },
    )
    forbidden(
        op,
        "POST",
        f"{rbac}/clusterroles",
        {
            "apiVersion": "rbac.authorization.k8s.io/v1",
            "kind": "ClusterRole",
            "metadata": {"name": "grab"},
            "rules": [],
        },
    )
    assert not can_i(op, "escalate", "roles", ns, group="rbac.authorization.k8s.io")
    assert not can_i(op, "bind", "clusterroles", group="rbac.authorization.k8s.io")
    for verb in ("create", "update", "patch", "delete", "deletecollection"):
        assert not can_i(op, verb, "secrets", ns), verb
    forbidden(
        op,
        "POST",
        f"/api/v1/namespaces/{ns}/secrets",
        {"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "x"}},
    )
    forbidden(
        op,
        "PATCH",
        f"/api/v1/namespaces/{ns}/secrets/x",
        {"metadata": {"labels": {"a": "b"}}},
    )
    forbidden(op, "DELETE", f"/api/v1/namespaces/{ns}/secrets/anything")
    forbidden(op, "DELETE", f"/api/v1/namespaces/{ns}/configmaps/anything")
    forbidden(op, "DELETE", f"/apis/apps/v1/namespaces/{ns}/deployments/anything")
    forbidden(op, "GET", f"/api/v1/namespaces/{ns}/pods")
    forbidden(op, "POST", f"/api/v1/namespaces/{ns}/pods/x/exec")
    forbidden(op, "POST", f"/api/v1/namespaces/{ns}/serviceaccounts/default/token", {})
    forbidden(op, "GET", "/api/v1/nodes")
    # no "*" on Knative groups any more: only the addressables it resolves
    forbidden(op, "GET", f"/apis/eventing.knative.dev/v1/namespaces/{ns}/triggers")
    forbidden(op, "GET", f"/apis/sources.knative.dev/v1/namespaces/{ns}/pingsources")
    forbidden(op, "DELETE", f"/apis/serving.knative.dev/v1/namespaces/{ns}/services/x")
    forbidden(op, "POST", f"/apis/eventing.knative.dev/v1/namespaces/{ns}/brokers", {})


def test_the_cluster_install_grants_exactly_the_pinned_set(
    k8s_client: client.ApiClient, namespace: str, tmp_path: Path, testenv: Any
) -> None:
    docs = render(REPO / "manifests")
    no_wildcards(cluster_rules_of(docs))
    apply_all(k8s_client, docs)
    op, _ = operator_api(k8s_client, testenv, tmp_path)
    rule_list = rules(op, namespace)
    no_wildcards([r for r in rule_list if set(r.get("resources") or []) & {"*"}])
    assert granted(rule_list) == ALLOWED
    escalation_attempts(op, namespace)


def test_the_namespaced_install_grants_nothing_outside_its_namespaces(
    k8s_client: client.ApiClient, namespace: str, tmp_path: Path, testenv: Any
) -> None:
    api, ns = k8s_client, namespace
    docs = render(REPO / "manifests-namespaced")
    kubectl = Path(testenv.bin_dir) / "kubectl"
    if kubectl.exists() or shutil.which("kubectl"):  # the real kustomize agrees
        exe = str(kubectl) if kubectl.exists() else str(shutil.which("kubectl"))
        out = subprocess.run(
            [exe, "kustomize", str(REPO / "manifests-namespaced")],
            check=True, capture_output=True, text=True,
        ).stdout  # fmt: skip
        real = {key(d): d for d in yaml.safe_load_all(out) if d}
        mine = {key(d): d for d in docs}
        assert set(real) == set(mine)
        # the objects that carry the rights (CRDs aside: kustomize re-serialises numbers
        # and drops U+0085 from their patterns)
        for k in mine:
            if k[0] != "CustomResourceDefinition":
                assert real[k] == mine[k], k
    kinds = {(d["kind"], d["metadata"]["name"]) for d in docs}
    assert ("ClusterRoleBinding", SA) not in kinds
    assert ("RoleBinding", SA) in kinds
    (dep,) = [d for d in docs if d["kind"] == "Deployment"]
    command = dep["spec"]["template"]["spec"]["containers"][0]["command"]
    assert f"--namespace={SYSTEM_NS}" in command and "--all-namespaces" not in command

    delete_cluster_binding(api)  # left by the cluster install's test, if it ran first
    apply_all(api, docs)
    # watch one more namespace, as docs/operator.md says: a copy of the RoleBinding there
    (binding,) = [d for d in docs if d["kind"] == "RoleBinding"]
    apply(api, {**binding, "metadata": {**binding["metadata"], "namespace": ns}})
    op, kubeconfig = operator_api(api, testenv, tmp_path)

    def settled() -> bool:
        return granted(rules(op, ns)) == ALLOWED

    wait_for(settled, 10, "the RoleBinding in effect")  # the authorizer's cache
    for other in ("kube-system", "default"):
        assert granted(rules(op, other)) == {}, other
        forbidden(op, "GET", f"/api/v1/namespaces/{other}/secrets")
        forbidden(op, "GET", f"/api/v1/namespaces/{other}/configmaps")
        forbidden(
            op, "POST", f"/apis/apps/v1/namespaces/{other}/deployments",
            {"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "x"}},
        )  # fmt: skip
        forbidden(
            op, "POST", f"/apis/rbac.authorization.k8s.io/v1/namespaces/{other}/roles",
            {"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "Role",
             "metadata": {"name": "x"}, "rules": []},
        )  # fmt: skip
    forbidden(op, "GET", "/api/v1/secrets")  # across namespaces
    forbidden(op, "GET", "/api/v1/namespaces")
    forbidden(op, "GET", "/apis/apiextensions.k8s.io/v1/customresourcedefinitions")
    forbidden(op, "GET", "/apis/kopf.dev/v1/clusterkopfpeerings")
    escalation_attempts(op, ns)

    # and with just these rights the operator does its job in the watched namespace
    apply(
        api,
        {
            "apiVersion": "v1",
            "kind": "Secret",
            "metadata": {"name": "vc-creds", "annotations": {CONSENT_ANNOTATION: "vc"}},
            "type": "kubernetes.io/basic-auth",
            "stringData": {"username": "u", "password": "p"},
        },
        ns,
    )
    spec = base_spec()
    spec["eventProcessor"]["knative"]["destination"] = {"uri": {"scheme": "http", "host": "d"}}
    create_rc(
        api,
        ns,
        {"apiVersion": "event-router.vmware.com/v1alpha1", "kind": "RouterConfig",
         "metadata": {"name": "vc"}, "spec": spec},
    )  # fmt: skip
    proc = OperatorProcess(
        ["--runtime", "deployment", "--namespace", ns, "--resync-seconds", "2"],
        tmp_path / "operator.log",
        kubeconfig=kubeconfig,
    ).start()
    try:
        wait_for(
            lambda: condition(get_rc(api, ns, "vc"), "Deployed").get("status") == "True",
            60,
            "Deployed with the namespaced install's RBAC",
        )
        peering = request(
            api, "GET", f"/apis/kopf.dev/v1/namespaces/{ns}/kopfpeerings/event-router"
        )
        assert peering["metadata"]["name"] == "event-router"
        asyncio.run(asyncio.sleep(3))  # a resync pass or two
        # a 403 as a status, not the milliseconds of a timestamp ("19:03:48,403 INFO ...")
        status_403 = re.compile(r"(?<![\d,.:])403(?!\d)")
        bad = [
            line for line in proc.log(40000).splitlines()
            if (status_403.search(line) or "Forbidden" in line)
            and "Not enough permissions" not in line
        ]  # fmt: skip
        assert not bad, bad
    finally:
        proc.stop()
        sys.stderr.write(proc.log(6000))
        # leave the cluster install as the other tests expect it
        apply_all(api, render(REPO / "manifests"))
