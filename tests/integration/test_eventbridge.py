"""The aws_event_bridge processor against moto in server mode (127.0.0.1, ephemeral port).

Each test creates its own event bus, a rule with a pattern and an SQS queue as the rule's
target; what the processor sends is then read back from the queue, i.e. it went through
moto's own PutEvents and rule matching. Failed entries are injected by a small proxy in
front of moto that answers PutEvents like EventBridge does for partially failed batches
(``FailedEntryCount`` > 0, ``ErrorCode`` on the failed entries).
"""

from __future__ import annotations

import asyncio
import collections
import json
import logging
import uuid
from collections.abc import Callable
from typing import Any

import boto3
import httpx
import pytest
from aiohttp import ClientSession, web
from cloudevents.conversion import to_dict
from cloudevents.http import CloudEvent

from event_router.core import DeliveryError, RouterContext
from event_router.delivery import RetryPolicy
from event_router.processors import processor_class
from event_router.processors.eventbridge import (
    MAX_BATCH_BYTES,
    MAX_BATCH_ENTRIES,
    EventBridgeProcessor,
    EventBridgeSetupError,
    entry_size,
)
from event_router.router import Router
from tests.support.configs import webhook_context
from tests.support.moto import AWS, KEYS, REGION
from tests.support.net import free_port
from tests.support.polling import wait_until

ACCOUNT = "123456789012"


@pytest.fixture
def aws(moto_url: str) -> AWS:
    return AWS(moto_url)


def router_context(
    endpoint: str,
    bus: str,
    rule_arn: str,
    refresh: float = 300.0,
    port: int = 8080,
    auth: dict[str, Any] | None = None,
) -> RouterContext:
    return webhook_context(
        "eventbridge-test",
        {
            "type": "aws_event_bridge",
            "name": "eb",
            "awsEventBridge": {
                "region": REGION,
                "eventBus": bus,
                "ruleARN": rule_arn,
                "endpoint": endpoint,
                "ruleRefreshSeconds": refresh,
                "auth": auth
                or {
                    "type": "aws_access_key",
                    "awsAccessKeyAuth": {"accessKey": "testing", "secretKey": "testing"},
                },
            },
        },
        port=port,
    )


def vm_event(subject: str, name: str = "Linux-01", n: int = 0) -> CloudEvent:
    return CloudEvent(
        {
            "id": f"{subject}-{name}-{n}",
            "source": "https://vcenter.local/sdk",
            "type": "com.vmware.event.router/event",
            "subject": subject,
            "time": "2026-11-25T12:00:00Z",
        },
        {"Key": n, "Vm": {"Name": name}, "FullFormattedMessage": f"{name} {subject}"},
    )


PATTERN = {
    "detail": {
        "subject": [{"prefix": "VmPowered"}],
        "data": {"Vm": {"Name": [{"shellstyle": "Linux*"}]}},
    }
}
# moto has no shellstyle: the rule in moto uses wildcard (same meaning here)
MOTO_PATTERN = {
    "detail": {
        "subject": [{"prefix": "VmPowered"}],
        "data": {"Vm": {"Name": [{"wildcard": "Linux*"}]}},
    }
}


async def started(ctx: RouterContext, **kwargs: Any) -> EventBridgeProcessor:
    proc = EventBridgeProcessor(ctx, **kwargs)
    await proc.start()
    return proc


async def test_registry_resolves_the_processor(aws: AWS) -> None:
    assert processor_class("aws_event_bridge") is EventBridgeProcessor


