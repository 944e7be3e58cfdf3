"""The operator against the real test control plane (kube-apiserver + etcd +
kube-controller-manager): CRD validation, reconciliation, status, Secrets, Knative
addressables, garbage collection, the deployment runtime's pod command run locally."""

from __future__ import annotations

import asyncio
import base64
import contextlib
import os
import subprocess
import sys
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml
from kubernetes import client
from kubernetes.client.exceptions import ApiException

from event_router.operator import resources
from event_router.operator.devtools import (
    BROKER_CRD,
    OperatorProcess,
    apply,
    condition,
    create_rc,
    get_rc,
    install_crd,
    install_crd_object,
    rc_path,
    table,
    wait_for,
)
from event_router.operator.kube import request
from event_router.operator.secrets import CONSENT_ANNOTATION
from tests.support.net import free_port
from tests.support.sink import CloudEventSink
from tests.support.tls import make_tls
from tests.support.vcsim import VCSim, post_general_events
from tests.unit.test_operator_crd import INVALID, base_spec, invalid_spec

pytestmark = [pytest.mark.integration, pytest.mark.timeout(150)]

REPO = Path(__file__).resolve().parents[2]
RC_API = "event-router.vmware.com/v1alpha1"


@pytest.fixture(autouse=True, scope="module")
def _router_pods_stay_pending(pods_stay_pending: None) -> None:
    """The test node never runs these tests' router pods (see the fixture)."""


@pytest.fixture(scope="module")
def api(k8s_client: client.ApiClient) -> client.ApiClient:
    install_crd(k8s_client)
    return k8s_client


def rc(name: str, spec: dict[str, Any]) -> dict[str, Any]:
    return {"apiVersion": RC_API, "kind": "RouterConfig", "metadata": {"name": name}, "spec": spec}


def basic_secret(
    name: str,
    username: str = "admin",
    password: str = "s3cr3t-value",
    *,
    consent: str | None = "*",
) -> dict[str, Any]:
    """A basic-auth Secret; ``consent``: the value of its consent annotation (None: none)."""
    meta: dict[str, Any] = {"name": name}
    if consent is not None:
        meta["annotations"] = {CONSENT_ANNOTATION: consent}
    return {
        "apiVersion": "v1",
        "kind": "Secret",
        "metadata": meta,
        "type": "kubernetes.io/basic-auth",
        "stringData": {"username": username, "password": password},
    }


def uri_spec(url_host: str = "display.example.com") -> dict[str, Any]:
    spec = base_spec()
    spec["eventProcessor"]["knative"]["destination"] = {"uri": {"scheme": "http", "host": url_host}}
    return spec


@pytest.fixture
def operator(tmp_path: Path, namespace: str, testenv: Any) -> Iterator[Any]:
    """Start an operator for ``namespace`` with the given runtime (factory)."""
    started: list[OperatorProcess] = []

    def start(
        runtime: str = "deployment", *extra: str, env: dict[str, str] | None = None
    ) -> OperatorProcess:
        op = OperatorProcess(
            [
                "--runtime",
                runtime,
                "--namespace",
                namespace,
                "--standalone",
                "--resync-seconds",
                "2",
                "--router-image",
                "example.org/event-router:test",
                *extra,
            ],
            tmp_path / f"operator-{len(started)}.log",
            kubeconfig=testenv.kubeconfig,
            env=env,
        ).start()
        started.append(op)
        return op

    yield start
    for op in started:
        op.stop()
        sys.stderr.write(f"--- {op.log_path} ---\n{op.log(6000)}\n")


def ready(
    api: client.ApiClient, ns: str, name: str, *, status: str = "True", reason: str | None = None
) -> Any:
    def probe() -> Any:
        obj = get_rc(api, ns, name)
        c = condition(obj, "Ready")
        if c.get("status") == status and (reason is None or c.get("reason") == reason):
            return obj
        return None

    return probe


def dep_name(rc_name: str) -> str:
    return resources.router_name(rc_name)


def get_obj(api: client.ApiClient, path: str) -> Any:
    try:
        return request(api, "GET", path)
    except ApiException as e:
        if e.status == 404:
            return None
        raise


def mark_available(api: client.ApiClient, ns: str, name: str, timeout: float = 30) -> None:
    """Play the kubelet (the test control plane has none): report the Deployment's current
    pod Running and Ready; the real ReplicaSet and Deployment controllers do the rest."""
    dep = request(api, "GET", f"/apis/apps/v1/namespaces/{ns}/deployments/{name}")
    selector = ",".join(f"{k}={v}" for k, v in dep["spec"]["selector"]["matchLabels"].items())
    want = dep["spec"]["template"]["metadata"]["annotations"][resources.HASH_ANNOTATION]

    def current_pods() -> list[dict[str, Any]]:
        pods = request(
            api, "GET", f"/api/v1/namespaces/{ns}/pods", query=[("labelSelector", selector)]
        )
        return [
            p
            for p in pods["items"]
            if not p["metadata"].get("deletionTimestamp")
            and p["metadata"].get("annotations", {}).get(resources.HASH_ANNOTATION) == want
        ]

    pods = wait_for(current_pods, timeout, f"a pod of Deployment {ns}/{name}")
    now = "2026-01-01T00:00:00Z"
    for pod in pods:
        status = {
            "phase": "Running",
            "conditions": [
                {"type": t, "status": "True", "lastTransitionTime": now}
                for t in ("PodScheduled", "Initialized", "ContainersReady", "Ready")
            ],
        }
        request(
            api,
            "PATCH",
            f"/api/v1/namespaces/{ns}/pods/{pod['metadata']['name']}/status",
            body={"status": status},
            content_type="application/merge-patch+json",
        )


