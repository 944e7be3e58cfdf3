"""The confused deputy, on the real API server with a real user: a user allowed to create
RouterConfigs but not to read Secrets must not make the router send a Secret's contents to
her server. A Secret is usable only with its consent annotation
(``event-router.vmware.com/routerconfigs``)."""

from __future__ import annotations

import asyncio
import base64
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from kubernetes import client
from kubernetes.client.exceptions import ApiException

from event_router.operator.devtools import (
    OperatorProcess,
    apply,
    condition,
    create_rc,
    get_rc,
    install_crd,
    wait_for,
    webhook_knative_spec,
)
from event_router.operator.kube import request
from event_router.operator.secrets import CONSENT_ANNOTATION
from tests.support.net import free_port
from tests.support.sink import CloudEventSink
from tests.support.tokens import can_i, client_for, sa_token, token_kubeconfig

pytestmark = [pytest.mark.integration, pytest.mark.timeout(150)]

DB_USER, DB_PASSWORD = "dbadmin", "db-password-Zq81"
RC_GROUP = "event-router.vmware.com"


@pytest.fixture
def mallory(k8s_client: client.ApiClient, namespace: str, tmp_path: Path, testenv: Any) -> Any:
    """A ServiceAccount that may manage RouterConfigs in ``namespace`` and nothing else, as
    an API client authenticated with its own token."""
    install_crd(k8s_client)
    ns = namespace
    apply(
        k8s_client,
        {"apiVersion": "v1", "kind": "ServiceAccount", "metadata": {"name": "mallory"}},
        ns,
    )
    apply(
        k8s_client,
        {
            "apiVersion": "rbac.authorization.k8s.io/v1",
            "kind": "Role",
            "metadata": {"name": "routerconfig-editor"},
            "rules": [
                {
                    "apiGroups": [RC_GROUP],
                    "resources": ["routerconfigs"],
                    "verbs": ["create", "get", "list", "watch", "update", "patch", "delete"],
                }
            ],
        },
        ns,
    )
    apply(
        k8s_client,
        {
            "apiVersion": "rbac.authorization.k8s.io/v1",
            "kind": "RoleBinding",
            "metadata": {"name": "mallory-routerconfig-editor"},
            "roleRef": {
                "apiGroup": "rbac.authorization.k8s.io",
                "kind": "Role",
                "name": "routerconfig-editor",
            },
            "subjects": [{"kind": "ServiceAccount", "name": "mallory", "namespace": ns}],
        },
        ns,
    )
    token = sa_token(k8s_client, ns, "mallory")
    kubeconfig = token_kubeconfig(testenv.kubeconfig, token, tmp_path / "mallory.kubeconfig")
    return client_for(kubeconfig)


@pytest.fixture
def operator(tmp_path: Path, namespace: str, testenv: Any) -> Iterator[OperatorProcess]:
    op = OperatorProcess(
        [
            "--runtime",
            "inprocess",
            "--namespace",
            namespace,
            "--standalone",
            "--resync-seconds",
            "2",
        ],
        tmp_path / "operator.log",
        kubeconfig=testenv.kubeconfig,
    ).start()
    yield op
    op.stop()
    log = op.log(6000)
    sys.stderr.write(f"--- {op.log_path} ---\n{log}\n")
    assert DB_PASSWORD not in op.log_path.read_text()


def db_secret(annotations: dict[str, str] | None = None) -> dict[str, Any]:
    meta: dict[str, Any] = {"name": "db-creds"}
    if annotations is not None:
        meta["annotations"] = annotations
    return {
        "apiVersion": "v1",
        "kind": "Secret",
        "metadata": meta,
        "type": "kubernetes.io/basic-auth",
        "stringData": {"username": DB_USER, "password": DB_PASSWORD},
    }


def leaked(sink: CloudEventSink) -> bool:
    secret = base64.b64encode(f"{DB_USER}:{DB_PASSWORD}".encode()).decode()
    return any(secret in v or DB_PASSWORD in v for h in sink.request_headers for v in h.values())


