"""The cluster path on real pods (the test node of ``hack/testenv up --node``): our image,
``kubectl apply -k manifests/`` as a user runs it, router pods of the deployment runtime.

The operator runs as a pod with the shipped RBAC and PodSecurity level; RouterConfigs become
router pods that are Running and Ready, whose events reach sinks that this test serves on
TESTENV_HOST_IP (straight by URI, or through a v1 Service found by cluster DNS); checkpoints
are written by the router pod's own ServiceAccount; a deleted pod or a killed container
loses nothing; a spec change rolls the pod; deleting the RouterConfig removes its children.
"""

from __future__ import annotations

import asyncio
import json
import secrets
import ssl
import urllib.request
from collections.abc import AsyncIterator, Iterator
from typing import Any

import pytest
from pyVim.connect import Disconnect, SmartConnect

from event_router.operator import resources
from tests.integration.conftest import STATE_DIR, TestEnv
from tests.support.cluster import (
    REPO,
    condition,
    image_in_node,
    kill_container,
    kubectl,
    kubectl_json,
    ready_pods,
    wait_for,
)
from tests.support.sink import CloudEventSink
from tests.support.vcsim import post_general_events

pytestmark = [pytest.mark.integration, pytest.mark.timeout(600)]

OPERATOR_NS = "event-router-system"
ROUTER_LABEL = "event-router.vmware.com/routerconfig"


@pytest.fixture(scope="module")
def operator(node_env: TestEnv) -> Iterator[TestEnv]:
    """``kubectl apply -k manifests/``, unchanged, until the operator Deployment is Available;
    ``kubectl delete -k manifests/`` afterwards (waiting for the operator pod to be gone, so
    that later tests' operators never share RouterConfigs with it)."""
    if not image_in_node(STATE_DIR):
        pytest.fail(
            "the event-router image is not in the test node: run `make image`", pytrace=False
        )
    kubectl("apply", "-k", str(REPO / "manifests"))
    try:
        wait_for(
            lambda: (
                condition(
                    kubectl_json("get", "deployment", "-n", OPERATOR_NS, "event-router-operator"),
                    "Available",
                )
                == "True"
            ),
            180,
            "the operator Deployment to become Available",
        )
        yield node_env
    finally:
        kubectl("delete", "-n", OPERATOR_NS, "deployment", "event-router-operator", "--wait=true",
                "--timeout=120s", check=False)  # fmt: skip
        wait_for(
            lambda: not kubectl_json("get", "pods", "-n", OPERATOR_NS)["items"],
            120,
            "the operator pods to be gone",
        )


@pytest.fixture
def ns(operator: TestEnv) -> Iterator[str]:
    name = f"t-cluster-{secrets.token_hex(3)}"
    kubectl("create", "namespace", name)
    try:
        yield name
    finally:
        # RouterConfigs first, while the operator runs (their finalizers need it), then the rest
        kubectl("delete", "routerconfigs", "--all", "-n", name, "--wait=true", "--timeout=60s",
                check=False)  # fmt: skip
        kubectl("delete", "namespace", name, "--wait=false", check=False)


@pytest.fixture
async def sink(operator: TestEnv) -> AsyncIterator[CloudEventSink]:
    async with CloudEventSink(host=operator.host_ip) as s:
        yield s


def vcsim_secret(ns: str, env: TestEnv) -> None:
    kubectl("create", "secret", "generic", "vcsim-creds", "-n", ns,
            f"--from-literal=username={env.vcsim_username}",
            f"--from-literal=password={env.vcsim_password}")  # fmt: skip
    # the Secret's consent to be used by RouterConfigs of its namespace
    kubectl("annotate", "secret", "vcsim-creds", "-n", ns,
            "event-router.vmware.com/routerconfigs=*")  # fmt: skip


def vcenter_routerconfig(name: str, env: TestEnv, destination: dict[str, Any]) -> dict[str, Any]:
    return {
        "apiVersion": "event-router.vmware.com/v1alpha1",
        "kind": "RouterConfig",
        "metadata": {"name": name},
        "spec": {
            "eventProvider": {
                "type": "vcenter",
                "name": "vcsim",
                "vcenter": {
                    "address": env.vcsim_url,
                    "insecureSSL": True,
                    "auth": {"type": "basic_auth", "secretRef": {"name": "vcsim-creds"}},
                },
            },
            "checkpoint": {"periodSeconds": 1},
            "eventProcessor": {
                "type": "knative",
                "name": "sink",
                "knative": {"encoding": "structured", "destination": destination},
            },
            "metricsProvider": {
                "type": "default",
                "name": "metrics",
                "default": {"bindAddress": "0.0.0.0:8082"},
            },
        },
    }