# --- the CRD at the API server ---------------------------------------------------------------


def test_samples_apply_cleanly(api: client.ApiClient, namespace: str) -> None:
    applied = 0
    for path in sorted((REPO / "samples").glob("*.yaml")):
        for doc in yaml.safe_load_all(path.read_text()):
            if doc:
                apply(api, doc, namespace)
                applied += doc["kind"] == "RouterConfig"
    assert applied == 5
    got = request(api, "GET", rc_path(namespace, "vcenter-to-broker"))
    # the API server applied the schema's defaults
    vc = got["spec"]["eventProvider"]["vcenter"]
    assert vc["pageSize"] == 100 and vc["typeStyle"] == "router"
    assert got["spec"]["checkpoint"] == {"periodSeconds": 5, "maxAgeSeconds": 3600}


@pytest.mark.parametrize("case", INVALID, ids=[c[0] for c in INVALID])
def test_api_server_rejects_invalid_routerconfigs(
    api: client.ApiClient, namespace: str, case: Any
) -> None:
    _, mutations, field = case
    with pytest.raises(ApiException) as e:
        create_rc(api, namespace, rc("bad", invalid_spec(mutations)))
    # 422 Invalid (schema, CEL); 400 for unknown fields under strict field validation
    assert e.value.status in (400, 422), e.value.body
    assert field in (e.value.body or ""), e.value.body


def test_api_server_requires_a_spec(api: client.ApiClient, namespace: str) -> None:
    with pytest.raises(ApiException) as e:
        create_rc(
            api,
            namespace,
            {"apiVersion": RC_API, "kind": "RouterConfig", "metadata": {"name": "x"}},
        )
    assert e.value.status == 422 and "spec: Required value" in (e.value.body or "")


def test_short_name_and_categories_are_served(api: client.ApiClient) -> None:
    res = request(api, "GET", "/apis/event-router.vmware.com/v1alpha1")
    (r,) = [r for r in res["resources"] if r["name"] == "routerconfigs"]
    assert r["shortNames"] == ["rtc"] and "all" in r["categories"]


# --- reconciliation, deployment runtime --------------------------------------------------------