async def test_matching_events_arrive_in_the_queue_others_do_not(aws: AWS) -> None:
    arn = aws.put_rule("vm-power", MOTO_PATTERN)
    proc = await started(router_context(aws.url, aws.bus, arn))
    try:
        assert proc.pattern_text == json.dumps(MOTO_PATTERN)
        sent = [
            vm_event("VmPoweredOnEvent", "Linux-01", 1),
            vm_event("VmPoweredOffEvent", "Linux-02", 2),
            vm_event("VmPoweredOnEvent", "Windows-01", 3),  # filtered: name
            vm_event("VmCreatedEvent", "Linux-03", 4),  # filtered: subject
        ]
        await asyncio.gather(*(proc.process(e) for e in sent))
        got = await aws.received(2)
        await asyncio.sleep(0.3)
        got += await aws.received(0, timeout=0.2)
        assert sorted(m["detail"]["id"] for m in got) == [
            "VmPoweredOffEvent-Linux-02-2",
            "VmPoweredOnEvent-Linux-01-1",
        ]
        first = next(m for m in got if m["detail"]["id"].endswith("-1"))
        # the envelope EventBridge built from our entry
        assert first["source"] == "https://vcenter.local/sdk"
        assert first["detail-type"] == "VmPoweredOnEvent"
        assert first["detail"]["specversion"] == "1.0"
        assert first["detail"]["data"]["Vm"]["Name"] == "Linux-01"
        assert proc.counters["filtered"] == 2
        assert proc.counters["sent"] == 2
    finally:
        await proc.close()


async def test_event_bus_given_as_an_arn(aws: AWS) -> None:
    arn = aws.put_rule("by-arn", {"detail": {"subject": ["VmPoweredOnEvent"]}})
    bus_arn = aws.events.describe_event_bus(Name=aws.bus)["Arn"]
    assert bus_arn.endswith(f":event-bus/{aws.bus}")
    proc = await started(router_context(aws.url, bus_arn, arn))
    try:
        assert proc.bus_name == aws.bus
        await proc.process(vm_event("VmPoweredOnEvent", n=3))
        await proc.process(vm_event("VmPoweredOffEvent", n=4))  # filtered
        assert (proc.counters["sent"], proc.counters["filtered"]) == (1, 1)
    finally:
        await proc.close()
    assert [m["detail"]["data"]["Key"] for m in await aws.received(1)] == [3]
    assert await aws.received(1, timeout=0.3) == []


async def test_detail_type_falls_back_to_type_without_subject(aws: AWS) -> None:
    arn = aws.put_rule("by-type", {"detail-type": ["com.example.ping"]})
    proc = await started(router_context(aws.url, aws.bus, arn))
    try:
        event = CloudEvent({"source": "urn:test", "type": "com.example.ping", "id": "p1"}, {"a": 1})
        await proc.process(event)
        (msg,) = await aws.received(1)
        assert msg["detail-type"] == "com.example.ping"
        assert msg["detail"]["data"] == {"a": 1}
    finally:
        await proc.close()


async def test_batches_fill_under_load(aws: AWS) -> None:
    arn = aws.put_rule("all", {"detail": {"subject": [{"exists": True}]}})
    proc = await started(router_context(aws.url, aws.bus, arn))
    try:
        events = [vm_event("VmPoweredOnEvent", n=i) for i in range(60)]
        await asyncio.gather(*(proc.process(e) for e in events))
        got = await aws.received(60, timeout=10)
        assert sorted(m["detail"]["data"]["Key"] for m in got) == list(range(60))
        assert proc.counters["put_events_calls"] < 20, proc.counters
        assert proc.mean_batch > 3
    finally:
        await proc.close()


async def test_changed_rule_applies_after_the_re_read(aws: AWS) -> None:
    arn = aws.put_rule("changing", {"detail": {"subject": ["VmPoweredOnEvent"]}})
    proc = await started(router_context(aws.url, aws.bus, arn, refresh=0.3))
    try:
        await proc.process(vm_event("VmPoweredOffEvent", n=1))
        assert proc.counters["filtered"] == 1
        # widen the rule in "AWS"; until the re-read the processor still filters
        aws.events.put_rule(
            Name="changing",
            EventBusName=aws.bus,
            EventPattern=json.dumps({"detail": {"subject": [{"prefix": "VmPowered"}]}}),
        )
        await wait_until(lambda: proc.counters["pattern_changes"] > 0, 5.0, "the re-read")
        assert proc.counters["pattern_changes"] == 1
        await proc.process(vm_event("VmPoweredOffEvent", n=2))
        got = await aws.received(1)
        assert [m["detail"]["data"]["Key"] for m in got] == [2]
    finally:
        await proc.close()


