"""The router core with in-test providers and processors (plain implementations of the
Provider/Processor contracts): ordering, concurrency, tickets, backpressure, stop."""

from __future__ import annotations

import asyncio
import base64
import random
import ssl
from typing import Any

import pytest
from cloudevents.http import CloudEvent

from event_router.checkpoints import CheckpointTracker
from event_router.config.loader import parse_config
from event_router.core import DeliveryError, Processor, Provider, Publisher, RouterContext
from event_router.router import ProcessorSlot, Router, RouterClosed

CONFIG = parse_config(
    {
        "apiVersion": "event-router.vmware.com/v1alpha1",
        "kind": "RouterConfig",
        "metadata": {"name": "core"},
        "eventProvider": {
            "type": "webhook",
            "name": "p",
            "webhook": {"bindAddress": "127.0.0.1:8080", "path": "/hook"},
        },
        "eventProcessor": {
            "type": "knative",
            "name": "k",
            "knative": {"destination": {"uri": "http://127.0.0.1:9/"}},
        },
    }
)


def ev(n: int, subject: str = "VmCreatedEvent") -> CloudEvent:
    return CloudEvent({"type": "t", "source": "/s", "id": str(n), "subject": subject}, {"n": n})


class IdleProvider(Provider):
    """Connects, then waits; the test publishes into the router directly."""

    type = "test"

    def __init__(self, context: RouterContext, fail: Exception | None = None) -> None:
        super().__init__(context)
        self.fail = fail
        self.closed = False

    def address(self) -> str:
        return "test://provider"

    async def run(self, publisher: Publisher) -> None:
        if self.fail is not None:
            raise self.fail
        self.ready = True
        await asyncio.Event().wait()

    async def close(self) -> None:
        self.closed = True


class RecordingProcessor(Processor):
    type = "recording"

    def __init__(
        self,
        context: RouterContext,
        *,
        delay: float = 0.0,
        jitter: float = 0.0,
        fail_ids: frozenset[str] = frozenset(),
        max_in_flight: int = 1,
        start_error: Exception | None = None,
        down: bool = False,
    ) -> None:
        super().__init__(context)
        self.delay, self.jitter, self.fail_ids = delay, jitter, fail_ids
        #: while True, every delivery fails with a retryable error (a sink that is down)
        self.down = down
        self.received: list[CloudEvent] = []
        self.max_in_flight = max_in_flight
        self.start_error = start_error
        self.started: list[str] = []
        self.delivered: list[str] = []
        self.in_flight = 0
        self.peak = 0
        self.gate: asyncio.Event | None = None
        self.closed = False

    def address(self) -> str:
        return "test://processor"

    async def start(self) -> None:
        if self.start_error:
            raise self.start_error

    async def process(self, event: CloudEvent) -> None:
        self.started.append(event["id"])
        self.in_flight += 1
        self.peak = max(self.peak, self.in_flight)
        try:
            if self.gate is not None:
                await self.gate.wait()
            await asyncio.sleep(self.delay + random.random() * self.jitter)
            if self.down:
                raise DeliveryError(f"HTTP 503 for {event['id']}", retryable=True, status=503)
            if event["id"] in self.fail_ids:
                raise DeliveryError(f"refused {event['id']}")
            self.delivered.append(event["id"])
            self.received.append(event)
        finally:
            self.in_flight -= 1

    async def close(self) -> None:
        self.closed = True


def make_router(*procs: Processor, queue_size: int = 100, **slot_kw: Any) -> Router:
    context = RouterContext(CONFIG)
    slots = [
        ProcessorSlot(p, queue_size=queue_size, name=f"p{i}", **slot_kw)
        for i, p in enumerate(procs)
    ]
    return Router(context, provider=IdleProvider(context), processors=slots)


async def test_order_is_kept_with_one_in_flight() -> None:
    proc = RecordingProcessor(RouterContext(CONFIG), jitter=0.003)
    router = make_router(proc)
    await router.start()
    await router.wait_ready(2)
    tickets = [await router.publish(ev(i)) for i in range(50)]
    assert all(await asyncio.gather(*tickets))
    assert proc.delivered == [str(i) for i in range(50)]
    assert proc.peak == 1
    await router.stop()
    assert proc.closed and router.provider.closed  # type: ignore[attr-defined]