def uri_of(sink: CloudEventSink) -> dict[str, Any]:
    """The CRD's object form of a destination URI (the original's)."""
    return {"scheme": "http", "host": sink.host, "port": sink.port, "path": "/"}


def apply(ns: str, obj: dict[str, Any]) -> None:
    kubectl("apply", "-n", ns, "-f", "-", input_=json.dumps(obj))


def router_pod(ns: str, rc: str, timeout: float = 120) -> dict[str, Any]:
    pods = wait_for(
        lambda: ready_pods(ns, f"{ROUTER_LABEL}={rc}"), timeout, f"router pod of {rc} Ready"
    )
    assert len(pods) == 1, [p["metadata"]["name"] for p in pods]
    return pods[0]


def routerconfig_ready(ns: str, rc: str, timeout: float = 60) -> dict[str, Any]:
    def probe() -> dict[str, Any] | None:
        obj: dict[str, Any] = kubectl_json("get", "routerconfig", "-n", ns, rc)
        return obj if condition(obj, "Ready") == "True" else None

    return wait_for(probe, timeout, f"RouterConfig {rc} Ready=True")


class Vcsim:
    def __init__(self, env: TestEnv) -> None:
        host, port = env.vcsim_host.rsplit(":", 1)
        self.si = SmartConnect(host=host, port=int(port), user=env.vcsim_username,
                               pwd=env.vcsim_password, sslContext=ssl._create_unverified_context(),
                               disableSslCertValidation=True)  # fmt: skip

    def post(self, prefix: str, count: int = 1) -> list[str]:
        post_general_events(self.si, count, prefix)
        return [f"{prefix}-{i}" for i in range(count)]

    def close(self) -> None:
        Disconnect(self.si)


@pytest.fixture
def vcsim(operator: TestEnv) -> Iterator[Vcsim]:
    v = Vcsim(operator)
    try:
        yield v
    finally:
        v.close()


def router_logs() -> str:
    """The last lines of every router pod's log, for a failure's message."""
    out = []
    pods = kubectl_json("get", "pods", "-A", "-l", ROUTER_LABEL)["items"]
    for p in pods:
        ns, name = p["metadata"]["namespace"], p["metadata"]["name"]
        log = kubectl("logs", "-n", ns, name, "--tail=30", check=False)
        out.append(f"\n--- {ns}/{name} ---\n{log}")
    return "".join(out)


def messages(sink: CloudEventSink) -> list[str]:
    """The ``Message`` of every vCenter event the sink got (GeneralUserEvent's text)."""
    out = []
    for e in sink.events:
        data = e.get_data()
        if isinstance(data, dict) and isinstance(data.get("Message"), str):
            out.append(data["Message"])
    return out


async def wait_messages(sink: CloudEventSink, wanted: list[str], within: float) -> None:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + within
    while not set(wanted) <= set(messages(sink)):
        if loop.time() > deadline:
            missing = sorted(set(wanted) - set(messages(sink)))
            raise AssertionError(
                f"{len(missing)} events never arrived: {missing[:10]} (the sink got"
                f" {len(sink.events)} events){router_logs()}"
            )
        await asyncio.sleep(0.3)


def test_operator_runs_as_a_pod_with_the_shipped_rbac_and_pod_security(operator: TestEnv) -> None:
    pods = ready_pods(OPERATOR_NS, "app.kubernetes.io/name=event-router-operator")
    assert len(pods) == 1
    pod = pods[0]
    assert pod["spec"]["serviceAccountName"] == "event-router-operator"
    assert not pod["spec"].get("hostNetwork")
    assert pod["spec"]["nodeName"] == operator.node
    ns = kubectl_json("get", "namespace", OPERATOR_NS)
    assert ns["metadata"]["labels"]["pod-security.kubernetes.io/enforce"] == "restricted"
    # it logs its start (a pod is Ready, having no readiness probe, before its first line)
    logs = wait_for(
        lambda: kubectl("logs", "-n", OPERATOR_NS, pod["metadata"]["name"]).strip(),
        30,
        "the operator pod's first log lines",
    )
    assert "event-router-operator" in logs, logs[-2000:]