async def test_deployment_runtime_ready_rolls_on_change_and_garbage_collects(
    api: client.ApiClient, namespace: str, operator: Any
) -> None:
    ns = namespace
    apply(api, basic_secret("vc-creds"), ns)
    create_rc(api, ns, rc("vc", uri_spec()))
    operator("deployment")
    name = dep_name("vc")
    deployed = await asyncio.to_thread(
        wait_for,
        lambda: condition(get_rc(api, ns, "vc"), "Deployed").get("status") == "True",
        30,
        "Deployed",
    )
    assert deployed
    obj = get_rc(api, ns, "vc")
    assert condition(obj, "Ready")["reason"] == "RouterStarting"
    assert obj["status"]["sinkUri"] == "http://display.example.com"
    assert obj["status"]["observedGeneration"] == 1
    # the children exist, owned, and the config ConfigMap holds the rendered config
    dep = request(api, "GET", f"/apis/apps/v1/namespaces/{ns}/deployments/{name}")
    hash1 = dep["spec"]["template"]["metadata"]["annotations"][resources.HASH_ANNOTATION]
    assert hash1 == obj["status"]["configHash"]
    for path in (
        f"/api/v1/namespaces/{ns}/serviceaccounts/{name}",
        f"/apis/rbac.authorization.k8s.io/v1/namespaces/{ns}/roles/{name}",
        f"/apis/rbac.authorization.k8s.io/v1/namespaces/{ns}/rolebindings/{name}",
    ):
        assert get_obj(api, path)["metadata"]["ownerReferences"][0]["name"] == "vc"
    config_cm = request(
        api, "GET", f"/api/v1/namespaces/{ns}/configmaps/{resources.config_configmap_name('vc')}"
    )
    rendered = yaml.safe_load(config_cm["data"]["config.yaml"])
    # the config names the Secret; the pod mounts it (only its keys), the operator never
    # copies a credential anywhere
    assert rendered["eventProvider"]["vcenter"]["auth"] == {
        "type": "basic_auth",
        "secretRef": {"name": "vc-creds"},
    }
    assert "s3cr3t-value" not in yaml.safe_dump(config_cm)
    (cred_vol,) = [
        v for v in dep["spec"]["template"]["spec"]["volumes"] if v["name"] == "credentials"
    ]
    assert cred_vol["projected"]["sources"] == [
        {"secret": {"name": "vc-creds", "items": [
            {"key": "password", "path": "vc-creds/password"},
            {"key": "username", "path": "vc-creds/username"}]}}
    ]  # fmt: skip
    cm = request(
        api,
        "GET",
        f"/api/v1/namespaces/{ns}/configmaps/{resources.checkpoint_configmap_name('vc')}",
    )
    assert "ownerReferences" not in cm["metadata"]
    # no secret in the status, the Events or the Deployment
    events = request(api, "GET", f"/api/v1/namespaces/{ns}/events")
    blob = yaml.safe_dump([obj, events, dep])
    assert "s3cr3t-value" not in blob
    assert any(e["reason"] == "RouterStarting" for e in events["items"])

    # a kubelet would now run the pod: Ready=True, visible in `kubectl get routerconfigs`
    await asyncio.to_thread(mark_available, api, ns, name)
    await asyncio.to_thread(wait_for, ready(api, ns, "vc"), 20, "Ready=True")
    (row,) = table(api, ns)
    assert row["Name"] == "vc" and row["Provider"] == "vcenter" and row["Processor"] == "knative"
    assert (
        row["Source"] == "https://vc.example.com/sdk"
        and row["Sink"] == "http://display.example.com"
    )
    assert row["Ready"] == "True" and row["Reason"] == "RouterRunning"
    status_rv = get_rc(api, ns, "vc")["metadata"]["resourceVersion"]
    await asyncio.sleep(5)  # two resync passes: nothing changed, nothing written
    assert get_rc(api, ns, "vc")["metadata"]["resourceVersion"] == status_rv

    # children deleted by hand come back at the next resync (every 2 s here)
    by_hand = (
        f"/api/v1/namespaces/{ns}/configmaps/{resources.config_configmap_name('vc')}",
        f"/apis/rbac.authorization.k8s.io/v1/namespaces/{ns}/roles/{name}",
    )
    for path in by_hand:
        request(api, "DELETE", path)
    await asyncio.to_thread(
        wait_for,
        lambda: all(get_obj(api, p) is not None for p in by_hand),
        20,
        "the deleted children re-applied",
    )
    assert get_rc(api, ns, "vc")["metadata"]["resourceVersion"] == status_rv

    # a spec change: new generation observed, new config hash rolls the Deployment
    request(
        api,
        "PATCH",
        rc_path(ns, "vc"),
        body={"spec": {"eventProvider": {"vcenter": {"pageSize": 50}}}},
        content_type="application/merge-patch+json",
    )

    def rolled() -> Any:
        obj = get_rc(api, ns, "vc")
        d = request(api, "GET", f"/apis/apps/v1/namespaces/{ns}/deployments/{name}")
        h = d["spec"]["template"]["metadata"]["annotations"][resources.HASH_ANNOTATION]
        return (
            obj["status"]["observedGeneration"] == 2
            and h != hash1
            and h == obj["status"]["configHash"]
        )

    await asyncio.to_thread(wait_for, rolled, 20, "observedGeneration 2 and a new config hash")
    assert condition(get_rc(api, ns, "vc"), "Ready")["reason"] == "RouterStarting"
    events = request(api, "GET", f"/api/v1/namespaces/{ns}/events")["items"]
    changed = [e for e in events if e["reason"] == "ConfigChanged"]
    assert changed and f"rolling Deployment {ns}/{name}" in changed[0]["message"]

    # delete: the garbage collector removes every owned child; the checkpoints stay
    request(api, "DELETE", rc_path(ns, "vc"))

    def collected() -> bool:
        return all(
            get_obj(api, p) is None
            for p in (
                f"/apis/apps/v1/namespaces/{ns}/deployments/{name}",
                f"/api/v1/namespaces/{ns}/configmaps/{resources.config_configmap_name('vc')}",
                f"/api/v1/namespaces/{ns}/serviceaccounts/{name}",
                f"/apis/rbac.authorization.k8s.io/v1/namespaces/{ns}/roles/{name}",
            )
        )

    await asyncio.to_thread(wait_for, collected, 60, "garbage collection of the children", 0.5)
    assert get_obj(
        api, f"/api/v1/namespaces/{ns}/configmaps/{resources.checkpoint_configmap_name('vc')}"
    )


async def test_missing_secret_then_created_becomes_ready(
    api: client.ApiClient, namespace: str, operator: Any
) -> None:
    ns = namespace
    create_rc(api, ns, rc("vc", uri_spec()))
    operator("deployment")
    obj = await asyncio.to_thread(
        wait_for,
        ready(api, ns, "vc", status="False", reason="CredentialsMissing"),
        30,
        "CredentialsMissing",
    )
    msg = condition(obj, "Ready")["message"]
    assert f"Secret {ns}/vc-creds" in msg and "eventProvider.vcenter.auth.secretRef.name" in msg
    assert condition(obj, "CredentialsReady")["status"] == "False"
    assert get_obj(api, f"/apis/apps/v1/namespaces/{ns}/deployments/{dep_name('vc')}") is None
    rv = obj["metadata"]["resourceVersion"]
    generation = obj["metadata"]["generation"]

    # a Secret without the password key: still not ready, the message says what is missing
    apply(api, {**basic_secret("vc-creds"), "stringData": {"username": "admin"}}, ns)
    obj = await asyncio.to_thread(
        wait_for,
        ready(api, ns, "vc", status="False", reason="CredentialsInvalid"),
        20,
        "CredentialsInvalid",
    )
    assert "lacks key(s) password" in condition(obj, "Ready")["message"]

    # the complete Secret: deployed and (once the pod runs) Ready; the spec was never touched
    apply(api, basic_secret("vc-creds"), ns)
    await asyncio.to_thread(
        wait_for,
        lambda: condition(get_rc(api, ns, "vc"), "CredentialsReady").get("status") == "True",
        20,
        "CredentialsReady",
    )
    await asyncio.to_thread(mark_available, api, ns, dep_name("vc"))
    obj = await asyncio.to_thread(wait_for, ready(api, ns, "vc"), 20, "Ready")
    assert obj["metadata"]["generation"] == generation and obj["metadata"]["resourceVersion"] != rv


