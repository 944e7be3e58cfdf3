"""Two operator replicas with kopf peering on the real test control plane (in-process
runtime, vcsim -> router -> sink): only the active replica runs the router (each event
arrives once, not twice), a higher-priority replica takes over from a running one, and when
the active replica dies the standby takes over within the peering lifetime."""

from __future__ import annotations

import asyncio
import contextlib
import signal
import sys
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml
from kubernetes import client
from prometheus_client.parser import text_string_to_metric_families

from event_router.operator.devtools import (
    OperatorProcess,
    apply,
    create_rc,
    install_crd_object,
    wait_for,
)
from event_router.operator.kube import request
from tests.integration.test_operator import (  # noqa: F401 - api is a fixture
    _wait_messages,
    api,
    basic_secret,
    rc,
    ready,
    vcsim_spec,
)
from tests.integration.test_operator_metrics import webhook_spec
from tests.support.net import free_port
from tests.support.sink import CloudEventSink
from tests.support.vcsim import VCSim, post_general_events

pytestmark = [pytest.mark.integration, pytest.mark.timeout(180)]

REPO = Path(__file__).resolve().parents[2]
LIFETIME = 10  # --peering-lifetime: a dead replica's entry expires after this


@pytest.fixture
def replicas(tmp_path: Path, namespace: str, testenv: Any, api: Any) -> Iterator[Any]:  # noqa: F811
    for doc in yaml.safe_load_all((REPO / "manifests" / "peering.yaml").read_text()):
        if doc and doc.get("kind") == "CustomResourceDefinition":
            install_crd_object(api, doc)
    started: list[tuple[OperatorProcess, int]] = []

    def start(priority: int) -> tuple[OperatorProcess, str]:
        port = free_port()
        op = OperatorProcess(
            [
                "--runtime=inprocess",
                f"--namespace={namespace}",
                "--peering=event-router",
                f"--priority={priority}",
                f"--peering-lifetime={LIFETIME}",
                "--resync-seconds=1",
                f"--metrics-bind-address=127.0.0.1:{port}",
            ],
            tmp_path / f"operator-prio{priority}.log",
            kubeconfig=testenv.kubeconfig,
        ).start()
        started.append((op, port))
        return op, f"http://127.0.0.1:{port}"

    yield start
    for op, _ in started:
        op.stop()
        sys.stderr.write(f"--- {op.log_path} ---\n{op.log(5000)}\n")


def scrape(base: str) -> str:
    try:
        return httpx.get(f"{base}/metrics", timeout=5).text
    except httpx.HTTPError:
        return ""


def runs_router(base: str, name: str) -> bool:
    """The replica serves the series of a running in-process router of ``name``."""
    for family in text_string_to_metric_families(scrape(base)):
        if family.name == "event_router_ready":
            if any(s.labels.get("routerconfig") == name for s in family.samples):
                return True
    return False


def active(base: str) -> bool:
    return "event_router_operator_active 1.0" in scrape(base)


def counts(sink: CloudEventSink, prefix: str) -> Counter[str]:
    msgs = ((e.data or {}).get("Message") or "" for e in sink.events)
    return Counter(m for m in msgs if m.startswith(prefix))


async def test_only_the_active_replica_acts_and_the_standby_takes_over(
    api: client.ApiClient,  # noqa: F811
    namespace: str,
    replicas: Any,
) -> None:
    ns = namespace
    with VCSim() as sim:
        async with CloudEventSink() as sink:
            apply(api, basic_secret("vc-creds", sim.username, sim.password), ns)
            spec = vcsim_spec(sim, sink.url)
            spec["checkpoint"] = {"periodSeconds": 1}
            create_rc(api, ns, rc("vcsim", spec))
            low, low_url = replicas(50)
            await asyncio.to_thread(wait_for, ready(api, ns, "vcsim"), 60, "Ready (low alone)")
            await asyncio.to_thread(wait_for, lambda: runs_router(low_url, "vcsim"), 20, "low")
            si = await asyncio.to_thread(sim.connect)
            await asyncio.to_thread(post_general_events, si, 5, "one")
            await _wait_messages(sink, {f"one-{i}" for i in range(5)}, 30)

            # a higher priority replica starts: it acts, the running one pauses its router
            high, high_url = replicas(100)
            await asyncio.to_thread(
                wait_for, lambda: runs_router(high_url, "vcsim"), 60, "high runs the router"
            )
            await asyncio.to_thread(
                wait_for,
                lambda: not active(low_url) and not runs_router(low_url, "vcsim"),
                20,
                "low paused and its router stopped",
            )
            assert "PAUSED (standby behind replica" in low.log(20000)
            await asyncio.to_thread(post_general_events, si, 10, "two")
            await _wait_messages(sink, {f"two-{i}" for i in range(10)}, 30)
            # the paused replica polls vcsim no more: give it a few of its resync periods
            await asyncio.sleep(3)
            assert set(counts(sink, "two-").values()) == {1}, counts(sink, "two-")
            assert not runs_router(low_url, "vcsim")

            # the active replica dies (no goodbye in the peering object): the standby takes
            # over once the dead replica's entry expires
            assert high.proc is not None
            high.proc.kill()
            high.proc.wait(10)
            killed = time.monotonic()
            await asyncio.to_thread(
                wait_for,
                lambda: runs_router(low_url, "vcsim"),
                LIFETIME + 20,
                "low takes over",
            )
            took = time.monotonic() - killed
            assert took <= LIFETIME + 8, f"takeover after {took:.1f} s (lifetime {LIFETIME} s)"
            sys.stderr.write(f"takeover {took:.1f} s after the active replica died\n")
            await asyncio.to_thread(post_general_events, si, 5, "three")
            await _wait_messages(sink, {f"three-{i}" for i in range(5)}, 30)
            await asyncio.sleep(2)
            assert set(counts(sink, "three-").values()) == {1}, counts(sink, "three-")