async def test_missing_rule_is_a_startup_error_listing_the_rules(aws: AWS) -> None:
    aws.put_rule("present", {"detail": {"subject": ["x"]}})
    arn = f"arn:aws:events:{REGION}:{ACCOUNT}:rule/{aws.bus}/absent"
    proc = EventBridgeProcessor(router_context(aws.url, aws.bus, arn))
    with pytest.raises(EventBridgeSetupError) as info:
        await proc.start()
    await proc.close()
    msg = str(info.value)
    assert "eventProcessor.awsEventBridge.ruleARN" in msg
    assert arn in msg and "not found" in msg and "present" in msg


async def test_schedule_rule_without_pattern_is_a_startup_error(moto_url: str) -> None:
    # schedule rules live on the default bus only
    events = boto3.client("events", region_name=REGION, endpoint_url=moto_url, **KEYS)
    name = f"cron-{uuid.uuid4().hex[:6]}"
    arn = events.put_rule(Name=name, ScheduleExpression="rate(5 minutes)")["RuleArn"]
    proc = EventBridgeProcessor(router_context(moto_url, "default", arn))
    with pytest.raises(EventBridgeSetupError, match="has no EventPattern"):
        await proc.start()
    await proc.close()


async def test_unsupported_pattern_is_a_startup_error_naming_the_part(aws: AWS) -> None:
    arn = aws.put_rule("bad", {"detail": {"data": {"Cpu": [{"numeric": [">", 5, "<", 1]}]}}})
    proc = EventBridgeProcessor(router_context(aws.url, aws.bus, arn))
    with pytest.raises(EventBridgeSetupError) as info:
        await proc.start()
    await proc.close()
    assert "detail.data.Cpu[0].numeric: the range is empty" in str(info.value)


def test_rule_of_another_bus_is_a_config_error() -> None:
    arn = f"arn:aws:events:{REGION}:{ACCOUNT}:rule/other-bus/r"
    with pytest.raises(EventBridgeSetupError, match="belongs to event bus 'other-bus'"):
        EventBridgeProcessor(router_context("http://127.0.0.1:1", "mine", arn))


# --- failed entries, through a proxy in front of moto -----------------------------------


