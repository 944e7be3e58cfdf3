"""A router as a standby (leader election): ready without its provider, the provider starts
when it leads, fencing stops deliveries at once; the CLI's leader-election settings and the
fenced checkpoint store."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from event_router.cli import FencedStore, leader_elector
from event_router.config.loader import ConfigError
from event_router.core import RouterContext
from event_router.leader import LeaderElector, LeaseRecord, Timing, timing_from_env
from tests.unit.test_router_core import CONFIG, RecordingProcessor, ev, make_router


async def test_a_standby_is_ready_without_its_provider_and_streams_once_it_leads() -> None:
    proc = RecordingProcessor(RouterContext(CONFIG))
    router = make_router(proc)
    await router.start(lead=False)
    try:
        assert router.ready and router.role == "standby"
        assert router._provider_task is None and not router.provider.ready
        waiter = asyncio.create_task(router.wait())
        await asyncio.sleep(0.05)
        assert not waiter.done()  # a standby's wait lasts until it leads (or stops)
        router.lead()
        await asyncio.sleep(0.05)
        assert router.role == "leader" and router.provider.ready and router.ready
        await (await router.publish(ev(1)))
        assert proc.delivered == ["1"]
        assert not waiter.done()
    finally:
        await router.stop(timeout=1)
    await asyncio.wait_for(waiter, 2)


async def test_fencing_cancels_the_delivery_in_flight_and_refuses_new_events() -> None:
    proc = RecordingProcessor(RouterContext(CONFIG))
    proc.gate = asyncio.Event()  # the sink never answers
    router = make_router(proc)
    await router.start()
    ticket = await router.publish(ev(1))
    await asyncio.sleep(0.05)
    assert proc.in_flight == 1
    router.fence()
    assert await asyncio.wait_for(ticket, 1) is False  # not delivered: the checkpoint holds
    assert proc.delivered == [] and not router.ready
    with pytest.raises(Exception, match="shutting down"):
        await router.publish(ev(2))
    await router.stop(timeout=0)


def test_timing_is_checked_and_names_the_variable() -> None:
    assert timing_from_env({}) == Timing(6.0, 4.0, 1.0)
    with pytest.raises(ValueError, match=r"EVENT_ROUTER_LEASE_DURATION .* greater than"):
        timing_from_env({"EVENT_ROUTER_LEASE_DURATION": "3"})
    with pytest.raises(ValueError, match="EVENT_ROUTER_RETRY_PERIOD: expected seconds"):
        timing_from_env({"EVENT_ROUTER_RETRY_PERIOD": "1s"})


def test_leader_election_needs_a_namespace_and_valid_timing() -> None:
    assert leader_elector({}) is None
    with pytest.raises(ConfigError) as e:
        leader_elector({"EVENT_ROUTER_LEASE": "rc-router"})
    assert "EVENT_ROUTER_NAMESPACE: required when EVENT_ROUTER_LEASE is set" in e.value.errors[0]
    with pytest.raises(ConfigError) as e:
        leader_elector(
            {
                "EVENT_ROUTER_LEASE": "rc-router",
                "EVENT_ROUTER_NAMESPACE": "ns",
                "EVENT_ROUTER_RENEW_DEADLINE": "9",
            }
        )
    assert "EVENT_ROUTER_LEASE_DURATION" in e.value.errors[0]
    elector = leader_elector(
        {
            "EVENT_ROUTER_LEASE": "rc-router",
            "EVENT_ROUTER_NAMESPACE": "ns",
            "EVENT_ROUTER_POD_NAME": "p-1",
        }
    )
    assert elector is not None and elector.identity.startswith("p-1_")
    assert elector.store.describe() == "Lease ns/rc-router"


class _Store:
    """The checkpoint store under the fence: records what was written."""

    def __init__(self) -> None:
        self.saved: list[Any] = []

    def describe(self) -> str:
        return "configmap ns/rc-checkpoints key vc"

    async def load(self) -> Any:
        return None

    async def save(self, checkpoint: Any) -> None:
        self.saved.append(checkpoint)


class _Lease:
    def describe(self) -> str:
        return "Lease ns/rc-router"

    def get(self) -> LeaseRecord:
        return LeaseRecord("", 0, None, None, 0, "1")

    def update(self, record: LeaseRecord) -> LeaseRecord:
        return LeaseRecord(record.holder, 6, None, None, record.transitions, "2")


async def test_the_fenced_store_writes_only_while_this_replica_leads() -> None:
    now = [100.0]
    elector = LeaderElector(_Lease(), "me_1", Timing(), clock=lambda: now[0])
    inner = _Store()
    store = FencedStore(inner, elector)  # type: ignore[arg-type]
    with pytest.raises(RuntimeError, match="no longer holds Lease ns/rc-router"):
        await store.save({"a": 1})
    assert elector.try_acquire_or_renew()
    elector._was_leader = True
    await store.save({"a": 2})
    now[0] += 4.0  # the renew deadline passed without a renew
    with pytest.raises(RuntimeError):
        await store.save({"a": 3})
    assert inner.saved == [{"a": 2}]