async def test_knative_broker_and_service_refs_resolve_and_follow_changes(
    api: client.ApiClient, namespace: str, operator: Any
) -> None:
    ns = namespace
    install_crd_object(api, BROKER_CRD)
    apply(api, basic_secret("vc-creds"), ns)
    broker = {
        "apiVersion": "eventing.knative.dev/v1",
        "kind": "Broker",
        "metadata": {"name": "default"},
    }
    apply(api, broker, ns)
    create_rc(api, ns, rc("vc", base_spec()))
    operator("deployment")
    obj = await asyncio.to_thread(
        wait_for, ready(api, ns, "vc", status="False", reason="SinkNotReady"), 30, "SinkNotReady"
    )
    assert f"Broker {ns}/default" in condition(obj, "Ready")["message"]

    broker_status = f"/apis/eventing.knative.dev/v1/namespaces/{ns}/brokers/default/status"
    url1 = f"http://broker-ingress.knative-eventing.svc.cluster.local/{ns}/default"
    request(
        api,
        "PATCH",
        broker_status,
        body={"status": {"address": {"url": url1}}},
        content_type="application/merge-patch+json",
    )
    obj = await asyncio.to_thread(
        wait_for,
        lambda: (o := get_rc(api, ns, "vc")) and o["status"].get("sinkUri") == url1 and o,
        20,
        "sinkUri",
    )
    assert condition(obj, "SinkResolved")["status"] == "True"
    hash1 = obj["status"]["configHash"]

    url2 = f"http://other-ingress.example.svc.cluster.local/{ns}/default"
    request(
        api,
        "PATCH",
        broker_status,
        body={"status": {"address": {"url": url2}}},
        content_type="application/merge-patch+json",
    )
    obj = await asyncio.to_thread(
        wait_for,
        lambda: (o := get_rc(api, ns, "vc")) and o["status"].get("sinkUri") == url2 and o,
        20,
        "re-resolved sinkUri",
    )
    assert obj["status"]["configHash"] != hash1
    config_cm = request(
        api,
        "GET",
        f"/api/v1/namespaces/{ns}/configmaps/{resources.config_configmap_name('vc')}",
    )
    rendered = yaml.safe_load(config_cm["data"]["config.yaml"])
    assert rendered["eventProcessor"]["knative"]["destination"] == {"uri": url2}

    # a plain v1 Service: its cluster DNS name
    apply(
        api,
        {
            "apiVersion": "v1",
            "kind": "Service",
            "metadata": {"name": "display"},
            "spec": {"ports": [{"port": 8080}]},
        },
        ns,
    )
    spec = base_spec()
    spec["eventProcessor"]["knative"]["destination"] = {
        "ref": {"apiVersion": "v1", "kind": "Service", "name": "display"}
    }
    create_rc(api, ns, rc("svc", spec))
    want = f"http://display.{ns}.svc.cluster.local:8080"
    await asyncio.to_thread(
        wait_for,
        lambda: (get_rc(api, ns, "svc") or {}).get("status", {}).get("sinkUri") == want,
        20,
        "Service sinkUri",
    )
    # a ref to a kind the cluster does not serve: an actionable reason
    spec["eventProcessor"]["knative"]["destination"]["ref"] = {
        "apiVersion": "serving.knative.dev/v1",
        "kind": "Service",
        "name": "fn",
    }
    create_rc(api, ns, rc("ksvc", spec))
    obj = await asyncio.to_thread(
        wait_for, ready(api, ns, "ksvc", status="False", reason="SinkNotFound"), 20, "SinkNotFound"
    )
    assert "serving.knative.dev/v1" in condition(obj, "Ready")["message"]


# --- the router itself: in-process and the deployment's pod command -----------------------------


async def _wait_messages(sink: CloudEventSink, want: set[str], timeout: float) -> None:  # noqa: ASYNC109
    deadline = asyncio.get_running_loop().time() + timeout
    while True:
        got = {(e.data or {}).get("Message") for e in sink.events}
        if want <= got:
            return
        if asyncio.get_running_loop().time() > deadline:
            raise AssertionError(f"missing at the sink: {sorted(want - got)[:10]} ...")
        await asyncio.sleep(0.1)


def vcsim_spec(sim: VCSim, sink_url: str) -> dict[str, Any]:
    host_port = sink_url.split("://", 1)[1].rstrip("/")
    host, _, port = host_port.partition(":")
    return {
        "eventProvider": {
            "type": "vcenter",
            "name": "vcsim",
            "vcenter": {
                "address": sim.url,
                "insecureSSL": True,
                "auth": {"type": "basic_auth", "secretRef": {"name": "vc-creds"}},
            },
        },
        "eventProcessor": {
            "type": "knative",
            "name": "sink",
            "knative": {
                "encoding": "structured",
                "destination": {"uri": {"scheme": "http", "host": host, "port": int(port)}},
            },
        },
        "checkpoint": {"periodSeconds": 0.5},
    }


