"""manifests/ (``kubectl apply -k manifests/``) at the real API server, and the operator
running with exactly the ServiceAccount and ClusterRole those manifests grant (a token
from the TokenRequest API), with peering (not --standalone)."""

from __future__ import annotations

import asyncio
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml
from kubernetes import client

from event_router.operator import resources
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
from tests.unit.test_operator_crd import base_spec

pytestmark = [pytest.mark.integration, pytest.mark.timeout(150)]

REPO = Path(__file__).resolve().parents[2]
SYSTEM_NS = "event-router-system"


@pytest.fixture(autouse=True, scope="module")
def _router_pods_stay_pending(pods_stay_pending: None) -> None:
    """The test node never runs these tests' router pods (see the fixture)."""


def manifest_docs() -> list[dict[str, Any]]:
    kustomization = yaml.safe_load((REPO / "manifests" / "kustomization.yaml").read_text())
    docs: list[dict[str, Any]] = []
    for name in kustomization["resources"]:
        docs.extend(d for d in yaml.safe_load_all((REPO / "manifests" / name).read_text()) if d)
    return docs


def test_kustomization_lists_every_manifest() -> None:
    kustomization = yaml.safe_load((REPO / "manifests" / "kustomization.yaml").read_text())
    on_disk = {p.name for p in (REPO / "manifests").glob("*.yaml")} - {"kustomization.yaml"}
    assert set(kustomization["resources"]) == on_disk


def sa_kubeconfig(api: client.ApiClient, admin_kubeconfig: str, path: Path) -> str:
    token = request(
        api,
        "POST",
        f"/api/v1/namespaces/{SYSTEM_NS}/serviceaccounts/event-router-operator/token",
        body={
            "apiVersion": "authentication.k8s.io/v1",
            "kind": "TokenRequest",
            "spec": {"expirationSeconds": 3600},
        },
    )["status"]["token"]
    admin = yaml.safe_load(Path(admin_kubeconfig).read_text())
    cluster = admin["clusters"][0]
    cfg = {
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [cluster],
        "users": [{"name": "operator", "user": {"token": token}}],
        "contexts": [
            {"name": "operator", "context": {"cluster": cluster["name"], "user": "operator"}}
        ],
        "current-context": "operator",
    }
    path.write_text(yaml.safe_dump(cfg))
    path.chmod(0o600)
    return str(path)


async def test_manifests_apply_and_the_operator_works_with_their_rbac(
    k8s_client: client.ApiClient, namespace: str, tmp_path: Path, testenv: Any
) -> None:
    api = k8s_client
    for doc in manifest_docs():
        if doc["kind"] == "Deployment":
            # this test runs the operator itself, with the manifests' token; on the test node the
            # Deployment would start a second operator, acting on this test's RouterConfigs
            doc = {**doc, "spec": {**doc["spec"], "replicas": 0}}
        await asyncio.to_thread(apply, api, doc)
        if doc["kind"] == "CustomResourceDefinition":
            name = doc["metadata"]["name"]

            def established(name: str = name) -> bool:
                got = request(
                    api, "GET", f"/apis/apiextensions.k8s.io/v1/customresourcedefinitions/{name}"
                )
                return any(
                    c["type"] == "Established" and c["status"] == "True"
                    for c in (got.get("status") or {}).get("conditions") or []
                )

            await asyncio.to_thread(wait_for, established, 30, f"CRD {name}")
    await asyncio.sleep(1)
    dep = request(
        api, "GET", f"/apis/apps/v1/namespaces/{SYSTEM_NS}/deployments/event-router-operator"
    )
    assert dep["spec"]["template"]["spec"]["serviceAccountName"] == "event-router-operator"

    kubeconfig = sa_kubeconfig(api, testenv.kubeconfig, tmp_path / "operator.kubeconfig")
    ns = namespace
    apply(
        api,
        {
            "apiVersion": "v1",
            "kind": "Secret",
            "metadata": {"name": "vc-creds", "annotations": {CONSENT_ANNOTATION: "*"}},
            "type": "kubernetes.io/basic-auth",
            "stringData": {"username": "u", "password": "p"},
        },
        ns,
    )
    # a root CA by reference: the operator reads (and watches) ConfigMaps with these rights
    apply(
        api,
        {
            "apiVersion": "v1",
            "kind": "ConfigMap",
            "metadata": {"name": "corp-ca"},
            "data": {"ca.crt": "-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----\n"},
        },
        ns,
    )
    spec = base_spec()
    spec["eventProcessor"]["knative"]["destination"] = {
        "uri": {"scheme": "http", "host": "display"}
    }
    spec["certificates"] = {"rootCAs": [{"configMapRef": {"name": "corp-ca", "key": "ca.crt"}}]}
    create_rc(
        api,
        ns,
        {
            "apiVersion": "event-router.vmware.com/v1alpha1",
            "kind": "RouterConfig",
            "metadata": {"name": "vc"},
            "spec": spec,
        },
    )
    op = OperatorProcess(
        ["--runtime", "deployment", "--namespace", ns, "--resync-seconds", "2"],
        tmp_path / "operator.log",
        kubeconfig=kubeconfig,
    ).start()
    try:
        await asyncio.to_thread(
            wait_for,
            lambda: condition(get_rc(api, ns, "vc"), "Deployed").get("status") == "True",
            40,
            "Deployed with the manifests' RBAC",
        )
        name = resources.router_name("vc")
        dep = request(api, "GET", f"/apis/apps/v1/namespaces/{ns}/deployments/{name}")
        assert any(v["name"] == "root-cas" for v in dep["spec"]["template"]["spec"]["volumes"])
        # peering: the operator created its peering object in the watched namespace
        peering = request(
            api, "GET", f"/apis/kopf.dev/v1/namespaces/{ns}/kopfpeerings/event-router"
        )
        assert peering["metadata"]["name"] == "event-router"
        events = request(api, "GET", f"/api/v1/namespaces/{ns}/events")["items"]
        assert any(e["involvedObject"]["name"] == "vc" for e in events)
        assert "403" not in op.log(20000) and "Forbidden" not in op.log(20000), op.log()
    finally:
        op.stop()
        sys.stderr.write(op.log(6000))
