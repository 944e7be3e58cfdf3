"""Leader election (event_router/leader.py) on a real Lease of the test kube-apiserver: one
leader; a standby takes over only after the leader stopped counting itself the leader; a
released Lease is taken within a retry period; racing candidates elect exactly one; a leader
cut off from the API server fences itself before anyone else may lead."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator
from typing import Any
from urllib.parse import urlparse

import pytest
from kubernetes import client, config

from event_router.leader import KubernetesLeaseStore, LeaderElector, Timing
from tests.integration.conftest import TestEnv
from tests.support.net import CuttableForwarder

pytestmark = [pytest.mark.integration, pytest.mark.timeout(120)]

TIMING = Timing(lease_duration=3.0, renew_deadline=2.0, retry_period=0.5)
LEASE = "rc-router"


def _create_lease(api: client.ApiClient, namespace: str) -> None:
    client.CoordinationV1Api(api).create_namespaced_lease(
        namespace,
        {
            "apiVersion": "coordination.k8s.io/v1",
            "kind": "Lease",
            "metadata": {"name": LEASE, "labels": {"app.kubernetes.io/managed-by": "test"}},
            "spec": {},
        },
    )


class Candidate:
    """One elector and the times (monotonic) its callbacks ran."""

    def __init__(self, name: str, api: Any, namespace: str) -> None:
        store = KubernetesLeaseStore(namespace, LEASE, TIMING.request_timeout, api=api)
        self.elector = LeaderElector(store, f"{name}_0000", TIMING)
        self.started: float | None = None
        self.stopped: float | None = None
        self.task: asyncio.Task[None] | None = None

    def campaign(self) -> None:
        async def on_started() -> None:
            self.started = time.monotonic()

        async def on_stopped() -> None:
            self.stopped = time.monotonic()

        self.task = asyncio.create_task(self.elector.run(on_started, on_stopped))

    async def halt(self) -> None:
        if self.task is not None:
            self.task.cancel()
            with contextlib.suppress(BaseException):
                await self.task


async def wait_until(probe: Any, within: float, what: str) -> None:
    deadline = time.monotonic() + within
    while not probe():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {within}s waiting for {what}")
        await asyncio.sleep(0.05)


@pytest.fixture
async def lease_ns(k8s_client: client.ApiClient, namespace: str) -> AsyncIterator[str]:
    _create_lease(k8s_client, namespace)
    yield namespace


async def test_a_standby_takes_over_only_after_the_leader_stopped_leading(
    k8s_client: client.ApiClient, lease_ns: str
) -> None:
    a, b = Candidate("a", k8s_client, lease_ns), Candidate("b", k8s_client, lease_ns)
    a.campaign()
    await wait_until(lambda: a.started is not None, 10, "a to lead")
    b.campaign()
    # b stays a standby while a renews (three lease durations)
    await asyncio.sleep(3 * TIMING.lease_duration)
    assert b.started is None and a.elector.leading
    assert b.elector.holder == a.elector.identity
    # a dies without a goodbye: it renews no more
    await a.halt()
    died = time.monotonic()
    await wait_until(lambda: b.started is not None, 3 * TIMING.lease_duration, "b to take over")
    assert b.started is not None
    took = b.started - died
    assert TIMING.lease_duration - TIMING.retry_period <= took <= TIMING.lease_duration + 2
    # a stopped counting itself the leader before b started
    assert not a.elector.leading
    assert a.elector._valid_until < b.started - (TIMING.lease_duration - TIMING.renew_deadline) / 2
    lease = client.CoordinationV1Api(k8s_client).read_namespaced_lease(LEASE, lease_ns)
    assert lease.spec.holder_identity == b.elector.identity
    assert lease.spec.lease_transitions == 2
    assert lease.metadata.labels == {"app.kubernetes.io/managed-by": "test"}  # kept by renews
    await b.halt()


async def test_a_released_lease_is_taken_within_a_retry_period(
    k8s_client: client.ApiClient, lease_ns: str
) -> None:
    a, b = Candidate("a", k8s_client, lease_ns), Candidate("b", k8s_client, lease_ns)
    a.campaign()
    await wait_until(lambda: a.started is not None, 10, "a to lead")
    b.campaign()
    await asyncio.sleep(1.0)
    await a.halt()
    assert await asyncio.to_thread(a.elector.release)
    released = time.monotonic()
    await wait_until(lambda: b.started is not None, 5, "b to take the released lease")
    assert b.started is not None and b.started - released <= 2 * TIMING.retry_period + 0.5
    await b.halt()


async def test_racing_candidates_elect_exactly_one(
    k8s_client: client.ApiClient, lease_ns: str
) -> None:
    cands = [Candidate(n, k8s_client, lease_ns) for n in "abcd"]
    for c in cands:
        c.campaign()
    await wait_until(lambda: any(c.started for c in cands), 10, "a leader")
    for _ in range(20):  # 5 s: never two leaders at once, and the first one keeps leading
        assert sum(c.elector.leading for c in cands) == 1
        assert sum(c.started is not None for c in cands) == 1
        await asyncio.sleep(0.25)
    for c in cands:
        await c.halt()


async def test_a_leader_cut_off_from_the_api_server_stops_before_another_leads(
    testenv: TestEnv, k8s_client: client.ApiClient, lease_ns: str
) -> None:
    cfg = client.Configuration()
    config.load_kube_config(config_file=testenv.kubeconfig, client_configuration=cfg)
    target = urlparse(cfg.host)
    fwd = CuttableForwarder(target.hostname or "127.0.0.1", target.port or 443)
    await fwd.start()
    cfg.host = f"https://127.0.0.1:{fwd.port}"
    split_api = client.ApiClient(cfg)
    a = Candidate("a", split_api, lease_ns)  # a reaches the API server through the forwarder
    b = Candidate("b", k8s_client, lease_ns)
    try:
        a.campaign()
        await wait_until(lambda: a.started is not None, 10, "a to lead")
        b.campaign()
        await asyncio.sleep(2.0)
        fwd.set_cut(True)
        cut = time.monotonic()
        await wait_until(lambda: a.stopped is not None, 10, "a to fence itself")
        await wait_until(lambda: b.started is not None, 15, "b to take over")
        assert a.stopped is not None and b.started is not None
        # a stopped within its renew deadline (+ one watchdog tick), b started later, with
        # at least most of the lease_duration - renew_deadline margin between them
        assert a.stopped - cut <= TIMING.renew_deadline + TIMING.retry_period
        assert b.started - a.stopped >= (TIMING.lease_duration - TIMING.renew_deadline) / 2
        # the split heals: a (a new candidate after its exit) stays a standby
        fwd.set_cut(False)
        again = Candidate("a2", split_api, lease_ns)
        again.campaign()
        await asyncio.sleep(3 * TIMING.retry_period)
        assert again.started is None and b.elector.leading
        await again.halt()
    finally:
        await a.halt()
        await b.halt()
        await fwd.stop()
        split_api.close()