async def test_inprocess_end_to_end_with_restart_loses_nothing(
    api: client.ApiClient, namespace: str, operator: Any
) -> None:
    ns = namespace
    with VCSim() as sim:
        async with CloudEventSink() as sink:
            apply(api, basic_secret("vc-creds", sim.username, sim.password), ns)
            create_rc(api, ns, rc("vcsim", vcsim_spec(sim, sink.url)))
            op = operator("inprocess")
            obj = await asyncio.to_thread(
                wait_for, ready(api, ns, "vcsim"), 40, "in-process router Ready"
            )
            assert obj["status"]["runtime"] == "inprocess"
            si = await asyncio.to_thread(sim.connect)
            await asyncio.to_thread(post_general_events, si, 20, "before")
            await _wait_messages(sink, {f"before-{i}" for i in range(20)}, 30)
            cm_path = (
                f"/api/v1/namespaces/{ns}/configmaps/{resources.checkpoint_configmap_name('vcsim')}"
            )
            await asyncio.to_thread(
                wait_for,
                lambda: (get_obj(api, cm_path) or {}).get("data"),
                20,
                "checkpoint in the ConfigMap",
            )

            # operator down (graceful: final checkpoint); events keep happening
            assert op.stop() == 0, op.log()
            await asyncio.to_thread(post_general_events, si, 20, "during")
            seen_before_restart = len(sink.events)
            op2 = operator("inprocess")
            await _wait_messages(sink, {f"during-{i}" for i in range(20)}, 40)
            await asyncio.to_thread(post_general_events, si, 5, "after")
            await _wait_messages(sink, {f"after-{i}" for i in range(5)}, 30)
            msgs = [(e.data or {}).get("Message") for e in sink.events]
            # resumed from the checkpoint: nothing lost, and the old events were not replayed
            assert msgs.count("before-0") == 1, "resumed from the checkpoint, not from the start"
            assert len(sink.events) >= seen_before_restart + 25

            # deleting the RouterConfig stops its router: later events go nowhere
            request(api, "DELETE", rc_path(ns, "vcsim"))
            await asyncio.to_thread(
                wait_for, lambda: get_rc(api, ns, "vcsim") is None, 20, "deleted"
            )
            # a condition, not a sleep: the operator says it stopped the router
            await asyncio.to_thread(
                wait_for,
                lambda: "router of the deleted RouterConfig stopped" in op2.log(20000),
                20,
                "the operator stopping the deleted RouterConfig's router",
            )
            count = len(sink.events)
            await asyncio.to_thread(post_general_events, si, 3, "gone")
            await asyncio.sleep(3)
            assert len(sink.events) == count


@contextlib.asynccontextmanager
async def rendered_pod(
    api: client.ApiClient, ns: str, rc_name: str, tmp_path: Path, testenv: Any
) -> AsyncIterator[dict[str, Any]]:
    """Run the pod of the Deployment the operator rendered for ``rc_name`` here, as the
    kubelet would (its command, env, mounted config and Secrets): the real router. Yields the
    pod's container once its readiness probe passes."""
    name = dep_name(rc_name)
    dep = await asyncio.to_thread(
        wait_for,
        lambda: get_obj(api, f"/apis/apps/v1/namespaces/{ns}/deployments/{name}"),
        30,
        "the Deployment",
    )
    pod = dep["spec"]["template"]["spec"]
    (container,) = pod["containers"]
    # what the kubelet would mount: the config ConfigMap at /etc/event-router and the listed
    # keys of the referenced Secrets at /etc/event-router-credentials
    volumes = {v["name"]: v for v in pod["volumes"]}
    config_cm = request(
        api, "GET", f"/api/v1/namespaces/{ns}/configmaps/{volumes['config']['configMap']['name']}"
    )
    mount = tmp_path / f"etc-event-router-{rc_name}"
    mount.mkdir()
    for key, value in config_cm["data"].items():
        (mount / key).write_text(value)
    creds = tmp_path / f"etc-event-router-credentials-{rc_name}"
    for source in volumes["credentials"]["projected"]["sources"]:
        secret = request(api, "GET", f"/api/v1/namespaces/{ns}/secrets/{source['secret']['name']}")
        for item in source["secret"]["items"]:
            (creds / item["path"]).parent.mkdir(parents=True, exist_ok=True)
            (creds / item["path"]).write_bytes(base64.b64decode(secret["data"][item["key"]]))
    cmd = [
        str(Path(sys.executable).parent / container["command"][0]),
        *[a.replace(resources.CONFIG_DIR, str(mount)) for a in container["command"][1:]],
    ]
    env = {**os.environ, "KUBECONFIG": testenv.kubeconfig}
    for e in container["env"]:
        # fieldRefs: metadata.namespace, metadata.name (the pod's name)
        path = (e.get("valueFrom") or {}).get("fieldRef", {}).get("fieldPath")
        env[e["name"]] = e.get("value") or (f"{name}-local" if path == "metadata.name" else ns)
    env["EVENT_ROUTER_CREDENTIALS_DIR"] = str(creds)
    log_path = tmp_path / f"router-{rc_name}.log"
    log = log_path.open("wb")
    router = subprocess.Popen(  # noqa: ASYNC220 - a long-running child, not awaited
        cmd, env=env, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL
    )
    try:
        probe = container["readinessProbe"]["httpGet"]
        # a named port resolves to the container's port of that name, as the kubelet does
        port = probe["port"]
        if isinstance(port, str):
            port = next(p["containerPort"] for p in container["ports"] if p["name"] == port)
        url = f"http://127.0.0.1:{port}{probe['path']}"

        def readyz() -> bool:
            try:
                return httpx.get(url, timeout=1).status_code == 200
            except httpx.HTTPError:
                return False

        await asyncio.to_thread(wait_for, readyz, 30, "the router's /readyz")
        yield container
    finally:
        router.terminate()
        router.wait(15)
        log.close()
        sys.stderr.write(log_path.read_text(errors="replace")[-3000:])