async def test_vcenter_to_uri_router_pod_delivers_survives_pod_loss_and_rolls(
    operator: TestEnv, ns: str, sink: CloudEventSink, vcsim: Vcsim
) -> None:
    vcsim_secret(ns, operator)
    rc = "vc-uri"
    apply(ns, vcenter_routerconfig(rc, operator, {"uri": uri_of(sink)}))
    pod = await asyncio.to_thread(router_pod, ns, rc)
    await asyncio.to_thread(routerconfig_ready, ns, rc)
    first = vcsim.post("pod-a", 3)
    await wait_messages(sink, first, 60)

    # the router pod writes its checkpoint with its own ServiceAccount
    pod_sa = pod["spec"]["serviceAccountName"]
    assert pod_sa != "default"

    def checkpoint() -> dict[str, str] | None:
        cms = kubectl_json("get", "configmaps", "-n", ns, "-l", f"{ROUTER_LABEL}={rc}")["items"]
        return next((c.get("data") for c in cms if c.get("data")), None)

    cp = await asyncio.to_thread(wait_for, checkpoint, 30, "a checkpoint written by the pod")
    assert any("lastEventKey" in v for v in cp.values()), cp

    # kubectl delete pod: events posted while it is down arrive from the new pod
    kubectl("delete", "pod", "-n", ns, pod["metadata"]["name"], "--wait=false")
    while_down = vcsim.post("pod-b", 5)
    new_pod = await asyncio.to_thread(
        wait_for,
        lambda: [
            p
            for p in ready_pods(ns, f"{ROUTER_LABEL}={rc}")
            if p["metadata"]["name"] != pod["metadata"]["name"]
        ],
        120,
        "a new router pod",
    )
    await wait_messages(sink, while_down, 90)

    # kill -9 of the router's container: the kubelet restarts it, nothing is lost
    cid = new_pod[0]["status"]["containerStatuses"][0]["containerID"]
    kill_container(STATE_DIR, cid)
    while_killed = vcsim.post("pod-c", 5)
    await wait_messages(sink, while_killed, 120)
    restarted = kubectl_json("get", "pod", "-n", ns, new_pod[0]["metadata"]["name"])
    assert restarted["status"]["containerStatuses"][0]["restartCount"] >= 1

    # kubectl logs shows the router's logs, and never the password
    logs = kubectl("logs", "-n", ns, new_pod[0]["metadata"]["name"])
    assert "vcsim" in logs or "vcenter" in logs.lower()
    assert operator.vcsim_password not in logs

    # a spec change rolls the pod (new config hash)
    deployment = f"{rc}-router"
    before = kubectl_json("get", "deployment", "-n", ns, deployment)
    old_hash = before["spec"]["template"]["metadata"]["annotations"]
    changed = vcenter_routerconfig(rc, operator, {"uri": uri_of(sink)})
    changed["spec"]["eventProcessor"]["knative"]["encoding"] = "binary"
    apply(ns, changed)
    await asyncio.to_thread(
        wait_for,
        lambda: (
            kubectl_json("get", "deployment", "-n", ns, deployment)["spec"]["template"]["metadata"][
                "annotations"
            ]
            != old_hash
        ),
        60,
        "the Deployment's config hash to change",
    )
    rolled = await asyncio.to_thread(
        wait_for,
        lambda: [
            p
            for p in ready_pods(ns, f"{ROUTER_LABEL}={rc}")
            if p["metadata"]["name"] != new_pod[0]["metadata"]["name"]
        ],
        120,
        "the rolled router pod",
    )
    assert rolled
    after_roll = vcsim.post("pod-d", 2)
    await wait_messages(sink, after_roll, 60)
    binary = [h for h in sink.request_headers[-2:] if "ce-id" in h]
    assert binary, "after the change events arrive in binary mode"

    # deleting the RouterConfig removes its Deployment, config ConfigMap, ServiceAccount, Role,
    # RoleBinding
    kubectl("delete", "routerconfig", "-n", ns, rc)

    def children() -> list[str]:
        out = kubectl("get", "deployments,secrets,serviceaccounts,roles,rolebindings", "-n", ns,
                      "-l", f"{ROUTER_LABEL}={rc}", "-o", "name")  # fmt: skip
        config = kubectl("get", "configmap", "-n", ns, resources.config_configmap_name(rc),
                         "-o", "name", "--ignore-not-found")  # fmt: skip
        return out.split() + config.split()

    await asyncio.to_thread(wait_for, lambda: not children(), 60, "the children to be deleted")