async def post_event(port: int) -> int | None:
    """POST one CloudEvent to the webhook; its status, or None when nothing listens."""
    headers = {
        "ce-specversion": "1.0",
        "ce-id": "e-1",
        "ce-source": "/mallory",
        "ce-type": "probe",
        "content-type": "application/json",
    }
    try:
        async with httpx.AsyncClient(timeout=5) as http:
            r = await http.post(f"http://127.0.0.1:{port}/webhook", headers=headers, json={})
            return r.status_code
    except httpx.TransportError:
        return None


async def test_a_routerconfig_author_cannot_exfiltrate_a_secret_she_cannot_read(
    k8s_client: client.ApiClient, namespace: str, mallory: Any, operator: OperatorProcess
) -> None:
    api, ns = k8s_client, namespace
    apply(api, db_secret(), ns)  # the database's Secret: no consent annotation

    # mallory is who the issue says: she may create RouterConfigs, not read Secrets
    assert can_i(mallory, "create", "routerconfigs", ns, group=RC_GROUP)
    assert not can_i(mallory, "get", "secrets", ns)
    assert not can_i(mallory, "list", "secrets", ns)
    with pytest.raises(ApiException) as e:
        request(mallory, "GET", f"/api/v1/namespaces/{ns}/secrets/db-creds")
    assert e.value.status == 403

    async with CloudEventSink() as sink:  # her server
        port = free_port()
        spec = webhook_knative_spec(port, "127.0.0.1", sink.port)
        spec["eventProcessor"]["knative"]["auth"] = {
            "type": "basic_auth",
            "secretRef": {"name": "db-creds"},
        }
        body = {
            "apiVersion": f"{RC_GROUP}/v1alpha1",
            "kind": "RouterConfig",
            "metadata": {"name": "innocent"},
            "spec": spec,
        }
        await asyncio.to_thread(create_rc, mallory, ns, body)  # as mallory

        def refused() -> dict[str, Any] | None:
            obj = get_rc(api, ns, "innocent")
            c = condition(obj, "CredentialsReady")
            return c if c.get("reason") == "CredentialsNotPermitted" else None

        cond = await asyncio.to_thread(wait_for, refused, 40, "CredentialsNotPermitted")
        assert cond["status"] == "False"
        msg = cond["message"]
        assert f"Secret {ns}/db-creds" in msg
        assert "eventProcessor.knative.auth.secretRef.name" in msg
        assert f"kubectl annotate secret db-creds -n {ns} {CONSENT_ANNOTATION}=innocent" in msg
        ready = condition(get_rc(api, ns, "innocent"), "Ready")
        assert (ready["status"], ready["reason"]) == ("False", "CredentialsNotPermitted")
        # no router runs: nothing listens, nothing reaches her server
        assert await post_event(port) is None
        await asyncio.sleep(3)  # a resync or two
        assert sink.requests == 0 and not leaked(sink)

        # consent for another RouterConfig is no consent for hers
        apply(api, db_secret({CONSENT_ANNOTATION: "orders-to-broker"}), ns)
        await asyncio.sleep(4)
        cond = condition(get_rc(api, ns, "innocent"), "CredentialsReady")
        assert cond["reason"] == "CredentialsNotPermitted"
        assert "does not list innocent" in cond["message"]
        assert await post_event(port) is None
        assert sink.requests == 0

        # the Secret's owner consents: now (and only now) the credentials are used
        apply(api, db_secret({CONSENT_ANNOTATION: "orders-to-broker, innocent"}), ns)

        def running() -> dict[str, Any] | None:
            c = condition(get_rc(api, ns, "innocent"), "Ready")
            return c if c.get("status") == "True" else None

        await asyncio.to_thread(wait_for, running, 40, "Ready after consent")
        assert await post_event(port) in (200, 202, 204)
        await sink.wait_for(1, timeout=10)
        assert leaked(sink)  # by consent: what the annotation allows

    # nothing of the Secret in the status or Events
    obj = get_rc(api, ns, "innocent")
    events = request(api, "GET", f"/api/v1/namespaces/{ns}/events")
    assert DB_PASSWORD not in repr(obj) + repr(events)
