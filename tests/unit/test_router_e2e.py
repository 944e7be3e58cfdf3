"""webhook -> router -> knative(uri) end to end, with a real local CloudEvents sink.

Everything talks real HTTP on 127.0.0.1: an httpx client posts to the webhook provider's
aiohttp server, the knative processor delivers with its pooled aiohttp session to the
CloudEventSink (aiohttp), and /stats and /metrics are read from the metrics server.
"""

from __future__ import annotations

import asyncio
import base64
import json
import socket
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import httpx
import pytest
from cloudevents.conversion import to_binary, to_dict, to_structured
from cloudevents.http import CloudEvent

from event_router.config.loader import parse_config
from event_router.config.models import RouterConfig
from event_router.core import RouterContext
from event_router.delivery import RetryPolicy
from event_router.processors.knative import KnativeProcessor
from event_router.providers.webhook import WebhookProvider
from event_router.router import ProcessorSlot, Router
from tests.support.net import free_port
from tests.support.polling import wait_until
from tests.support.sink import CloudEventSink

FAST = RetryPolicy(attempts=4, base_delay=0.01, max_delay=0.05)


def make_config(
    sink_url: str,
    *,
    encoding: str = "binary",
    webhook_auth: tuple[str, str] | None = None,
    knative_auth: tuple[str, str] | None = None,
    metrics_auth: tuple[str, str] | None = None,
    max_body: int | None = None,
    destination: dict[str, Any] | None = None,
    ack: str = "delivered",
    ack_timeout: float | None = None,
) -> RouterConfig:
    def auth(pair: tuple[str, str]) -> dict[str, Any]:
        return {"type": "basic_auth", "basicAuth": {"username": pair[0], "password": pair[1]}}

    webhook: dict[str, Any] = {"bindAddress": f"127.0.0.1:{free_port()}", "path": "/webhook"}
    if webhook_auth:
        webhook["auth"] = auth(webhook_auth)
    if max_body:
        webhook["maxBodyBytes"] = max_body
    webhook["ack"] = ack
    if ack_timeout is not None:
        webhook["ackTimeoutSeconds"] = ack_timeout
    knative: dict[str, Any] = {
        "destination": destination or {"uri": sink_url},
        "encoding": encoding,
    }
    if knative_auth:
        knative["auth"] = auth(knative_auth)
    metrics: dict[str, Any] = {"bindAddress": f"127.0.0.1:{free_port()}"}
    if metrics_auth:
        metrics["auth"] = auth(metrics_auth)
    return parse_config(
        {
            "apiVersion": "event-router.vmware.com/v1alpha1",
            "kind": "RouterConfig",
            "metadata": {"name": "test"},
            "eventProvider": {"type": "webhook", "name": "hook", "webhook": webhook},
            "eventProcessor": {"type": "knative", "name": "kn", "knative": knative},
            "metricsProvider": {"type": "default", "name": "m", "default": metrics},
        }
    )


@asynccontextmanager
async def running(
    config: RouterConfig, *, queue_size: int = 1000, accept_timeout: float = 5.0
) -> AsyncIterator[Router]:
    context = RouterContext(config)
    processor = KnativeProcessor(context, retry=FAST)
    router = Router(
        context,
        provider=WebhookProvider(context, accept_timeout=accept_timeout),
        processors=[ProcessorSlot(processor, queue_size=queue_size, name="kn")],
    )
    await router.start()
    try:
        await router.wait_ready(5)
        yield router
    finally:
        await router.stop(timeout=5)


def webhook_url(router: Router) -> str:
    provider = router.provider
    assert isinstance(provider, WebhookProvider)
    return provider.url


def sample_event(n: int = 1, **extra: Any) -> CloudEvent:
    attrs = {
        "type": "com.vmware.event.router/event",
        "source": "https://vcenter.example.com/sdk",
        "id": f"id-{n}",
        "subject": "VmPoweredOnEvent",
        "time": "2024-05-01T10:00:00.123Z",
        "datacontenttype": "application/json",
        "vsphereapiversion": "8.0.2.0",
        **extra,
    }
    data = {
        "Key": n,
        "FullFormattedMessage": "VM demo-1 on esx01 is powered on",
        "Vm": {"Name": "demo-1"},
    }
    return CloudEvent(attrs, data)