async def test_sigterm_hands_over_with_each_event_once(
    api: client.ApiClient,  # noqa: F811
    namespace: str,
    replicas: Any,
) -> None:
    """SIGTERM to the active replica while events stream: it stops its routers (final
    checkpoint) before it leaves the peering object, the standby resumes from that
    checkpoint: every event arrives, each exactly once."""
    ns = namespace
    with VCSim() as sim:
        async with CloudEventSink() as sink:
            apply(api, basic_secret("vc-creds", sim.username, sim.password), ns)
            spec = vcsim_spec(sim, sink.url)
            spec["checkpoint"] = {"periodSeconds": 30}  # only the final checkpoint counts
            create_rc(api, ns, rc("vcsim", spec))
            high, high_url = replicas(100)
            await asyncio.to_thread(wait_for, lambda: runs_router(high_url, "vcsim"), 60, "high")
            _low, low_url = replicas(50)
            await asyncio.to_thread(
                wait_for,
                lambda: "event_router_operator_active 0.0" in scrape(low_url),
                30,
                "low up as the standby",
            )
            si = await asyncio.to_thread(sim.connect)
            await asyncio.to_thread(post_general_events, si, 5, "before")
            await _wait_messages(sink, {f"before-{i}" for i in range(5)}, 30)

            assert high.proc is not None
            high.proc.send_signal(signal.SIGTERM)

            def paced() -> None:  # 40 events over ~4 s, across the handover
                for i in range(40):
                    post_general_events(si, 1, f"during-{i}")
                    time.sleep(0.1)

            posting = asyncio.create_task(asyncio.to_thread(paced))
            assert await asyncio.to_thread(high.proc.wait, 40) == 0
            assert "stopping the routers, then the operator" in high.log(50000)
            await asyncio.to_thread(wait_for, lambda: runs_router(low_url, "vcsim"), 40, "low")
            await posting
            await _wait_messages(sink, {f"during-{i}-0" for i in range(40)}, 40)
            await asyncio.sleep(2)
            seen = counts(sink, "during-")
            assert set(seen.values()) == {1}, seen


async def test_a_watched_namespace_created_later_gets_its_peering_object(
    api: client.ApiClient,  # noqa: F811
    namespace: str,
    tmp_path: Path,
    testenv: Any,
) -> None:
    """`-n ours -n later` while `later` does not exist: the operator says so, and once the
    namespace is created, its KopfPeering is created and the operator acts (the RouterConfig
    in `ours` becomes Ready)."""
    for doc in yaml.safe_load_all((REPO / "manifests" / "peering.yaml").read_text()):
        if doc and doc.get("kind") == "CustomResourceDefinition":
            install_crd_object(api, doc)
    later = f"{namespace}-later"
    port = free_port()
    op = OperatorProcess(
        [
            "--runtime=inprocess",
            f"--namespace={namespace}",
            f"--namespace={later}",
            "--peering=event-router",
            f"--peering-lifetime={LIFETIME}",
            "--resync-seconds=1",
            f"--metrics-bind-address=127.0.0.1:{port}",
        ],
        tmp_path / "operator.log",
        kubeconfig=testenv.kubeconfig,
    ).start()
    base = f"http://127.0.0.1:{port}"
    try:
        async with CloudEventSink() as sink:
            create_rc(api, namespace, rc("hook", webhook_spec(free_port(), sink.url)))
            await asyncio.to_thread(
                wait_for, lambda: f"namespace {later} does not exist yet" in op.log(20000), 30, "w"
            )
            await asyncio.sleep(3)
            assert not active(base)
            request(api, "POST", "/api/v1/namespaces", body={"metadata": {"name": later}})
            await asyncio.to_thread(wait_for, lambda: active(base), 60, "the operator acting")
            await asyncio.to_thread(wait_for, ready(api, namespace, "hook"), 30, "Ready")
    finally:
        op.stop()
        sys.stderr.write(f"--- {op.log_path} ---\n{op.log(5000)}\n")
        with contextlib.suppress(client.ApiException):
            request(api, "DELETE", f"/api/v1/namespaces/{later}")