async def test_rendered_deployment_runs_locally(
    api: client.ApiClient, namespace: str, operator: Any, tmp_path: Path, testenv: Any
) -> None:
    """The Deployment the operator renders passes API validation (it was created), and its
    pod's command, env and mounted config run the real router (here, on this machine)."""
    ns = namespace
    metrics_port = free_port()
    with VCSim() as sim:
        async with CloudEventSink() as sink:
            apply(api, basic_secret("vc-creds", sim.username, sim.password), ns)
            spec = vcsim_spec(sim, sink.url)
            spec["metricsProvider"] = {
                "name": "m",
                "default": {"bindAddress": f"127.0.0.1:{metrics_port}"},
            }
            create_rc(api, ns, rc("pod", spec))
            operator("deployment")
            async with rendered_pod(api, ns, "pod", tmp_path, testenv):
                si = await asyncio.to_thread(sim.connect)
                await asyncio.to_thread(post_general_events, si, 5, "pod")
                await _wait_messages(sink, {f"pod-{i}" for i in range(5)}, 30)
                cm = resources.checkpoint_configmap_name("pod")
                cm_path = f"/api/v1/namespaces/{ns}/configmaps/{cm}"
                await asyncio.to_thread(
                    wait_for,
                    lambda: (get_obj(api, cm_path) or {}).get("data"),
                    20,
                    "the router's checkpoint in its ConfigMap",
                )


def stalled(api: client.ApiClient, ns: str, name: str, status: str) -> Any:
    def probe() -> Any:
        obj = get_rc(api, ns, name)
        return obj if condition(obj, "DeliveryStalled").get("status") == status else None

    return probe


@pytest.mark.parametrize("runtime", ["inprocess", "deployment"])
async def test_delivery_stalled_condition_while_the_sink_is_down(
    api: client.ApiClient,
    namespace: str,
    operator: Any,
    tmp_path: Path,
    testenv: Any,
    runtime: str,
) -> None:
    """A sink that is down stalls the stream: the RouterConfig says so (DeliveryStalled=True,
    naming the processor and its sink), Ready stays True, and once the sink is back every
    event arrives and the condition goes False. Deployment runtime: the router pod (run here
    from the rendered Deployment) reports through its checkpoint ConfigMap."""
    ns = namespace
    metrics_port = free_port()
    with VCSim() as sim:
        async with CloudEventSink() as sink:
            apply(api, basic_secret("vc-creds", sim.username, sim.password), ns)
            spec = vcsim_spec(sim, sink.url)
            spec["metricsProvider"] = {
                "name": "m",
                "default": {"bindAddress": f"127.0.0.1:{metrics_port}"},
            }
            create_rc(api, ns, rc("stall", spec))
            operator(runtime)
            async with contextlib.AsyncExitStack() as stack:
                if runtime == "deployment":
                    await stack.enter_async_context(
                        rendered_pod(api, ns, "stall", tmp_path, testenv)
                    )
                else:
                    await asyncio.to_thread(wait_for, ready(api, ns, "stall"), 40, "Ready")
                obj = await asyncio.to_thread(
                    wait_for, stalled(api, ns, "stall", "False"), 40, "DeliveryStalled=False"
                )
                assert condition(obj, "DeliveryStalled")["reason"] == "Delivering"
                sink.down = 503
                si = await asyncio.to_thread(sim.connect)
                await asyncio.to_thread(post_general_events, si, 5, "stall")
                obj = await asyncio.to_thread(
                    wait_for, stalled(api, ns, "stall", "True"), 40, "DeliveryStalled=True"
                )
                cond = condition(obj, "DeliveryStalled")
                assert cond["reason"] == "SinkUnavailable", cond
                assert (
                    "processor sink" in cond["message"] and sink.url.rstrip("/") in cond["message"]
                ), cond
                if runtime == "deployment":
                    assert f"in pod {dep_name('stall')}-local" in cond["message"], cond
                if runtime == "inprocess":
                    assert condition(obj, "Ready")["status"] == "True", obj["status"]
                sink.down = None
                await _wait_messages(sink, {f"stall-{i}" for i in range(5)}, 60)
                obj = await asyncio.to_thread(
                    wait_for, stalled(api, ns, "stall", "False"), 40, "DeliveryStalled=False again"
                )
                if runtime == "deployment":
                    cm = get_obj(
                        api,
                        f"/api/v1/namespaces/{ns}/configmaps/"
                        f"{resources.checkpoint_configmap_name('stall')}",
                    )
                    assert not [k for k in cm.get("data") or {} if k.startswith("delivery.")]