@pytest.mark.parametrize("incoming", ["binary", "structured"])
@pytest.mark.parametrize("outgoing", ["binary", "structured"])
async def test_event_arrives_unchanged(incoming: str, outgoing: str) -> None:
    event = sample_event(7)
    async with (
        CloudEventSink() as sink,
        running(make_config(sink.url, encoding=outgoing)) as router,
    ):
        headers, body = (to_binary if incoming == "binary" else to_structured)(event)
        async with httpx.AsyncClient() as client:
            r = await client.post(webhook_url(router), headers=headers, content=body)
        assert r.status_code == 202, r.text
        (got,) = await sink.wait_for(1, timeout=5)
        assert to_dict(got) == to_dict(event)
        wire = sink.request_headers[0]
        if outgoing == "binary":
            assert wire["ce-id"] == "id-7" and wire["content-type"] == "application/json"
        else:
            assert wire["content-type"].startswith("application/cloudevents+json")


async def test_binary_payload_passes_byte_for_byte() -> None:
    payload = bytes(range(256)) * 4
    event = CloudEvent(
        {
            "type": "t.bin",
            "source": "/s",
            "id": "b1",
            "datacontenttype": "application/octet-stream",
        },
        payload,
    )
    async with CloudEventSink() as sink, running(make_config(sink.url)) as router:
        headers, body = to_binary(event)
        async with httpx.AsyncClient() as client:
            r = await client.post(webhook_url(router), headers=headers, content=body)
        assert r.status_code == 202
        (got,) = await sink.wait_for(1, timeout=5)
        assert got.get_data() == payload
        assert got["datacontenttype"] == "application/octet-stream"


async def test_batch_is_delivered_in_order() -> None:
    events = [sample_event(i) for i in range(5)]
    batch = json.dumps([json.loads(to_structured(e)[1]) for e in events])
    async with CloudEventSink() as sink, running(make_config(sink.url)) as router:
        async with httpx.AsyncClient() as client:
            r = await client.post(
                webhook_url(router),
                headers={"content-type": "application/cloudevents-batch+json"},
                content=batch,
            )
        assert r.status_code == 202, r.text
        got = await sink.wait_for(5, timeout=5)
        assert [to_dict(e) for e in got] == [to_dict(e) for e in events]


async def test_request_errors() -> None:
    user, pw = "hook-user", "s3cret-pass"
    config = make_config(
        "http://127.0.0.1:9/", webhook_auth=(user, pw), max_body=2048, ack_timeout=0.5
    )
    good = "Basic " + base64.b64encode(f"{user}:{pw}".encode()).decode()
    bad = "Basic " + base64.b64encode(f"{user}:wrong".encode()).decode()
    headers, body = to_binary(sample_event())
    async with running(config) as router:
        url = webhook_url(router)
        async with httpx.AsyncClient() as client:
            r = await client.post(url, headers=headers, content=body)
            assert r.status_code == 401
            assert r.headers["www-authenticate"].startswith("Basic realm=")
            r = await client.post(url, headers={**headers, "authorization": bad}, content=body)
            assert r.status_code == 401

            auth = {"authorization": good}
            r = await client.get(url, headers=auth)
            assert r.status_code == 405 and r.headers["allow"] == "POST"
            r = await client.put(url, headers=auth, content=b"{}")
            assert r.status_code == 405

            missing_id = {k: v for k, v in headers.items() if k != "ce-id"}
            r = await client.post(url, headers={**missing_id, **auth}, content=body)
            assert r.status_code == 400
            assert "id" in r.text

            r = await client.post(
                url,
                headers={"content-type": "application/cloudevents+json", **auth},
                content=b'{"specversion": "1.0", "type": "t"}',
            )
            assert r.status_code == 400 and "invalid CloudEvent" in r.text

            r = await client.post(
                url, headers={"content-type": "text/plain", **auth}, content=b"hello"
            )
            assert r.status_code == 415
            assert "application/cloudevents+json" in r.text

            r = await client.post(url, headers={**headers, **auth}, content=b"x" * 4096)
            assert r.status_code == 413
            assert "maxBodyBytes" in r.text and "2048" in r.text

            # a good request whose only processor is down (port 9 is closed) is not
            # acknowledged: 503 with Retry-After once ackTimeoutSeconds passed
            r = await client.post(url, headers={**headers, **auth}, content=body)
            assert r.status_code == 503 and r.headers["retry-after"] == "1"
            assert "ackTimeoutSeconds" in r.text
        metrics = await _get(router, "/metrics")
        assert 'event_router_delivery_stalled_events{processor="kn"} 1.0' in metrics
        for status, count in (("401", 2), ("405", 2), ("400", 2), ("415", 1), ("413", 1)):
            line = f'event_router_requests_rejected_total{{provider="webhook",status="{status}"}}'
            assert f"{line} {count}.0" in metrics, (status, metrics)