async def test_vcenter_to_a_v1_service_ref_resolved_through_cluster_dns(
    operator: TestEnv, ns: str, sink: CloudEventSink, vcsim: Vcsim
) -> None:
    """The sink is a v1 Service (no selector) whose EndpointSlice points at the test's server
    on the host: the router pod finds it by its cluster DNS name, kube-proxy carries it."""
    sink_objects = {"apiVersion": "v1", "kind": "List", "items": [
        {"apiVersion": "v1", "kind": "Service", "metadata": {"name": "event-display"},
         "spec": {"ports": [{"name": "http", "port": 80, "targetPort": sink.port}]}},
        {"apiVersion": "discovery.k8s.io/v1", "kind": "EndpointSlice",
         "metadata": {"name": "event-display-host",
                      "labels": {"kubernetes.io/service-name": "event-display"}},
         "addressType": "IPv4",
         "endpoints": [{"addresses": [operator.host_ip]}],
         "ports": [{"name": "http", "port": sink.port, "protocol": "TCP"}]},
    ]}  # fmt: skip
    kubectl("apply", "-n", ns, "-f", "-", input_=json.dumps(sink_objects))
    vcsim_secret(ns, operator)
    rc = "vc-ref"
    apply(ns, vcenter_routerconfig(rc, operator, {"ref": {"apiVersion": "v1", "kind": "Service",
                                                          "name": "event-display"}}))  # fmt: skip
    await asyncio.to_thread(router_pod, ns, rc)
    obj = await asyncio.to_thread(routerconfig_ready, ns, rc)
    assert "event-display" in json.dumps(obj["status"])
    wanted = vcsim.post("ref", 3)
    await wait_messages(sink, wanted, 60)


async def test_webhook_router_pod_behind_its_service(
    operator: TestEnv, ns: str, sink: CloudEventSink
) -> None:
    rc = "hook"
    apply(ns, {
        "apiVersion": "event-router.vmware.com/v1alpha1",
        "kind": "RouterConfig",
        "metadata": {"name": rc},
        "spec": {
            "eventProvider": {"type": "webhook", "name": "hook",
                              "webhook": {"bindAddress": "0.0.0.0:8080", "path": "/webhook"}},
            "eventProcessor": {"type": "knative", "name": "sink",
                               "knative": {"destination": {"uri": uri_of(sink)}}},
        },
    })  # fmt: skip
    await asyncio.to_thread(router_pod, ns, rc)
    await asyncio.to_thread(routerconfig_ready, ns, rc)
    svc = kubectl_json("get", "service", "-n", ns, f"{rc}-router")
    url = f"http://{svc['spec']['clusterIP']}:8080/webhook"

    def post(i: int) -> int:
        req = urllib.request.Request(url, method="POST", data=json.dumps({"n": i}).encode(),
                                     headers={"ce-specversion": "1.0", "ce-id": f"hook-{i}",
                                              "ce-source": "/test", "ce-type": "test.event",
                                              "content-type": "application/json"})  # fmt: skip
        with urllib.request.urlopen(req, timeout=10) as r:
            return int(r.status)

    # A Ready pod reaches the Service once the EndpointSlice lists it and kube-proxy has
    # programmed it (iptables rules are synced at most once a second): wait for both. A refused
    # connection never reached the router, so the first event is sent again until it is taken.
    def endpoint_ready() -> bool:
        slices = kubectl_json("get", "endpointslices", "-n", ns, "-l",
                              f"kubernetes.io/service-name={rc}-router")["items"]  # fmt: skip
        return any((e.get("conditions") or {}).get("ready")
                   for s in slices for e in s.get("endpoints") or [])  # fmt: skip

    await asyncio.to_thread(wait_for, endpoint_ready, 60, f"a ready endpoint of {rc}-router")
    first = await asyncio.to_thread(wait_for, lambda: post(0), 30, f"{url} accepts connections")
    statuses = [first] + [await asyncio.to_thread(post, i) for i in range(1, 5)]
    assert statuses == [202] * 5
    events = await sink.wait_for(5, timeout=30)
    assert sorted(e["id"] for e in events) == [f"hook-{i}" for i in range(5)]


def _operator_pods(app: str) -> list[dict[str, Any]]:
    return ready_pods(OPERATOR_NS, f"app.kubernetes.io/name={app}")