async def test_inprocess_bad_password_is_reported_then_fixed_by_the_secret(
    api: client.ApiClient, namespace: str, operator: Any
) -> None:
    ns = namespace
    with VCSim() as sim:
        async with CloudEventSink() as sink:
            apply(api, basic_secret("vc-creds", sim.username, "wrong-password-123"), ns)
            create_rc(api, ns, rc("vcsim", vcsim_spec(sim, sink.url)))
            operator("inprocess")
            obj = await asyncio.to_thread(
                wait_for,
                ready(api, ns, "vcsim", status="False", reason="RouterFailed"),
                40,
                "RouterFailed",
            )
            message = condition(obj, "Ready")["message"]
            assert "retrying in" in message and "wrong-password-123" not in message
            events = request(api, "GET", f"/api/v1/namespaces/{ns}/events")["items"]
            assert any(e["reason"] == "RouterFailed" and e["type"] == "Warning" for e in events)
            # fixing the Secret is enough: a new config hash restarts the router
            apply(api, basic_secret("vc-creds", sim.username, sim.password), ns)
            await asyncio.to_thread(wait_for, ready(api, ns, "vcsim"), 40, "Ready after the fix")


# --- root CAs by reference (spec.certificates.rootCAs) -------------------------------------------

CA_REF = {"rootCAs": [{"configMapRef": {"name": "corp-ca", "key": "ca.crt"}}]}


def ca_configmap(data: dict[str, str]) -> dict[str, Any]:
    return {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "corp-ca"}, "data": data}


async def test_inprocess_trusts_vcsim_and_sink_only_through_the_referenced_ca(
    api: client.ApiClient, namespace: str, operator: Any, tmp_path: Path
) -> None:
    """vcsim and the sink serve TLS certificates of a private CA; insecureSSL is off, so the
    in-process router reaches them only by trusting the CA from the ConfigMap."""
    ns = namespace
    ca, server_ctx = make_tls(tmp_path)
    op_tmp = tmp_path / "operator-tmp"
    op_tmp.mkdir()
    tls_args = ("-tlscert", str(tmp_path / "server.pem"), "-tlskey", str(tmp_path / "key.pem"))
    with VCSim(args=tls_args) as sim:
        async with CloudEventSink(ssl_context=server_ctx) as sink:
            assert sink.url.startswith("https://")
            apply(api, basic_secret("vc-creds", sim.username, sim.password), ns)
            spec = vcsim_spec(sim, sink.url)
            spec["eventProvider"]["vcenter"]["insecureSSL"] = False
            spec["eventProcessor"]["knative"]["destination"]["uri"]["scheme"] = "https"
            spec["certificates"] = CA_REF
            create_rc(api, ns, rc("tls", spec))
            op = operator("inprocess", env={"TMPDIR": str(op_tmp)})

            # no ConfigMap yet: an actionable reason, nothing started
            obj = await asyncio.to_thread(
                wait_for,
                ready(api, ns, "tls", status="False", reason="CertificatesMissing"),
                30,
                "CertificatesMissing",
            )
            assert condition(obj, "Ready")["message"] == (
                f"ConfigMap {ns}/corp-ca (referenced by certificates.rootCAs[0].configMapRef) "
                "not found; create it with key ca.crt holding the PEM CA bundle"
            )
            assert condition(obj, "CredentialsReady")["reason"] == "CertificatesMissing"
            assert condition(obj, "Deployed")["status"] == "False"
            # the ConfigMap with the wrong key: still missing, the message says which keys it has
            apply(api, ca_configmap({"tls.crt": ca.read_text()}), ns)
            lacks = "lacks key ca.crt (has: tls.crt)"
            obj = await asyncio.to_thread(
                wait_for,
                lambda: (
                    (o := get_rc(api, ns, "tls"))
                    and lacks in condition(o, "Ready").get("message", "")
                    and o
                ),
                20,
                "lacks key ca.crt",
            )
            assert condition(obj, "Ready")["reason"] == "CertificatesMissing"

            # the right key: Ready without touching the RouterConfig, events flow over TLS
            apply(api, ca_configmap({"ca.crt": ca.read_text()}), ns)
            obj = await asyncio.to_thread(wait_for, ready(api, ns, "tls"), 40, "Ready via the CA")
            assert obj["metadata"]["generation"] == 1
            si = await asyncio.to_thread(sim.connect)
            await asyncio.to_thread(post_general_events, si, 5, "tls")
            await _wait_messages(sink, {f"tls-{i}" for i in range(5)}, 30)
            # control: the same RouterConfig without the CA is refused by vcsim's certificate
            untrusted = {k: v for k, v in spec.items() if k != "certificates"}
            create_rc(api, ns, rc("no-ca", untrusted))
            obj = await asyncio.to_thread(
                wait_for,
                ready(api, ns, "no-ca", status="False", reason="RouterFailed"),
                30,
                "RouterFailed without the CA",
            )
            assert "certificates.rootCAs" in condition(obj, "Ready")["message"]
            request(api, "DELETE", rc_path(ns, "no-ca"))
            # the CA was staged in a private temp dir of the operator ...
            (staged,) = op_tmp.glob("event-router-ca-*/*/*/ca-0.pem")
            assert staged.read_text() == ca.read_text()
            assert staged.parent.stat().st_mode & 0o777 == 0o700

            # ... and removed with the RouterConfig, the base dir with the operator
            request(api, "DELETE", rc_path(ns, "tls"))
            await asyncio.to_thread(
                wait_for,
                lambda: not list(op_tmp.glob("event-router-ca-*/*")),
                20,
                "the staged CA removed",
            )
            assert op.stop() == 0, op.log()
            assert list(op_tmp.iterdir()) == []