async def test_more_in_flight_keeps_dispatch_order() -> None:
    proc = RecordingProcessor(RouterContext(CONFIG), jitter=0.01, max_in_flight=4)
    router = make_router(proc)
    await router.start()
    tickets = [await router.publish(ev(i)) for i in range(40)]
    assert all(await asyncio.gather(*tickets))
    assert proc.started == [str(i) for i in range(40)]
    assert sorted(proc.delivered, key=int) == [str(i) for i in range(40)]
    assert proc.peak == 4
    await router.stop()


async def test_a_rejected_event_without_dead_letter_sink_is_dropped_counted_and_passed() -> None:
    proc = RecordingProcessor(RouterContext(CONFIG), fail_ids=frozenset({"3"}))
    router = make_router(proc)
    await router.start()
    tracker: CheckpointTracker[int] = CheckpointTracker()
    tickets = []
    for i in range(6):
        t = await router.publish(ev(i))
        tracker.add(i, t)
        tickets.append(t)
    results = await asyncio.gather(*tickets)
    assert results == [True] * 6  # settled: a poison event no longer blocks the stream
    assert tracker.advance() == 5
    stats = router.stats()["vmware.event.router.stats"]
    assert stats["test"]["events_total"] == 6 and stats["test"]["events_err"] == 0
    assert stats["recording"]["dropped"] == 1
    assert stats["recording"]["invocations"]["VmCreatedEvent"] == {
        "SuccessCount": 5,
        "FailureCount": 1,
    }
    assert 'event_router_events_dropped_total{processor="p0",type="t"} 1.0' in (
        router.metrics.render().decode()
    )
    await router.stop()


@pytest.fixture
def fast_stall(monkeypatch: pytest.MonkeyPatch) -> None:
    import event_router.router as router_module

    monkeypatch.setattr(router_module, "STALL_FIRST_DELAY", 0.01)
    monkeypatch.setattr(router_module, "STALL_MAX_DELAY", 0.05)


@pytest.mark.usefixtures("fast_stall")
async def test_a_sink_that_is_down_stalls_the_stream_which_resumes_in_order() -> None:
    proc = RecordingProcessor(RouterContext(CONFIG), down=True)
    router = make_router(proc, queue_size=3)
    changes: list[int] = []  # the stall report hears of each start and end of a stall
    router.stall_listener = lambda: changes.append(
        sum(s["stalled"] for s in router.processor_states())
    )
    await router.start()
    tracker: CheckpointTracker[int] = CheckpointTracker()
    tickets = []
    for i in range(4):  # one at the processor, three queued: the queue is full
        t = await router.publish(ev(i))
        tracker.add(i, t)
        tickets.append(t)
    blocked = asyncio.create_task(router.publish(ev(4)))  # backpressure: waits
    await asyncio.sleep(0.3)  # many of the router's own retry rounds
    assert not any(t.done() for t in tickets) and not blocked.done()
    assert tracker.advance() is None  # the checkpoint holds
    stats = router.stats()["vmware.event.router.stats"]["recording"]
    assert stats["stalled"] == 1 and "stalledSince" in stats
    assert 'event_router_delivery_stalled_events{processor="p0"} 1.0' in (
        router.metrics.render().decode()
    )
    proc.down = False  # the sink recovers: no restart, nothing lost, order kept
    tickets.append(await asyncio.wait_for(blocked, 2))
    assert all(await asyncio.wait_for(asyncio.gather(*tickets), 2))
    assert proc.delivered == ["0", "1", "2", "3", "4"]
    assert router.stats()["vmware.event.router.stats"]["recording"]["stalled"] == 0
    assert changes == [1, 0], changes  # once stalled, once recovered (not per retry round)
    await router.stop()


