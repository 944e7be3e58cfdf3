"""The chart on real pods (the test node of ``hack/testenv up --node``; ``make test``):

``helm install`` brings the operator pod Ready (our image, the chart's RBAC, a namespace at
PodSecurity ``restricted``) and a sample RouterConfig (vCenter = the testenv's vcsim -> a
``uri`` sink this test serves on TESTENV_HOST_IP) to Ready with its events delivered;
``helm upgrade`` with a changed value rolls the operator (a new pod, Ready, events still
delivered); ``helm uninstall`` leaves nothing of the release behind, only the CRDs (Helm
never deletes ``crds/``).

The release has names of its own (fullnameOverride, peering.name) and watches only the
test's namespace, so that it never meets the objects ``kubectl apply -k manifests/`` left
from tests/integration/test_cluster.py.
"""

from __future__ import annotations

import asyncio
import secrets
from collections.abc import AsyncIterator, Iterator
from typing import Any

import pytest

from tests.integration.conftest import STATE_DIR, TestEnv
from tests.integration.test_cluster import (
    ROUTER_LABEL,
    Vcsim,
    apply,
    router_pod,
    routerconfig_ready,
    vcenter_routerconfig,
    vcsim_secret,
    wait_messages,
)
from tests.integration.test_helm import CHART, CRDS, helm
from tests.support.cluster import (
    condition,
    image_in_node,
    kubectl,
    kubectl_json,
    ready_pods,
    wait_for,
)
from tests.support.sink import CloudEventSink

pytestmark = [pytest.mark.integration, pytest.mark.timeout(900)]


class Release:
    def __init__(self, env: TestEnv) -> None:
        tag = secrets.token_hex(3)
        self.env = env
        self.name = f"er-node-{tag}"
        self.ns = f"t-helm-op-{tag}"  # the operator's (the release's) namespace
        self.watched = f"t-helm-rc-{tag}"  # the RouterConfigs' namespace
        self.fullname = f"{self.name}-operator"
        self.peering = self.name

    def values(self, *extra: str) -> list[str]:
        sets = [
            f"fullnameOverride={self.fullname}",
            f"peering.name={self.peering}",
            f"watchNamespaces={{{self.watched}}}",
            *extra,
        ]
        return ["--set", ",".join(sets)]

    def operator_pods(self) -> list[dict[str, Any]]:
        return ready_pods(self.ns, f"app.kubernetes.io/name={self.fullname}")


@pytest.fixture
def release(node_env: TestEnv) -> Iterator[Release]:
    if not image_in_node(STATE_DIR):
        pytest.fail(
            "the event-router image is not in the test node: run `make image`", pytrace=False
        )
    rel = Release(node_env)
    # the namespace as docs/helm.md has users create it: PodSecurity restricted
    kubectl("create", "namespace", rel.ns)
    kubectl("label", "namespace", rel.ns, "pod-security.kubernetes.io/enforce=restricted")
    kubectl("create", "namespace", rel.watched)
    try:
        yield rel
    finally:
        kubectl(
            "delete",
            "routerconfigs",
            "--all",
            "-n",
            rel.watched,
            "--wait=true",
            "--timeout=60s",
            check=False,
        )
        helm(
            node_env,
            "uninstall",
            rel.name,
            "-n",
            rel.ns,
            "--wait",
            "--timeout",
            "120s",
            check=False,
        )
        kubectl("delete", "namespace", rel.watched, "--wait=false", check=False)
        kubectl("delete", "namespace", rel.ns, "--wait=false", check=False)


@pytest.fixture
async def sink(node_env: TestEnv) -> AsyncIterator[CloudEventSink]:
    async with CloudEventSink(host=node_env.host_ip) as s:
        yield s


@pytest.fixture
def vcsim(node_env: TestEnv) -> Iterator[Vcsim]:
    v = Vcsim(node_env)
    try:
        yield v
    finally:
        v.close()


def release_leftovers(rel: Release) -> list[str]:
    """Objects of the release still in the API server: by its label, and the peering object
    by its name (the operator would create it again if it outlived its RBAC)."""
    label = f"app.kubernetes.io/instance={rel.name}"
    left = kubectl(
        "get",
        "all,serviceaccounts,secrets,configmaps,roles,rolebindings",
        "-n",
        rel.ns,
        "-o",
        "name",
    ).split()
    left = [n for n in left if n not in ("serviceaccount/default", "configmap/kube-root-ca.crt")]
    left += kubectl("get", "clusterroles,clusterrolebindings", "-l", label, "-o", "name").split()
    left += kubectl(
        "get", "kopfpeerings", "-n", rel.watched, "-o", "name", "--ignore-not-found"
    ).split()
    left += [
        n
        for n in kubectl("get", "clusterkopfpeerings", "-o", "name").split()
        if n.endswith(f"/{rel.peering}")
    ]
    return left