class FailingProxy:
    """Forwards every request to moto; PutEvents entries chosen by ``decide`` fail instead.

    ``decide(detail_id, attempt)`` returns an ErrorCode to fail that entry with, or None.
    Answers like EventBridge: HTTP 200, ``FailedEntryCount``, ``Entries`` in request order.
    """

    def __init__(
        self,
        upstream: str,
        decide: Callable[[str, int], str | None],
        hold: dict[str, float] | None = None,
    ) -> None:
        self.upstream = upstream
        self.decide = decide
        #: seconds a PutEvents call carrying that event id is held before it is answered
        self.hold = hold or {}
        self.attempts: dict[str, int] = {}
        self.batches: list[int] = []
        #: bytes of each PutEvents call's entries, counted as EventBridge counts them
        self.batch_bytes: list[int] = []
        #: event id -> loop time its PutEvents call arrived (first attempt)
        self.arrived: dict[str, float] = {}
        #: calls per API action (X-Amz-Target), e.g. "AWSEvents.ListRules"
        self.actions: collections.Counter[str] = collections.Counter()
        self.url = ""
        self._runner: web.AppRunner | None = None
        self._session: ClientSession | None = None

    async def __aenter__(self) -> FailingProxy:
        app = web.Application()
        app.router.add_route("*", "/{tail:.*}", self.handle)
        self._runner = web.AppRunner(app)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
        self.url = f"http://127.0.0.1:{port}"
        self._session = ClientSession()
        return self

    async def __aexit__(self, *exc: object) -> None:
        assert self._session is not None and self._runner is not None
        await self._session.close()
        await self._runner.cleanup()

    async def forward(self, request: web.Request, body: bytes) -> tuple[int, bytes, str]:
        assert self._session is not None
        headers = {
            k: v for k, v in request.headers.items() if k.lower() not in ("host", "content-length")
        }
        async with self._session.request(
            request.method, self.upstream + request.path_qs, data=body, headers=headers
        ) as resp:
            return resp.status, await resp.read(), resp.headers.get("Content-Type", "")

    async def handle(self, request: web.Request) -> web.Response:
        body = await request.read()
        self.actions[request.headers.get("X-Amz-Target", "")] += 1
        if request.headers.get("X-Amz-Target") != "AWSEvents.PutEvents":
            status, data, ctype = await self.forward(request, body)
            return web.Response(status=status, body=data, headers={"Content-Type": ctype})
        entries = json.loads(body)["Entries"]
        self.batches.append(len(entries))
        self.batch_bytes.append(sum(entry_size(e) for e in entries))
        now = asyncio.get_running_loop().time()
        keys = [json.loads(e["Detail"])["id"] for e in entries]
        for key in keys:
            self.arrived.setdefault(key, now)
        if held := max((self.hold.get(k, 0.0) for k in keys), default=0.0):
            await asyncio.sleep(held)
        results: list[dict[str, Any] | None] = []
        passed = []
        for entry in entries:
            key = json.loads(entry["Detail"])["id"]
            self.attempts[key] = self.attempts.get(key, 0) + 1
            code = self.decide(key, self.attempts[key])
            if code:
                results.append({"ErrorCode": code, "ErrorMessage": f"injected {code}"})
            else:
                results.append(None)
                passed.append(entry)
        upstream: list[dict[str, Any]] = []
        if passed:
            payload = json.dumps({"Entries": passed}).encode()
            status, data, _ = await self.forward(request, payload)
            assert status == 200, data
            upstream = json.loads(data)["Entries"]
        it = iter(upstream)
        merged = [r if r is not None else next(it) for r in results]
        failed = sum(1 for r in merged if "ErrorCode" in r)
        return web.json_response(
            {"FailedEntryCount": failed, "Entries": merged},
            content_type="application/x-amz-json-1.1",
        )


async def test_missing_rule_search_pages_through_list_rules(aws: AWS) -> None:
    for i in range(105):  # ListRules answers at most 100 rules a page
        aws.events.put_rule(Name=f"r{i:03}", EventBusName=aws.bus, EventPattern='{"source": ["x"]}')
    arn = f"arn:aws:events:{REGION}:{ACCOUNT}:rule/{aws.bus}/absent"
    async with FailingProxy(aws.url, lambda k, a: None) as proxy:
        proc = EventBridgeProcessor(router_context(proxy.url, aws.bus, arn))
        with pytest.raises(EventBridgeSetupError) as info:
            await proc.start()
        await proc.close()
    assert proxy.actions["AWSEvents.DescribeRule"] == 1
    assert proxy.actions["AWSEvents.ListRules"] == 2  # both pages were read
    msg = str(info.value)
    assert "not found" in msg and "r000, r001" in msg and msg.endswith(" ...)")


FAST_RETRY = RetryPolicy(attempts=4, base_delay=0.05, max_delay=0.2, jitter=0)


async def test_failed_entries_are_retried_alone(aws: AWS) -> None:
    arn = aws.put_rule("retry", {"detail": {"subject": [{"exists": True}]}})

    def decide(key: str, attempt: int) -> str | None:
        # odd events fail twice with retryable codes, then pass
        n = int(key.rsplit("-", 1)[1])
        if n % 2 and attempt <= 2:
            return "ThrottlingException" if attempt == 1 else "InternalFailure"
        return None

    async with FailingProxy(aws.url, decide) as proxy:
        proc = await started(router_context(proxy.url, aws.bus, arn), retry=FAST_RETRY)
        retries: list[tuple[int, str]] = []
        proc.retry_hook = lambda attempt, reason, _type: retries.append((attempt, reason))
        try:
            events = [vm_event("VmPoweredOnEvent", n=i) for i in range(10)]
            await asyncio.gather(*(proc.process(e) for e in events))
        finally:
            await proc.close()
    got = await aws.received(10)
    # every event exactly once: the successful entries were not re-sent
    assert sorted(m["detail"]["data"]["Key"] for m in got) == list(range(10))
    assert {k: v for k, v in proxy.attempts.items() if v > 1} == {
        f"VmPoweredOnEvent-Linux-01-{i}": 3 for i in range(1, 10, 2)
    }
    assert len(retries) == 10 and {a for a, _ in retries} == {1, 2}
    assert any("ThrottlingException" in r for _, r in retries)
    assert proc.counters["retried"] == 10 and proc.counters["sent"] == 10