async def test_fan_out_ticket_needs_every_processor_and_filters_apply() -> None:
    ctx = RouterContext(CONFIG)
    a = RecordingProcessor(ctx)
    b = RecordingProcessor(ctx, fail_ids=frozenset({"2"}))
    c = RecordingProcessor(ctx)
    b.gate = asyncio.Event()
    only_odd = ProcessorSlot(c, name="odd", filter=lambda e: int(e["id"]) % 2 == 1)
    router = Router(
        ctx,
        provider=IdleProvider(ctx),
        processors=[ProcessorSlot(a, name="a"), ProcessorSlot(b, name="b"), only_odd],
    )
    await router.start()
    tickets = [await router.publish(ev(i)) for i in range(4)]
    await asyncio.sleep(0.05)
    assert a.delivered == ["0", "1", "2", "3"] and c.delivered == ["1", "3"]
    assert not any(t.done() for t in tickets)  # b has not settled them yet
    b.gate.set()
    assert await asyncio.gather(*tickets) == [True, True, True, True]
    assert b.delivered == ["0", "1", "3"]  # 2 was rejected (dropped: no dead-letter sink)
    await router.stop()


async def test_a_rejected_event_goes_to_the_dead_letter_sink_with_knative_extensions() -> None:
    ctx = RouterContext(CONFIG)
    dls = RecordingProcessor(ctx)

    class Rejecting(RecordingProcessor):
        async def process(self, event: CloudEvent) -> None:
            if event["id"] == "1":
                raise DeliveryError("HTTP 400", status=400, body=b'{"error":"bad"}')
            await super().process(event)

    proc = Rejecting(ctx)
    router = Router(
        ctx,
        provider=IdleProvider(ctx),
        processors=[ProcessorSlot(proc, name="main", dead_letter=dls)],
    )
    await router.start()
    results = await asyncio.gather(*[await router.publish(ev(i)) for i in range(3)])
    assert results == [True, True, True]
    assert proc.delivered == ["0", "2"]
    (letter,) = dls.received
    assert letter["id"] == "1" and letter.get_data() == {"n": 1}
    assert letter["knativeerrordest"] == "test://processor"
    assert letter["knativeerrorcode"] == "400"
    assert base64.b64decode(letter["knativeerrordata"]) == b'{"error":"bad"}'
    stats = router.stats()["vmware.event.router.stats"]["recording"]
    assert stats["deadLettered"] == 1 and stats["dropped"] == 0
    await router.stop()


@pytest.mark.usefixtures("fast_stall")
async def test_a_dead_letter_sink_that_is_down_holds_the_checkpoint() -> None:
    ctx = RouterContext(CONFIG)
    proc = RecordingProcessor(ctx, fail_ids=frozenset({"0"}))
    dls = RecordingProcessor(ctx, down=True)
    router = Router(
        ctx,
        provider=IdleProvider(ctx),
        processors=[ProcessorSlot(proc, name="main", dead_letter=dls)],
    )
    await router.start()
    ticket = await router.publish(ev(0))
    await asyncio.sleep(0.2)
    assert not ticket.done()  # neither delivered nor dead-lettered: not settled
    dls.down = False
    assert await asyncio.wait_for(ticket, 2)
    assert [e["id"] for e in dls.received] == ["0"]
    await router.stop()


@pytest.mark.usefixtures("fast_stall")
async def test_stop_while_stalled_leaves_the_event_unsettled() -> None:
    proc = RecordingProcessor(RouterContext(CONFIG), down=True)
    router = make_router(proc)
    await router.start()
    ticket = await router.publish(ev(0))
    await asyncio.sleep(0.1)
    await router.stop(timeout=0.2)
    assert ticket.result() is False  # not acknowledged: replayed from the checkpoint


async def test_backpressure_publish_waits_while_queue_is_full() -> None:
    proc = RecordingProcessor(RouterContext(CONFIG))
    proc.gate = asyncio.Event()
    router = make_router(proc, queue_size=2)
    await router.start()
    t0 = await router.publish(ev(0))  # taken by the worker, blocked at the gate
    await asyncio.sleep(0.01)
    await router.publish(ev(1))
    await router.publish(ev(2))  # queue now full (2)
    blocked = asyncio.create_task(router.publish(ev(3)))
    await asyncio.sleep(0.05)
    assert not blocked.done()  # waits, is not dropped
    proc.gate.set()
    ticket = await asyncio.wait_for(blocked, 2)
    assert await ticket and await t0
    assert proc.delivered == ["0", "1", "2", "3"]
    await router.stop()