async def test_deployment_runtime_mounts_root_cas_and_rolls_when_the_ca_changes(
    api: client.ApiClient, namespace: str, operator: Any, tmp_path: Path
) -> None:
    ns = namespace
    ca1, _ = make_tls(tmp_path)
    pem1 = ca1.read_text()
    apply(api, basic_secret("vc-creds"), ns)
    apply(api, ca_configmap({"ca.crt": pem1}), ns)
    spec = uri_spec()
    spec["certificates"] = CA_REF
    create_rc(api, ns, rc("vc", spec))
    operator("deployment")
    name = dep_name("vc")
    await asyncio.to_thread(
        wait_for,
        lambda: condition(get_rc(api, ns, "vc"), "Deployed").get("status") == "True",
        30,
        "Deployed",
    )
    # the API server accepted the Deployment with the projected, read-only CA volume
    dep = request(api, "GET", f"/apis/apps/v1/namespaces/{ns}/deployments/{name}")
    pod = dep["spec"]["template"]["spec"]
    (volume,) = [v for v in pod["volumes"] if v["name"] == "root-cas"]
    assert volume["projected"]["sources"] == [
        {"configMap": {"name": "corp-ca", "items": [{"key": "ca.crt", "path": "ca-0.pem"}]}}
    ]
    (mount,) = [m for m in pod["containers"][0]["volumeMounts"] if m["name"] == "root-cas"]
    assert mount == {"name": "root-cas", "mountPath": "/etc/event-router-ca", "readOnly": True}
    config_cm = request(
        api,
        "GET",
        f"/api/v1/namespaces/{ns}/configmaps/{resources.config_configmap_name('vc')}",
    )
    rendered = yaml.safe_load(config_cm["data"]["config.yaml"])
    assert rendered["certificates"] == {"rootCAs": ["/etc/event-router-ca/ca-0.pem"]}
    assert pem1 not in yaml.safe_dump(rendered)  # a path, not the bundle
    hash1 = dep["spec"]["template"]["metadata"]["annotations"][resources.HASH_ANNOTATION]

    # a rotated CA rolls the pod (the router reads its CAs at start)
    (tmp_path / "ca2").mkdir()
    ca2, _ = make_tls(tmp_path / "ca2")
    apply(api, ca_configmap({"ca.crt": ca2.read_text()}), ns)

    def rolled() -> bool:
        d = request(api, "GET", f"/apis/apps/v1/namespaces/{ns}/deployments/{name}")
        h = d["spec"]["template"]["metadata"]["annotations"][resources.HASH_ANNOTATION]
        return h != hash1 and h == get_rc(api, ns, "vc")["status"].get("configHash")

    await asyncio.to_thread(wait_for, rolled, 20, "a new config hash after the CA changed")
    # a bundle that is no PEM: reported, the last good config keeps running
    apply(api, ca_configmap({"ca.crt": "not a certificate"}), ns)
    obj = await asyncio.to_thread(
        wait_for,
        ready(api, ns, "vc", status="False", reason="CertificatesInvalid"),
        20,
        "CertificatesInvalid",
    )
    assert "not a PEM certificate bundle" in condition(obj, "Ready")["message"]
    assert condition(obj, "Deployed")["message"] == "the last good config keeps running"


async def test_deployment_runtime_webhook_service_follows_the_provider_type(
    api: client.ApiClient, namespace: str, operator: Any
) -> None:
    """A webhook RouterConfig gets a Service in front of its router pod (port as given, the
    pod listening on 0.0.0.0); switching the provider to vcenter removes that Service."""
    ns = namespace
    apply(api, basic_secret("vc-creds"), ns)
    spec = uri_spec()
    spec["eventProvider"] = {
        "type": "webhook",
        "name": "hook",
        "webhook": {"bindAddress": "127.0.0.1:9000", "path": "/webhook"},
    }
    create_rc(api, ns, rc("hook", spec))
    operator("deployment")
    name = dep_name("hook")
    svc_path = f"/api/v1/namespaces/{ns}/services/{name}"
    svc = await asyncio.to_thread(wait_for, lambda: get_obj(api, svc_path), 30, "the Service")
    assert [p["port"] for p in svc["spec"]["ports"]] == [9000]
    config_cm = request(
        api,
        "GET",
        f"/api/v1/namespaces/{ns}/configmaps/{resources.config_configmap_name('hook')}",
    )
    rendered = yaml.safe_load(config_cm["data"]["config.yaml"])
    assert rendered["eventProvider"]["webhook"]["bindAddress"] == "0.0.0.0:9000"

    request(
        api,
        "PATCH",
        rc_path(ns, "hook"),
        body={"spec": {"eventProvider": {**uri_spec()["eventProvider"], "webhook": None}}},
        content_type="application/merge-patch+json",
    )
    await asyncio.to_thread(
        wait_for, lambda: get_obj(api, svc_path) is None, 30, "the Service removed"
    )
    assert get_obj(api, f"/apis/apps/v1/namespaces/{ns}/deployments/{name}") is not None