async def test_batches_respect_the_entry_and_size_limits(aws: AWS) -> None:
    arn = aws.put_rule("limits", {"detail": {"subject": [{"exists": True}]}})
    big = "x" * (100 * 1024)  # two such entries fit in 256 KB, three do not

    async with FailingProxy(aws.url, lambda k, a: None) as proxy:
        proc = await started(router_context(proxy.url, aws.bus, arn))
        try:
            large = [
                CloudEvent(
                    {"id": f"big-{i}", "source": "urn:test", "type": "t", "subject": "Big"},
                    {"Key": i, "Blob": big},
                )
                for i in range(6)
            ]
            await asyncio.gather(*(proc.process(e) for e in large))
            large_batches = list(proxy.batches)
            large_bytes = list(proxy.batch_bytes)
            small = [vm_event("VmPoweredOffEvent", n=100 + i) for i in range(45)]
            await asyncio.gather(*(proc.process(e) for e in small))
            small_batches = proxy.batches[len(large_batches) :]
        finally:
            await proc.close()
    assert sum(large_batches) == 6 and sum(small_batches) == 45
    assert all(b <= MAX_BATCH_BYTES for b in large_bytes), large_bytes
    assert max(large_batches) == 2, large_batches  # packed up to the byte limit, not beyond
    assert max(small_batches) == MAX_BATCH_ENTRIES, small_batches  # full batches, never 11+
    assert proc.counters["sent"] == 51 and proc.counters["failed"] == 0
    got = await aws.received(51, timeout=10)
    assert sorted(m["detail"]["id"] for m in got) == sorted(
        [e["id"] for e in large] + [e["id"] for e in small]
    )


async def test_a_waiting_batch_leaves_within_a_second(aws: AWS) -> None:
    """While a PutEvents call is in flight, the next batch waits for more entries, at most 1 s."""
    arn = aws.put_rule("linger", {"detail": {"subject": [{"exists": True}]}})
    first = vm_event("VmPoweredOnEvent", n=1)
    second = vm_event("VmPoweredOnEvent", n=2)
    loop = asyncio.get_running_loop()
    async with FailingProxy(aws.url, lambda k, a: None, hold={first["id"]: 4.0}) as proxy:
        proc = await started(router_context(proxy.url, aws.bus, arn))
        try:
            slow = asyncio.create_task(proc.process(first))
            await wait_until(lambda: first["id"] in proxy.arrived, 5.0, "the first call")
            t0 = loop.time()
            await proc.process(second)
            waited = proxy.arrived[second["id"]] - t0
            assert not slow.done()  # the first call is still held by the proxy
            await slow
        finally:
            await proc.close()
    assert 0.9 <= waited <= 1.5, waited
    assert proxy.batches == [1, 1]


async def test_iam_role_auth_uses_the_default_credential_chain(
    aws: AWS, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "from-env")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "from-env-secret")
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", "/nonexistent")
    monkeypatch.setenv("AWS_CONFIG_FILE", "/nonexistent")
    arn = aws.put_rule("iam", {"detail": {"subject": ["VmPoweredOnEvent"]}})
    proc = await started(router_context(aws.url, aws.bus, arn, auth={"type": "aws_iam_role"}))
    try:
        creds = proc._client._request_signer._credentials
        assert (creds.access_key, creds.method) == ("from-env", "env")
        await proc.process(vm_event("VmPoweredOnEvent", n=5))
    finally:
        await proc.close()
    assert [m["detail"]["data"]["Key"] for m in await aws.received(1)] == [5]