async def test_stop_drains_then_closes_and_refuses_new_events() -> None:
    proc = RecordingProcessor(RouterContext(CONFIG), delay=0.005)
    router = make_router(proc)
    await router.start()
    tickets = [await router.publish(ev(i)) for i in range(20)]
    await router.stop(timeout=5)
    assert [t.result() for t in tickets] == [True] * 20
    with pytest.raises(RouterClosed):
        await router.publish(ev(99))
    assert not router.ready


async def test_stop_timeout_settles_leftovers_as_not_delivered() -> None:
    proc = RecordingProcessor(RouterContext(CONFIG))
    proc.gate = asyncio.Event()  # never opens
    router = make_router(proc, queue_size=1)
    await router.start()
    tickets = [await router.publish(ev(0))]
    await asyncio.sleep(0.01)
    tickets.append(await router.publish(ev(1)))
    blocked = asyncio.create_task(router.publish(ev(2)))  # waits for room
    await asyncio.sleep(0.01)
    await router.stop(timeout=0.2)
    assert [t.result() for t in tickets] == [False, False]
    with pytest.raises(RouterClosed):
        await blocked
    stats = router.stats()["vmware.event.router.stats"]
    assert stats["test"]["events_err"] == 2


async def test_processor_start_error_is_raised_and_started_ones_closed() -> None:
    ctx = RouterContext(CONFIG)
    good = RecordingProcessor(ctx)
    bad = RecordingProcessor(ctx, start_error=ValueError("eventProcessor.x: broken"))
    router = Router(
        ctx, provider=IdleProvider(ctx), processors=[ProcessorSlot(good), ProcessorSlot(bad)]
    )
    with pytest.raises(ValueError, match="broken"):
        await router.start()
    assert good.closed


async def test_provider_failure_surfaces_in_wait_and_wait_ready() -> None:
    ctx = RouterContext(CONFIG)
    router = Router(
        ctx,
        provider=IdleProvider(ctx, fail=PermissionError("eventProvider.x: bad credentials")),
        processors=[ProcessorSlot(RecordingProcessor(ctx))],
    )
    await router.start()
    with pytest.raises(PermissionError, match="bad credentials"):
        await router.wait_ready(2)
    with pytest.raises(PermissionError):
        await router.wait()
    await router.stop(1)


async def test_routers_have_separate_metrics() -> None:
    ctx = RouterContext(CONFIG, labels={"namespace": "ns1", "name": "r1"})
    r1 = make_router(RecordingProcessor(ctx))
    r2 = make_router(RecordingProcessor(RouterContext(CONFIG)))
    await r1.start()
    await r2.start()
    await (await r1.publish(ev(1)))
    text1, text2 = r1.metrics.render().decode(), r2.metrics.render().decode()
    assert 'event_router_events_delivered_total{processor="p0",type="t"} 1.0' in text1
    assert "event_router_events_delivered_total{" not in text2
    await r1.stop()
    await r2.stop()
    labelled = Router(
        ctx, provider=IdleProvider(ctx), processors=[ProcessorSlot(RecordingProcessor(ctx))]
    )
    await labelled.start()
    await (await labelled.publish(ev(1)))
    assert 'name="r1",namespace="ns1"' in labelled.metrics.render().decode()
    await labelled.stop()


def test_an_insecure_tls_context_is_the_default_one_without_ca_certificates() -> None:
    """insecureSSL verifies nothing, so its context loads no CA bundle (memory), and is
    otherwise create_default_context's with verification off."""
    insecure = RouterContext(CONFIG).ssl_context(True)
    reference = ssl.create_default_context()
    reference.check_hostname = False
    reference.verify_mode = ssl.CERT_NONE
    assert insecure.cert_store_stats()["x509"] == 0
    assert (insecure.check_hostname, insecure.verify_mode) == (False, ssl.CERT_NONE)
    for attr in ("protocol", "options", "minimum_version", "maximum_version", "verify_flags"):
        assert getattr(insecure, attr) == getattr(reference, attr), attr
    assert [c["name"] for c in insecure.get_ciphers()] == [
        c["name"] for c in reference.get_ciphers()
    ]
    verified = RouterContext(CONFIG).ssl_context(False)
    assert (verified.check_hostname, verified.verify_mode) == (True, ssl.CERT_REQUIRED)