async def _get(router: Router, path: str, auth: tuple[str, str] | None = None) -> str:
    assert router.metrics_url
    async with httpx.AsyncClient() as client:
        r = await client.get(router.metrics_url + path, auth=auth)
        r.raise_for_status()
        return r.text


async def _wait_settled(router: Router, count: int) -> dict[str, Any]:
    async with asyncio.timeout(5):
        while True:
            stats = router.stats()["vmware.event.router.stats"]
            inv = stats["knative"]["invocations"]
            if sum(v["SuccessCount"] + v["FailureCount"] for v in inv.values()) >= count:
                return dict(stats)
            await asyncio.sleep(0.01)


async def test_sink_503_twice_then_ok_gets_event_once_and_counts_show() -> None:
    async with CloudEventSink() as sink, running(make_config(sink.url)) as router:
        sink.fail_next(2, 503)
        headers, body = to_binary(sample_event(3))
        async with httpx.AsyncClient() as client:
            r = await client.post(webhook_url(router), headers=headers, content=body)
        assert r.status_code == 202
        (got,) = await sink.wait_for(1, timeout=5)
        assert got["id"] == "id-3"
        await _wait_settled(router, 1)
        assert sink.requests == 3 and len(sink.events) == 1

        stats = json.loads(await _get(router, "/stats"))["vmware.event.router.stats"]
        assert stats["webhook"]["events_total"] == 1
        assert stats["webhook"]["events_err"] == 0
        assert stats["webhook"]["type"] == "webhook"
        assert stats["webhook"]["address"] == webhook_url(router)
        assert stats["webhook"]["started"].endswith("Z")
        assert stats["knative"]["invocations"] == {
            "VmPoweredOnEvent": {"SuccessCount": 1, "FailureCount": 0}
        }
        assert stats["knative"]["address"] == sink.url

        metrics = await _get(router, "/metrics")
        t = 'type="com.vmware.event.router/event"'
        assert f'event_router_events_received_total{{provider="webhook",{t}}} 1.0' in metrics
        assert f'event_router_events_delivered_total{{processor="kn",{t}}} 1.0' in metrics
        retries = f'event_router_delivery_retries_total{{processor="kn",reason="HTTP 503",{t}}}'
        assert f"{retries} 2.0" in metrics
        assert 'event_router_delivery_latency_seconds_count{processor="kn"} 1.0' in metrics
        assert 'event_router_queue_depth{processor="kn"} 0.0' in metrics
        assert "event_router_ready 1.0" in metrics


@pytest.mark.parametrize("status", [400, 307])
async def test_sink_400_gets_event_once_and_failure_is_counted(status: int) -> None:
    # a redirect (not followed) is a failure too: the sink did not take the event
    async with CloudEventSink() as sink, running(make_config(sink.url)) as router:
        sink.fail_next(1, status, location=sink.url + "moved")
        async with httpx.AsyncClient() as client:
            for n in (1, 2):
                headers, body = to_binary(sample_event(n))
                r = await client.post(webhook_url(router), headers=headers, content=body)
                assert r.status_code == 202
        await sink.wait_for(1, timeout=5)
        stats = await _wait_settled(router, 2)
        assert sink.requests == 2  # the rejected one was not retried
        assert [e["id"] for e in sink.events] == ["id-2"]
        assert stats["knative"]["invocations"]["VmPoweredOnEvent"] == {
            "SuccessCount": 1,
            "FailureCount": 1,
        }
        assert stats["webhook"]["events_err"] == 0  # settled: rejected for good, dropped
        assert stats["knative"]["dropped"] == 1
        metrics = await _get(router, "/metrics")
        t = 'type="com.vmware.event.router/event"'
        assert f'event_router_events_failed_total{{processor="kn",{t}}} 1.0' in metrics
        assert f'event_router_events_dropped_total{{processor="kn",{t}}} 1.0' in metrics