async def test_entries_failing_for_good_raise_delivery_error(aws: AWS, caplog: Any) -> None:
    arn = aws.put_rule("doomed", {"detail": {"subject": [{"exists": True}]}})

    def decide(key: str, attempt: int) -> str | None:
        if key.endswith("-1"):
            return "InternalFailure"  # retryable, but never succeeds
        if key.endswith("-2"):
            return "AccessDeniedException"  # permanent: no retry
        return None

    async with FailingProxy(aws.url, decide) as proxy:
        proc = await started(router_context(proxy.url, aws.bus, arn), retry=FAST_RETRY)
        try:
            results = await asyncio.gather(
                *(proc.process(vm_event("VmPoweredOnEvent", n=i)) for i in range(3)),
                return_exceptions=True,
            )
        finally:
            await proc.close()
    assert results[0] is None
    assert isinstance(results[1], DeliveryError)
    assert "after 4 attempt(s): InternalFailure" in str(results[1])
    assert isinstance(results[2], DeliveryError)
    assert "(not retryable): AccessDeniedException" in str(results[2])
    assert proxy.attempts["VmPoweredOnEvent-Linux-01-1"] == 4
    assert proxy.attempts["VmPoweredOnEvent-Linux-01-2"] == 1
    assert proc.counters["failed"] == 2
    assert [m["detail"]["data"]["Key"] for m in await aws.received(1)] == [0]


async def test_unreachable_endpoint_fails_after_retries(aws: AWS) -> None:
    arn = aws.put_rule("gone", {"detail": {"subject": [{"exists": True}]}})

    async with FailingProxy(aws.url, lambda k, a: None) as proxy:
        proc = await started(router_context(proxy.url, aws.bus, arn), retry=FAST_RETRY)
    # the proxy is gone now: connection refused on every PutEvents
    try:
        with pytest.raises(DeliveryError, match="after 4 attempt"):
            await proc.process(vm_event("VmPoweredOnEvent", n=7))
    finally:
        await proc.close()


async def test_secret_key_never_logged(aws: AWS, caplog: Any) -> None:
    caplog.set_level(logging.DEBUG)
    arn = aws.put_rule("quiet", {"detail": {"subject": [{"exists": True}]}})
    ctx = router_context(aws.url, aws.bus, arn)
    assert ctx.config.eventProcessor.awsEventBridge is not None
    secret = "s3cr3t-K3y-do-not-log"
    keys = ctx.config.eventProcessor.awsEventBridge.auth.awsAccessKeyAuth
    assert keys is not None
    keys.secretKey = type(keys.secretKey)(secret)
    proc = await started(ctx)
    try:
        await proc.process(vm_event("VmPoweredOnEvent", n=1))
    finally:
        await proc.close()
    assert secret not in caplog.text
    assert secret not in repr(proc.cfg) and secret not in proc.address()


# --- end to end: webhook provider -> router -> aws_event_bridge -> moto -> SQS -----------


async def test_events_through_the_router_arrive_in_the_queue(aws: AWS) -> None:
    arn = aws.put_rule("e2e", MOTO_PATTERN)
    ctx = router_context(aws.url, aws.bus, arn, port=free_port())
    router = Router(ctx)  # provider and processor from the registries, as the CLI does
    await router.start()
    try:
        await router.wait_ready(5)
        url = router.provider.url  # type: ignore[attr-defined]
        batch = [
            to_dict(vm_event("VmPoweredOnEvent", "Linux-01", i))
            if i % 2
            else to_dict(vm_event("VmPoweredOnEvent", "Windows-01", i))
            for i in range(20)
        ]
        async with httpx.AsyncClient() as client:
            resp = await client.post(
                url,
                content=json.dumps(batch),
                headers={"Content-Type": "application/cloudevents-batch+json"},
            )
        assert resp.status_code == 202, resp.text
        got = await aws.received(10, timeout=10)
    finally:
        await router.stop(timeout=5)
    assert sorted(m["detail"]["data"]["Key"] for m in got) == list(range(1, 20, 2))
    stats = router.stats()
    assert json.dumps(stats)  # the /stats document stays JSON
    # the 10 events the rule's pattern does not select are counted as filtered, not delivered
    (entry,) = (v for v in stats["vmware.event.router.stats"].values() if "filtered" in v)
    assert entry["filtered"] == 10
    assert sum(v["SuccessCount"] for v in entry["invocations"].values()) == 10
    metrics = router.metrics.registry
    kind = "com.vmware.event.router/event"
    labels = {"processor": entry["name"], "type": kind}
    assert metrics.get_sample_value("event_router_events_filtered_total", labels) == 10
    assert metrics.get_sample_value("event_router_events_delivered_total", labels) == 10


