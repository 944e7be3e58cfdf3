"""Fan-out end to end: one webhook, three filtered processors, the ``event-router`` CLI as a
separate process.

* ``powered``: knative to a CloudEvents sink, Knative ``filters`` (``prefix`` on ``type``);
* ``prod``: knative to a second sink, an EventBridge ``pattern`` on the data
  (``Vm.Name`` starting with ``prod-``);
* ``audit``: aws_event_bridge to moto in server mode (127.0.0.1), an ``any`` filter; its
  rule's target is an SQS queue, so what arrived is read back through moto's own PutEvents
  and rule matching.

Binary-mode CloudEvents are posted to the webhook. Checked as a user sees it: every
destination gets exactly the events its filters select (by id: nothing missing, nothing
extra, nothing twice); with the default ``ack: delivered`` the 202 comes once the event is
at every sink that selects it; ``/stats`` and ``/metrics`` count what was delivered and
what was filtered out. With one sink down (503), only the requests whose events that sink
selects wait (then 503 with ``Retry-After`` after ``ackTimeoutSeconds``); the others get
202 at once, and the held events arrive by themselves once the sink is back.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import json
import signal
import subprocess
import sys
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml
from prometheus_client.parser import text_string_to_metric_families

from tests.support.moto import AWS, REGION
from tests.support.net import free_ports
from tests.support.polling import wait_until
from tests.support.sink import CloudEventSink

pytestmark = [pytest.mark.integration, pytest.mark.timeout(60)]

EVENT_ROUTER = Path(sys.executable).parent / "event-router"
T = "com.vmware.event.router/"
#: the webhook's ackTimeoutSeconds in these tests (the default is 30 s)
ACK_TIMEOUT = 3.0
PROCESSORS = ("powered", "prod", "audit")


# --- moto: bus, rule, SQS target ---------------------------------------------------------


class AuditBus(AWS):
    """A bus of its own, a rule that takes every CloudEvent 1.0, an SQS queue as its target."""

    def __init__(self, url: str) -> None:
        super().__init__(url)
        # the processor's filters decide; the rule passes every CloudEvent on
        self.rule_arn = self.put_rule("everything", {"detail": {"specversion": ["1.0"]}})
        #: CloudEvent ids that arrived in the queue, in order of reading
        self.ids: list[str] = []

    async def drain(self) -> int:
        """Read (and delete) what is in the queue now; how many messages that was."""
        got = await self.waiting()
        self.ids += [body["detail"]["id"] for body in got]
        return len(got)


@pytest.fixture
def audit(moto_url: str) -> AuditBus:
    return AuditBus(moto_url)


# --- the events --------------------------------------------------------------------------


@dataclass(frozen=True)
class Ev:
    """One CloudEvent to post and the processors whose filters select it (worked out by
    hand from the config below, not by the router's code)."""

    id: str
    type: str
    vm: str | None  # Vm.Name in the JSON data; None: no Vm in the data
    selected_by: frozenset[str]
    text: bool = False  # the data is text/plain, not JSON (a pattern sees no data)

    def headers(self) -> dict[str, str]:
        return {
            "ce-specversion": "1.0",
            "ce-id": self.id,
            "ce-source": "https://vc01.corp.local/sdk",
            "ce-type": self.type,
            "ce-subject": self.type.rsplit("/", 1)[-1],
            "ce-time": "2026-12-01T10:00:00Z",
            "content-type": "text/plain" if self.text else "application/json",
        }

    def body(self) -> bytes:
        if self.text:
            return f"{self.vm} changed".encode()
        data: dict[str, Any] = {"Key": 1, "FullFormattedMessage": f"{self.vm} changed"}
        if self.vm is not None:
            data["Vm"] = {"Name": self.vm}
        return json.dumps(data).encode()

    @property
    def subject(self) -> str:
        return self.type.rsplit("/", 1)[-1]


def ev(id_: str, type_: str, vm: str | None, *selected_by: str, text: bool = False) -> Ev:
    return Ev(id_, type_, vm, frozenset(selected_by), text)


# powered: type starts with com.vmware.event.router/VmPowered
# prod:    data.Vm.Name starts with prod- (JSON data only)
# audit:   type ends with VmCreatedEvent, or subject is exactly VmPoweredOffEvent
MIX = [
    ev("on-prod", T + "VmPoweredOnEvent", "prod-web-01", "powered", "prod"),
    ev("on-dev", T + "VmPoweredOnEvent", "dev-web-01", "powered"),
    ev("off-prod", T + "VmPoweredOffEvent", "prod-db-01", "powered", "prod", "audit"),
    ev("off-dev", T + "VmPoweredOffEvent", "dev-db-01", "powered", "audit"),
    ev("on-novm", T + "VmPoweredOnEvent", None, "powered"),
    ev("created-prod", T + "VmCreatedEvent", "prod-app-07", "prod", "audit"),
    ev("created-test", T + "VmCreatedEvent", "test-app-07", "audit"),
    ev("alarm-prod", T + "AlarmStatusChangedEvent", "prod-web-01", "prod"),
    # a prefix is not a substring, and it is case-sensitive
    ev("renamed-preprod", T + "VmRenamedEvent", "preprod-01"),
    ev("renamed-Prod", T + "VmRenamedEvent", "Prod-02"),
    ev("renamed-production", T + "VmRenamedEvent", "production-04"),
    # data that is not JSON: the pattern does not see "prod-..." in it
    ev("renamed-text", T + "VmRenamedEvent", "prod-03", text=True),
    # the type's prefix must be at the start; the same subject does not make it powered
    ev("foreign-on", "com.example/VmPoweredOnEvent", "prod-x", "prod"),
    # audit's exact filter is on the subject (the type's last part here), not the type
    ev("foreign-off", "com.example/VmPoweredOffEvent", "dev-x", "audit"),
]


def expected(events: list[Ev], processor: str) -> list[str]:
    return sorted(e.id for e in events if processor in e.selected_by)


# --- the router --------------------------------------------------------------------------


def write_config(
    path: Path, hook_port: int, metrics_port: int, sinks: dict[str, str], bus: AuditBus
) -> None:
    config = {
        "apiVersion": "event-router.vmware.com/v1alpha1",
        "kind": "RouterConfig",
        "metadata": {"name": "fanout"},
        "eventProvider": {
            "type": "webhook",
            "name": "hook",
            "webhook": {
                "bindAddress": f"127.0.0.1:{hook_port}",
                "path": "/webhook",
                "ackTimeoutSeconds": ACK_TIMEOUT,
            },
        },
        "eventProcessors": [
            {
                "type": "knative",
                "name": "powered",
                "knative": {"destination": {"uri": sinks["powered"]}},
                "filters": [{"prefix": {"type": T + "VmPowered"}}],
            },
            {
                "type": "knative",
                "name": "prod",
                "knative": {"destination": {"uri": sinks["prod"]}},
                "pattern": {"data": {"Vm": {"Name": [{"prefix": "prod-"}]}}},
            },
            {
                "type": "aws_event_bridge",
                "name": "audit",
                "awsEventBridge": {
                    "region": REGION,
                    "eventBus": bus.bus,
                    "ruleARN": bus.rule_arn,
                    "endpoint": bus.url,
                    "auth": {
                        "type": "aws_access_key",
                        "awsAccessKeyAuth": {"accessKey": "testing", "secretKey": "testing"},
                    },
                },
                "filters": [
                    {
                        "any": [
                            {"suffix": {"type": "VmCreatedEvent"}},
                            {"exact": {"subject": "VmPoweredOffEvent"}},
                        ]
                    }
                ],
            },
        ],
        "metricsProvider": {
            "type": "default",
            "name": "metrics",
            "default": {"bindAddress": f"127.0.0.1:{metrics_port}"},
        },
    }
    path.write_text(yaml.safe_dump(config))


@dataclass
class Running:
    hook: str
    metrics: str
    log: Path
    process: subprocess.Popen[bytes]
    sinks: dict[str, CloudEventSink] = field(default_factory=dict)

    def ids(self, processor: str) -> list[str]:
        return [e["id"] for e in self.sinks[processor].events]

    async def stats(self) -> dict[str, Any]:
        async with httpx.AsyncClient(timeout=5) as client:
            r = await client.get(self.metrics + "/stats")
        r.raise_for_status()
        body: dict[str, Any] = r.json()["vmware.event.router.stats"]
        return body

    async def processor_stats(self) -> dict[str, dict[str, Any]]:
        """``/stats`` entries of the processors, by processor name."""
        return {v["name"]: v for v in (await self.stats()).values() if "name" in v}

    async def samples(self, metric: str) -> list[tuple[dict[str, str], float]]:
        """(labels, value) of every sample of ``metric`` (a full sample name) on /metrics."""
        async with httpx.AsyncClient(timeout=5) as client:
            r = await client.get(self.metrics + "/metrics")
        r.raise_for_status()
        return [
            (dict(s.labels), s.value)
            for family in text_string_to_metric_families(r.text)
            for s in family.samples
            if s.name == metric
        ]

    async def by_processor(self, metric: str) -> dict[str, float]:
        totals: dict[str, float] = collections.defaultdict(float)
        for labels, value in await self.samples(metric):
            totals[labels["processor"]] += value
        return dict(totals)


@contextlib.asynccontextmanager
async def fanout_router(tmp_path: Path, bus: AuditBus) -> AsyncIterator[Running]:
    hook_port, metrics_port = free_ports(2)
    async with CloudEventSink() as powered, CloudEventSink() as prod:
        cfg, log = tmp_path / "config.yaml", tmp_path / "router.log"
        write_config(cfg, hook_port, metrics_port, {"powered": powered.url, "prod": prod.url}, bus)
        with log.open("ab") as out:
            process = subprocess.Popen(  # noqa: ASYNC220 - starting a process does not block
                [str(EVENT_ROUTER), "-config", str(cfg), "-log-level", "info"],
                stdout=out,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
            )
        running = Running(
            hook=f"http://127.0.0.1:{hook_port}/webhook",
            metrics=f"http://127.0.0.1:{metrics_port}",
            log=log,
            process=process,
            sinks={"powered": powered, "prod": prod},
        )
        try:
            async with httpx.AsyncClient(timeout=2) as client:
                deadline = time.monotonic() + 20
                while True:
                    if process.poll() is not None:
                        raise AssertionError(f"router exited: {log.read_text()[-3000:]}")
                    with contextlib.suppress(httpx.TransportError):
                        if (await client.get(running.metrics + "/readyz")).status_code == 200:
                            break
                    if time.monotonic() > deadline:
                        raise AssertionError(f"router not ready: {log.read_text()[-3000:]}")
                    await asyncio.sleep(0.05)
            yield running
        finally:
            if process.poll() is None:
                process.send_signal(signal.SIGTERM)
                try:  # in a thread: the sinks on this loop keep answering meanwhile
                    await asyncio.to_thread(process.wait, 15)
                except subprocess.TimeoutExpired:
                    process.kill()
                    await asyncio.to_thread(process.wait, 5)
    assert process.returncode == 0, log.read_text()[-3000:]


async def post(client: httpx.AsyncClient, url: str, e: Ev) -> httpx.Response:
    return await client.post(url, headers=e.headers(), content=e.body())


# --- tests -------------------------------------------------------------------------------


async def test_each_destination_gets_exactly_what_its_filters_select(
    tmp_path: Path, audit: AuditBus
) -> None:
    # round 2: the same mix, four times over, posted concurrently
    burst = [Ev(f"{e.id}-c{n}", e.type, e.vm, e.selected_by, e.text) for n in range(4) for e in MIX]
    everything = MIX + burst
    async with fanout_router(tmp_path, audit) as router:
        async with httpx.AsyncClient(timeout=10) as client:
            # round 1, one at a time: when the 202 comes, the event is at each destination
            # its filters select (ack: delivered, the default)
            for e in MIX:
                r = await post(client, router.hook, e)
                assert r.status_code == 202, (e.id, r.status_code, r.text)
                for name in ("powered", "prod"):
                    assert (e.id in router.ids(name)) == (name in e.selected_by), (e.id, name)
                await audit.drain()
                assert (e.id in audit.ids) == ("audit" in e.selected_by), e.id

            # round 2, concurrently: each knative sink already has the event at its 202
            async def one(e: Ev) -> None:
                r = await post(client, router.hook, e)
                assert r.status_code == 202, (e.id, r.status_code, r.text)
                for name in ("powered", "prod"):
                    assert (e.id in router.ids(name)) == (name in e.selected_by), (e.id, name)

            await asyncio.gather(*(one(e) for e in burst))
        await audit.drain()
        await asyncio.sleep(0.5)  # anything extra, or sent twice, would have arrived by now
        await audit.drain()

        # exactly what the filters select: nothing missing, nothing extra, nothing twice
        assert sorted(router.ids("powered")) == expected(everything, "powered")
        assert sorted(router.ids("prod")) == expected(everything, "prod")
        assert sorted(audit.ids) == expected(everything, "audit")
        # events pass unchanged: the data of a selected event is what was posted
        on_prod = next(x for x in router.sinks["prod"].events if x["id"] == "on-prod")
        assert on_prod.data == json.loads(MIX[0].body())
        assert on_prod["subject"] == "VmPoweredOnEvent"

        # /stats: the provider counts every event; each processor its deliveries, by subject
        stats = await router.stats()
        assert stats["webhook"]["events_total"] == len(everything), stats["webhook"]
        assert stats["webhook"]["events_err"] == 0
        procs = {v["name"]: v for v in stats.values() if "name" in v}
        assert set(procs) == set(PROCESSORS), list(stats)
        assert procs["powered"]["type"] == procs["prod"]["type"] == "knative"
        assert procs["audit"]["type"] == "aws_event_bridge"
        for name in PROCESSORS:
            want = collections.Counter(e.subject for e in everything if name in e.selected_by)
            got = procs[name]["invocations"]
            assert {k: v["SuccessCount"] for k, v in got.items()} == want, (name, got)
            assert all(v["FailureCount"] == 0 for v in got.values()), (name, got)
            left = {k: procs[name][k] for k in ("queued", "stalled", "dropped", "deadLettered")}
            assert left == dict.fromkeys(left, 0), (name, left)
            skipped = sum(1 for e in everything if name not in e.selected_by)
            assert procs[name]["filtered"] == skipped, (name, procs[name]["filtered"])

        # /metrics: received by the provider; delivered per processor and type; the
        # events a processor's filters skipped never reach it and are counted as filtered
        received = await router.samples("event_router_events_received_total")
        assert sum(v for _, v in received) == len(everything)
        assert {lab["provider"] for lab, _ in received} == {"webhook"}
        delivered: dict[tuple[str, str], float] = collections.defaultdict(float)
        for labels, value in await router.samples("event_router_events_delivered_total"):
            delivered[labels["processor"], labels["type"]] += value
        want_delivered = collections.Counter(
            (name, e.type) for e in everything for name in e.selected_by
        )
        assert dict(delivered) == dict(want_delivered)
        settled = await router.by_processor("event_router_delivery_latency_seconds_count")
        for name in PROCESSORS:
            selected = len(expected(everything, name))
            assert settled.get(name, 0) == selected, (name, settled)
        filtered: dict[tuple[str, str], float] = collections.defaultdict(float)
        for labels, value in await router.samples("event_router_events_filtered_total"):
            filtered[labels["processor"], labels["type"]] += value
        want_filtered = collections.Counter(
            (name, e.type) for e in everything for name in PROCESSORS if name not in e.selected_by
        )
        assert dict(filtered) == dict(want_filtered)
        assert sum((await router.by_processor("event_router_events_failed_total")).values()) == 0
        assert await router.samples("event_router_requests_rejected_total") == []
        depth = await router.by_processor("event_router_queue_depth")
        assert depth == dict.fromkeys(PROCESSORS, 0.0)


async def test_a_sink_down_holds_only_the_requests_it_selects(
    tmp_path: Path, audit: AuditBus
) -> None:
    held = [
        ev("h-on-prod", T + "VmPoweredOnEvent", "prod-web-02", "powered", "prod"),
        ev("h-off-dev", T + "VmPoweredOffEvent", "dev-db-02", "powered", "audit"),
        ev("h-on-dev", T + "VmPoweredOnEvent", "dev-web-02", "powered"),
    ]
    prompt = [
        ev("p-created-prod", T + "VmCreatedEvent", "prod-app-08", "prod", "audit"),
        ev("p-created-test", T + "VmCreatedEvent", "test-app-08", "audit"),
        ev("p-alarm-prod", T + "AlarmStatusChangedEvent", "prod-web-02", "prod"),
        ev("p-renamed", T + "VmRenamedEvent", "dev-web-02"),
    ]
    answers: dict[str, tuple[httpx.Response, float]] = {}
    async with fanout_router(tmp_path, audit) as router:
        powered = router.sinks["powered"]
        powered.down = 503
        async with httpx.AsyncClient(timeout=ACK_TIMEOUT + 7) as client:

            async def one(e: Ev) -> None:
                t0 = time.monotonic()
                r = await post(client, router.hook, e)
                answers[e.id] = (r, time.monotonic() - t0)

            # the held requests first, so the prompt ones are posted while those wait
            waiting = [asyncio.create_task(one(e)) for e in held]
            await wait_until(lambda: powered.requests >= len(held), 10, "deliveries refused")
            await asyncio.gather(*(one(e) for e in prompt))
            for e in prompt:
                r, took = answers[e.id]
                assert r.status_code == 202, (e.id, r.status_code, r.text)
                assert took < 2.0, (e.id, took)
            assert not any(t.done() for t in waiting), "a held request was answered early"
            await asyncio.gather(*waiting)
        for e in held:
            r, took = answers[e.id]
            assert r.status_code == 503, (e.id, r.status_code, r.text)
            assert int(r.headers["Retry-After"]) >= 1, r.headers
            assert "ackTimeoutSeconds" in r.text, r.text
            assert ACK_TIMEOUT - 0.2 <= took < ACK_TIMEOUT + 3, (e.id, took)

        # while powered is down: the other destinations have their copies, powered none
        await audit.drain()
        assert router.ids("powered") == []
        assert sorted(router.ids("prod")) == expected(held + prompt, "prod")
        assert sorted(audit.ids) == expected(held + prompt, "audit")
        procs = await router.processor_stats()
        assert procs["powered"]["stalled"] == len(held), procs["powered"]
        assert "stalledSince" in procs["powered"]
        assert procs["prod"]["stalled"] == procs["audit"]["stalled"] == 0
        stalled = await router.by_processor("event_router_delivery_stalled_events")
        assert stalled == {"powered": len(held), "prod": 0.0, "audit": 0.0}
        retries = await router.samples("event_router_delivery_retries_total")
        assert {lab["processor"] for lab, _ in retries} == {"powered"}, retries
        assert {lab["reason"] for lab, _ in retries} == {"HTTP 503"}, retries
        rejected = await router.samples("event_router_requests_rejected_total")
        assert [(lab["status"], v) for lab, v in rejected] == [("503", len(held))]

        # back up: the held events arrive without any client retry, once each
        powered.down = None
        back = time.monotonic()
        await wait_until(
            lambda: len(powered.events) >= len(held),
            20,
            lambda: f"the held events at the sink (got {router.ids('powered')})",
        )
        recovered_in = time.monotonic() - back
        await asyncio.sleep(0.5)  # a duplicate would have arrived by now
        await audit.drain()
        assert sorted(router.ids("powered")) == expected(held, "powered")
        assert sorted(router.ids("prod")) == expected(held + prompt, "prod")
        assert sorted(audit.ids) == expected(held + prompt, "audit")
        procs = await router.processor_stats()
        assert procs["powered"]["stalled"] == 0 and "stalledSince" not in procs["powered"]
        powered_counts = procs["powered"]["invocations"]
        assert sum(v["SuccessCount"] for v in powered_counts.values()) == len(held)
        assert sum(v["FailureCount"] for v in powered_counts.values()) >= len(held)
        delivered = await router.by_processor("event_router_events_delivered_total")
        assert delivered == {
            name: float(len(expected(held + prompt, name))) for name in PROCESSORS
        }, delivered
        stats = await router.stats()
        assert stats["webhook"]["events_total"] == len(held) + len(prompt)
        assert stats["webhook"]["events_err"] == 0  # held, then delivered: not an error
    print(f"held events delivered {recovered_in:.1f}s after the sink came back")
    text = router.log.read_text()
    assert "processor powered: delivery stalled on event" in text
    assert "delivered after a" in text