def _set_peering_lifetime(seconds: int | None) -> None:
    value = f"EVENT_ROUTER_OPERATOR_PEERING_LIFETIME={seconds}" if seconds else (
        "EVENT_ROUTER_OPERATOR_PEERING_LIFETIME-")  # fmt: skip
    kubectl("set", "env", "-n", OPERATOR_NS, "deployment/event-router-operator", value)
    wait_for(
        lambda: (
            (d := kubectl_json("get", "deployment", "-n", OPERATOR_NS, "event-router-operator"))
            and d["status"].get("observedGeneration") == d["metadata"]["generation"]
            and d["status"].get("updatedReplicas") == 1
            and d["status"].get("readyReplicas") == 1
            and len(_operator_pods("event-router-operator")) == 1
        ),
        180,
        "the operator rolled with the new peering lifetime",
    )


async def test_two_operator_replicas_one_acts_and_a_hung_one_hands_over(
    operator: TestEnv, ns: str, sink: CloudEventSink, vcsim: Vcsim
) -> None:
    """A standby Deployment (the shipped one, renamed, ``--priority=-1``) pauses while the
    shipped replica acts; when the active replica hangs (SIGSTOP: no goodbye, as when its node
    is lost), the standby takes over once the active entry is older than the peering lifetime
    (10 s here) and new RouterConfigs get router pods. Runs last: it restarts the operator."""
    lifetime = 10
    standby_name = "event-router-operator-standby"
    await asyncio.to_thread(_set_peering_lifetime, lifetime)
    primary = _operator_pods("event-router-operator")[0]
    standby = kubectl_json("get", "deployment", "-n", OPERATOR_NS, "event-router-operator")
    for key in ("uid", "resourceVersion", "creationTimestamp", "generation", "managedFields",
                "annotations"):  # fmt: skip
        standby["metadata"].pop(key, None)
    standby.pop("status", None)
    standby["metadata"]["name"] = standby_name
    labels = {"app.kubernetes.io/name": standby_name, "app.kubernetes.io/part-of": "event-router"}
    standby["metadata"]["labels"] = labels
    standby["spec"]["selector"] = {"matchLabels": {"app.kubernetes.io/name": standby_name}}
    standby["spec"]["template"]["metadata"]["labels"] = labels
    container = standby["spec"]["template"]["spec"]["containers"][0]
    container["command"] = [*container["command"], "--priority=-1"]
    kubectl("apply", "-f", "-", input_=json.dumps(standby))
    stopped_cid = ""
    try:
        spod = await asyncio.to_thread(
            wait_for, lambda: _operator_pods(standby_name), 120, "the standby operator pod Ready"
        )
        spod_name = spod[0]["metadata"]["name"]
        await asyncio.to_thread(
            wait_for,
            lambda: (
                spod_name
                in (kubectl_json("get", "clusterkopfpeering", "event-router").get("status") or {})
            ),
            60,
            "the standby to register in the ClusterKopfPeering",
        )

        # the shipped replica acts: a RouterConfig becomes a router pod, events arrive
        vcsim_secret(ns, operator)
        apply(ns, vcenter_routerconfig("before", operator, {"uri": uri_of(sink)}))
        await asyncio.to_thread(router_pod, ns, "before")
        await asyncio.to_thread(routerconfig_ready, ns, "before")
        await wait_messages(sink, vcsim.post("ha-a", 2), 60)
        standby_logs = kubectl("logs", "-n", OPERATOR_NS, spod_name)
        assert "now ACTIVE" not in standby_logs, standby_logs[-2000:]

        # the active replica hangs: no goodbye, its peering entry ages
        stopped_cid = primary["status"]["containerStatuses"][0]["containerID"]
        kill_container(STATE_DIR, stopped_cid, signal="SIGSTOP")
        t0 = asyncio.get_running_loop().time()
        apply(ns, vcenter_routerconfig("after", operator, {"uri": uri_of(sink)}))
        await asyncio.to_thread(
            wait_for,
            lambda: "now ACTIVE" in kubectl("logs", "-n", OPERATOR_NS, spod_name),
            lifetime * 6,
            "the standby to take over",
        )
        await asyncio.to_thread(router_pod, ns, "after")
        await asyncio.to_thread(routerconfig_ready, ns, "after")
        took = asyncio.get_running_loop().time() - t0
        print(f"standby took over and deployed a new router pod {took:.1f}s after the hang")
        await wait_messages(sink, vcsim.post("ha-b", 2), 60)
    finally:
        if stopped_cid:  # SIGKILL reaches a stopped process; the kubelet restarts it
            kill_container(STATE_DIR, stopped_cid, check=False)
        kubectl("delete", "deployment", "-n", OPERATOR_NS, standby_name, "--wait=true",
                "--timeout=120s", check=False)  # fmt: skip
        await asyncio.to_thread(_set_peering_lifetime, None)