# --- the local matcher agrees with moto's delivery decisions ------------------------------

DELIVERY_PATTERNS: list[dict[str, Any]] = [
    {"detail": {"subject": ["VmPoweredOnEvent"]}},
    {"detail": {"data": {"Key": [{"numeric": [">", 2, "<=", 4]}]}}},
    {"detail": {"data": {"Vm": {"Name": [{"anything-but": {"prefix": "Linux"}}]}}}},
    {"detail": {"data": {"Vm": {"Name": [{"equals-ignore-case": "linux-01"}]}}}},
    {"detail": {"data": {"Missing": [{"exists": False}], "Key": [0, 5]}}},
    {"$or": [{"detail-type": ["VmPoweredOffEvent"]}, {"detail": {"data": {"Key": [1]}}}]},
    {"detail": {"data": {"FullFormattedMessage": [{"wildcard": "*-0* *Off*"}]}}},
    {"detail": {"data": {"FullFormattedMessage": [{"suffix": "OffEvent"}]}}},
]


@pytest.mark.parametrize("index", range(len(DELIVERY_PATTERNS)))
async def test_local_matcher_agrees_with_moto_delivery(aws: AWS, index: int) -> None:
    pattern = DELIVERY_PATTERNS[index]
    arn = aws.put_rule(f"agree-{index}", pattern)
    proc = await started(router_context(aws.url, aws.bus, arn))
    events = [
        vm_event(subject, name, n)
        for n, (subject, name) in enumerate(
            [
                ("VmPoweredOnEvent", "Linux-01"),
                ("VmPoweredOffEvent", "LINUX-01"),
                ("VmPoweredOnEvent", "Windows-07"),
                ("VmCreatedEvent", "Linux-02"),
                ("VmPoweredOffEvent", "Web-03"),
                ("VmPoweredOnEvent", "db-01"),
            ]
        )
    ]
    try:
        assert proc.pattern is not None
        local = {
            e["id"]
            for e in events
            if proc.pattern.matches(
                {
                    "source": e["source"],
                    "detail-type": e["subject"],
                    "detail": json.loads(to_json_str(e)),
                }
            )
        }
        # let moto decide: put every event on the bus directly, read what the rule delivered
        await asyncio.to_thread(
            aws.events.put_events,
            Entries=[
                {
                    "Source": e["source"],
                    "DetailType": e["subject"],
                    "Detail": to_json_str(e),
                    "EventBusName": aws.bus,
                }
                for e in events
            ],
        )
        got = await aws.received(len(local), timeout=3)
        got += await aws.received(len(events), timeout=0.3)  # nothing more arrives
        delivered = {m["detail"]["id"] for m in got}
        assert delivered == local
        assert 0 < len(local) < len(events)  # each pattern discriminates
    finally:
        await proc.close()


def to_json_str(event: CloudEvent) -> str:
    from cloudevents.conversion import to_json

    return to_json(event).decode()


async def test_unreachable_endpoint_at_start_is_a_startup_error() -> None:
    port = free_port()  # nothing listens there
    arn = f"arn:aws:events:{REGION}:{ACCOUNT}:rule/b/r"
    proc = EventBridgeProcessor(router_context(f"http://127.0.0.1:{port}", "b", arn))
    with pytest.raises(
        EventBridgeSetupError, match=r"cannot read rule .* \(EndpointConnectionError"
    ):
        await proc.start()
    await proc.close()