async def test_probes_and_metrics_auth() -> None:
    creds = ("prom", "scrape-pw")
    async with (
        CloudEventSink() as sink,
        running(make_config(sink.url, metrics_auth=creds)) as router,
    ):
        base = router.metrics_url
        assert base
        async with httpx.AsyncClient() as client:
            assert (await client.get(base + "/healthz")).status_code == 200
            assert (await client.get(base + "/readyz")).status_code == 200
            r = await client.get(base + "/stats")
            assert r.status_code == 401 and "www-authenticate" in r.headers
            assert (await client.get(base + "/metrics")).status_code == 401
            assert (await client.get(base + "/stats", auth=creds)).status_code == 200
            assert (await client.get(base + "/metrics", auth=creds)).status_code == 200


async def test_knative_sends_basic_auth() -> None:
    creds = ("kn-user", "kn-pass")
    async with (
        CloudEventSink(auth=creds) as sink,
        running(make_config(sink.url, knative_auth=creds)) as router,
    ):
        headers, body = to_binary(sample_event())
        async with httpx.AsyncClient() as client:
            await client.post(webhook_url(router), headers=headers, content=body)
        await sink.wait_for(1, timeout=5)


async def test_knative_keeps_one_connection_alive_for_many_events() -> None:
    async with CloudEventSink() as sink, running(make_config(sink.url)) as router:
        async with httpx.AsyncClient() as client:
            for n in range(8):
                headers, body = to_binary(sample_event(n))
                r = await client.post(webhook_url(router), headers=headers, content=body)
                assert r.status_code == 202
        await sink.wait_for(8, timeout=5)
        # pooled keep-alive: every delivery reused the first connection
        assert len(sink.peers) == 8 and len(set(sink.peers)) == 1, sink.peers


async def test_uri_object_form() -> None:
    async with CloudEventSink(path="/default/broker") as sink:
        port = int(sink.url.split(":")[2].split("/")[0])
        dest = {
            "uri": {"scheme": "http", "host": "127.0.0.1", "port": port, "path": "/default/broker"}
        }
        async with running(make_config(sink.url, destination=dest)) as router:
            headers, body = to_binary(sample_event())
            async with httpx.AsyncClient() as client:
                await client.post(webhook_url(router), headers=headers, content=body)
            await sink.wait_for(1, timeout=5)