async def test_helm_install_upgrade_uninstall_on_the_node(
    release: Release, sink: CloudEventSink, vcsim: Vcsim
) -> None:
    rel, env = release, release.env

    # install: the operator pod Ready with the chart's defaults (but its names)
    await asyncio.to_thread(
        helm,
        env,
        "install",
        rel.name,
        str(CHART),
        "-n",
        rel.ns,
        *rel.values(),
        "--wait",
        "--timeout",
        "240s",
        timeout=300,
    )
    pods = await asyncio.to_thread(wait_for, rel.operator_pods, 60, "the operator pod Ready")
    assert len(pods) == 1
    first_pod = pods[0]["metadata"]["name"]
    assert pods[0]["spec"]["serviceAccountName"] == rel.fullname
    dep = kubectl_json("get", "deployment", "-n", rel.ns, rel.fullname)
    assert condition(dep, "Available") == "True"
    kubectl("get", "kopfpeering", "-n", rel.watched, rel.peering)  # the chart's peering object

    # a sample RouterConfig: vCenter (the testenv's vcsim) -> a uri destination
    vcsim_secret(rel.watched, env)
    rc = "vc-helm"
    apply(rel.watched, vcenter_routerconfig(rc, env, {"uri": sink.url}))
    await asyncio.to_thread(router_pod, rel.watched, rc, 180)
    await asyncio.to_thread(routerconfig_ready, rel.watched, rc, 90)
    before = vcsim.post("helm-a", 3)
    await wait_messages(sink, before, 60)

    # upgrade with a changed value: the operator rolls (a new pod, Ready), routing goes on
    old_generation = dep["metadata"]["generation"]
    await asyncio.to_thread(
        helm,
        env,
        "upgrade",
        rel.name,
        str(CHART),
        "-n",
        rel.ns,
        *rel.values("logLevel=debug"),
        "--wait",
        "--timeout",
        "240s",
        timeout=300,
    )
    dep = kubectl_json("get", "deployment", "-n", rel.ns, rel.fullname)
    assert dep["metadata"]["generation"] == old_generation + 1
    assert "--log-level=debug" in dep["spec"]["template"]["spec"]["containers"][0]["command"]
    rolled = await asyncio.to_thread(
        wait_for,
        lambda: [p for p in rel.operator_pods() if p["metadata"]["name"] != first_pod],
        180,
        "the upgraded operator pod Ready",
    )
    assert len(rolled) == 1
    await asyncio.to_thread(
        wait_for,
        lambda: (
            not any(
                p["metadata"]["name"] == first_pod
                for p in kubectl_json("get", "pods", "-n", rel.ns)["items"]
            )
        ),
        120,
        "the old operator pod gone",
    )
    # the upgraded operator takes the RouterConfig over (its router pod may roll: a debug
    # operator renders debug router pods)
    await asyncio.to_thread(router_pod, rel.watched, rc, 180)
    await asyncio.to_thread(routerconfig_ready, rel.watched, rc, 90)
    after = vcsim.post("helm-b", 3)
    await wait_messages(sink, after, 90)
    assert helm(env, "history", rel.name, "-n", rel.ns, "-o", "json").count('"revision"') == 2

    # uninstall: RouterConfigs first (their children go with them by ownerReference), then
    # the release: nothing of it is left but the CRDs
    kubectl("delete", "routerconfig", "-n", rel.watched, rc, "--wait=true", "--timeout=60s")
    await asyncio.to_thread(
        wait_for,
        lambda: (
            not kubectl(
                "get",
                "deployments,secrets,serviceaccounts,roles,rolebindings",
                "-n",
                rel.watched,
                "-l",
                f"{ROUTER_LABEL}={rc}",
                "-o",
                "name",
            ).split()
        ),
        90,
        "the RouterConfig's children gone",
    )
    await asyncio.to_thread(
        helm,
        env,
        "uninstall",
        rel.name,
        "-n",
        rel.ns,
        "--wait",
        "--timeout",
        "180s",
        timeout=240,
    )
    await asyncio.to_thread(
        wait_for, lambda: not release_leftovers(rel), 120, "the release's objects gone"
    )
    # and they stay gone: no operator outlived its RBAC to re-create its peering object
    await asyncio.sleep(15)
    assert release_leftovers(rel) == []
    for crd in CRDS:
        kubectl("get", "crd", crd)
    assert helm(env, "list", "-n", rel.ns, "-q").strip() == ""