async def test_ref_without_uri_fails_at_start_naming_the_field(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # no Kubernetes API to resolve the ref with (see test_standalone_knative_ref for one)
    monkeypatch.setenv("KUBECONFIG", str(tmp_path / "no-kubeconfig"))
    ref = {"ref": {"apiVersion": "eventing.knative.dev/v1", "kind": "Broker", "name": "default"}}
    config = make_config("http://unused/", destination=ref)
    router = Router(RouterContext(config))
    with pytest.raises(
        ValueError,
        match=r"eventProcessor\.knative\.destination\.ref: .*cannot reach the Kubernetes API",
    ):
        await router.start()
    await router.stop(1)


async def test_backpressure_slow_sink_waits_drops_nothing_keeps_order() -> None:
    delay = 0.03
    async with (
        CloudEventSink(delay=delay) as sink,
        running(make_config(sink.url), queue_size=2) as router,
    ):
        events = [sample_event(i) for i in range(15)]
        post_times: list[float] = []
        async with httpx.AsyncClient() as client:
            start = time.monotonic()
            for e in events:
                headers, body = to_binary(e)
                r = await client.post(webhook_url(router), headers=headers, content=body)
                assert r.status_code == 202
                post_times.append(time.monotonic() - start)
        # with 2 queued + 1 in delivery, the provider had to wait for the sink
        assert post_times[-1] >= (len(events) - 4) * delay
        got = await sink.wait_for(len(events), timeout=10)
        assert [e["id"] for e in got] == [e["id"] for e in events]
        assert sink.max_in_flight == 1


async def test_queue_full_too_long_answers_503_with_retry_after() -> None:
    bound = 0.2
    async with (
        CloudEventSink(delay=0.5) as sink,
        running(make_config(sink.url, ack="queued"), queue_size=1, accept_timeout=bound) as router,
    ):
        url = webhook_url(router)
        async with httpx.AsyncClient() as client:

            async def post(n: int) -> tuple[int, float, str | None]:
                headers, body = to_binary(sample_event(n))
                start = time.monotonic()
                r = await client.post(url, headers=headers, content=body)
                return r.status_code, time.monotonic() - start, r.headers.get("retry-after")

            first = await post(0)  # taken by the worker: in delivery
            await wait_until(lambda: sink.in_flight == 1, 5, "the first delivery")
            second = await post(1)  # queued: the queue (size 1) is now full
            third = await post(2)  # waits for room, then gives up
            assert (first[0], second[0]) == (202, 202)
            # 503 only after the bound, with Retry-After, so a client retry covers it
            assert third[0] == 503 and third[2] == "1"
            assert third[1] >= bound, third
            # the client retries as told: nothing is dropped, each event arrives once
            for n in (2, 3):
                for _ in range(50):
                    if (await post(n))[0] != 503:
                        break
                    await asyncio.sleep(0.05)  # Retry-After, shortened for the test
        got = await sink.wait_for(4, timeout=10)
        assert [e["id"] for e in got] == ["id-0", "id-1", "id-2", "id-3"]
        assert sink.requests == 4
        rejected = await _get(router, "/metrics")
        assert 'event_router_requests_rejected_total{provider="webhook",status="503"}' in rejected


async def test_many_waiting_requests_get_503_at_once_and_memory_stays_bounded() -> None:
    """The processors are behind and many clients post: past the webhook's byte budget a
    request is answered 503 at once (its body not read), not after the accept bound; the
    ones inside the budget are accepted when room frees up, each event once."""
    async with (
        CloudEventSink(delay=0.3) as sink,
        running(make_config(sink.url, ack="queued"), queue_size=1, accept_timeout=5) as router,
    ):
        provider = router.provider
        assert isinstance(provider, WebhookProvider)
        _headers, body = to_binary(sample_event(0))
        provider.max_pending_bytes = 3 * len(body)  # room for three waiting requests
        url = webhook_url(router)
        async with httpx.AsyncClient() as client:

            async def post(n: int) -> tuple[int, float]:
                h, b = to_binary(sample_event(n))
                start = time.monotonic()
                r = await client.post(url, headers=h, content=b)
                return r.status_code, time.monotonic() - start

            assert (await post(0))[0] == 202  # in delivery
            await wait_until(lambda: sink.in_flight == 1, 5, "the first delivery")
            assert (await post(1))[0] == 202  # the queue (size 1) is full now
            results = await asyncio.gather(*(post(n) for n in range(2, 12)))
        busy = [(code, took) for code, took in results if code == 503]
        assert len(busy) == 7, results  # 3 waited for room, 7 were over the budget
        assert all(took < 0.25 for _, took in busy), busy  # answered at once
        got = await sink.wait_for(5, timeout=10)
        ids = [e["id"] for e in got]
        assert len(ids) == len(set(ids)) == 5


async def test_stop_delivers_queued_events_and_refuses_new_ones() -> None:
    async with CloudEventSink(delay=0.02) as sink:
        config = make_config(sink.url)
        context = RouterContext(config)
        provider = WebhookProvider(context)
        router = Router(context, provider=provider)
        await router.start()
        await router.wait_ready(5)
        tickets = [await router.publish(sample_event(i)) for i in range(10)]
        await router.stop(timeout=5)
        assert all(t.done() and t.result() for t in tickets)
        assert len(sink.events) == 10
        async with httpx.AsyncClient() as client:
            headers, body = to_binary(sample_event(99))
            with pytest.raises(httpx.ConnectError):
                await client.post(provider.url, headers=headers, content=body)


async def test_shutting_down_answers_503_and_queued_events_still_arrive() -> None:
    async with (
        CloudEventSink(delay=0.3) as sink,
        running(make_config(sink.url, ack="queued"), queue_size=1, accept_timeout=10) as router,
    ):
        url = webhook_url(router)
        async with httpx.AsyncClient(timeout=10) as client:

            async def post(n: int) -> httpx.Response:
                headers, body = to_binary(sample_event(n))
                return await client.post(url, headers=headers, content=body)

            first = await post(0)  # in delivery
            await wait_until(lambda: sink.in_flight == 1, 5, "the first delivery")
            second = await post(1)  # queued
            waiting = asyncio.create_task(post(2))  # blocked: queue full
            await asyncio.sleep(0.1)
            assert not waiting.done()
            await router.stop(timeout=5)
            third = await waiting
        assert (first.status_code, second.status_code) == (202, 202)
        assert third.status_code == 503 and third.headers["retry-after"] == "1"
        assert [e["id"] for e in sink.events] == ["id-0", "id-1"]


async def test_debug_log_has_requests_but_no_credentials(caplog: pytest.LogCaptureFixture) -> None:
    user, pw = "log-user", "never-in-logs-123"
    token = base64.b64encode(f"{user}:{pw}".encode()).decode()
    async with (
        CloudEventSink() as sink,
        running(make_config(sink.url, webhook_auth=(user, pw))) as router,
    ):
        caplog.set_level("DEBUG", logger="event_router")
        headers, body = to_binary(sample_event(5))
        async with httpx.AsyncClient() as client:
            r = await client.post(
                webhook_url(router),
                headers={**headers, "X-Gitlab-Token": "client-token-xyz"},
                content=body,
                auth=(user, pw),
            )
            assert r.status_code == 202
            r = await client.post(
                webhook_url(router), headers=headers, content=body, auth=(user, "wrong-pw")
            )
            assert r.status_code == 401
        await sink.wait_for(1, timeout=5)
    text = caplog.text
    assert "webhook request POST /webhook" in text
    assert "<redacted>" in text
    assert pw not in text and token not in text and "wrong-pw" not in text
    assert "client-token-xyz" not in text  # a token in any header, not only Authorization
    assert "ce-id" in text and "id-5" in text  # the CloudEvent headers stay readable


async def test_a_number_as_subject_keeps_stats_serving() -> None:
    """A structured event whose subject is a JSON number: delivered, and /stats still
    answers (its subject key is the string)."""
    async with CloudEventSink() as sink, running(make_config(sink.url)) as router:
        event = {**to_dict(sample_event(8)), "subject": 5}
        headers, body = to_binary(sample_event(7))
        async with httpx.AsyncClient() as client:
            r = await client.post(webhook_url(router), headers=headers, content=body)
            assert r.status_code == 202, r.text
            r = await client.post(
                webhook_url(router),
                headers={"Content-Type": "application/cloudevents+json"},
                content=json.dumps(event),
            )
            assert r.status_code == 202, r.text
            await sink.wait_for(2, timeout=5)
            await _wait_settled(router, 2)
            stats = json.loads(await _get(router, "/stats"))["vmware.event.router.stats"]
        assert set(stats["knative"]["invocations"]) == {"5", "VmPoweredOnEvent"}


async def test_webhook_bind_error_names_the_field() -> None:
    config = make_config("http://127.0.0.1:9/")
    assert config.eventProvider.webhook is not None
    host, port = config.eventProvider.webhook.bindAddress.rsplit(":", 1)
    with socket.socket() as busy:
        busy.bind((host, int(port)))
        busy.listen()
        router = Router(RouterContext(config))
        await router.start()
        with pytest.raises(OSError, match=r"eventProvider\.webhook\.bindAddress: cannot listen"):
            await router.wait_ready(5)
        await router.stop(1)
