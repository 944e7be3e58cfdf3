"""The openfaas processor against the OpenFaaS-gateway-compatible test server."""

from __future__ import annotations

import asyncio
import base64
import json
import logging
from pathlib import Path
from typing import Any

import httpx
import pytest
from cloudevents.conversion import to_dict
from cloudevents.http import CloudEvent

from event_router.config.models import Certificates
from event_router.core import DeliveryError, RouterContext
from event_router.delivery import RetryPolicy
from event_router.processors import processor_class
from event_router.processors.openfaas import (
    OpenFaaSProcessor,
    OpenFaaSSetupError,
    parse_topics,
    retry_status,
)
from event_router.router import Router
from tests.support.configs import webhook_context
from tests.support.net import free_port
from tests.support.openfaas_gateway import OpenFaaSGateway
from tests.support.polling import wait_until
from tests.support.tls import make_tls

FAST = RetryPolicy(attempts=3, base_delay=0.01, max_delay=0.05, jitter=0)


def context(
    address: str,
    *,
    async_: bool = False,
    auth: Any = None,
    refresh: float = 10.0,
    port: int = 8080,
) -> RouterContext:
    openfaas: dict[str, Any] = {
        "address": address,
        "async": async_,
        "refreshIntervalSeconds": refresh,
    }
    if auth is not None:
        openfaas["auth"] = {
            "type": "basic_auth",
            "basicAuth": {"username": auth[0], "password": auth[1]},
        }
    return webhook_context(
        "openfaas-test", {"type": "openfaas", "name": "faas", "openfaas": openfaas}, port=port
    )


def event(subject: str | None, n: int = 0) -> CloudEvent:
    attrs = {
        "id": f"id-{n}",
        "source": "https://vcenter.local/sdk",
        "type": "com.vmware.event.router/event",
    }
    if subject is not None:
        attrs["subject"] = subject
    return CloudEvent(attrs, {"Key": n, "Vm": {"Name": "Test-VM"}})


async def started(ctx: RouterContext, retry: RetryPolicy = FAST) -> OpenFaaSProcessor:
    proc = OpenFaaSProcessor(ctx, retry=retry)
    await proc.start()
    return proc


def test_registry_and_retry_statuses() -> None:
    assert processor_class("openfaas") is OpenFaaSProcessor
    assert [s for s in (200, 404, 429, 500, 501, 502, 503, 504) if retry_status(s)] == [
        429,
        500,
        502,
        503,
        504,
    ]


def test_parse_topics_splits_and_trims() -> None:
    table = parse_topics(
        [
            {"name": "a", "annotations": {"topic": "VmPoweredOnEvent, VmPoweredOffEvent"}},
            {"name": "b", "annotations": {"topic": "VmPoweredOnEvent"}},
            {"name": "c", "annotations": {}},
            {"name": "d"},
            {"name": "e", "annotations": {"topic": " ,,"}},
        ]
    )
    assert table == {"VmPoweredOnEvent": ("a", "b"), "VmPoweredOffEvent": ("a",)}


async def test_topic_routing_to_every_subscribed_function() -> None:
    async with OpenFaaSGateway() as gw:
        gw.deploy("power", "VmPoweredOnEvent,VmPoweredOffEvent")
        gw.deploy("audit", "VmPoweredOnEvent")
        gw.deploy("alarms", "AlarmStatusChangedEvent")
        gw.deploy("silent")
        proc = await started(context(gw.url))
        try:
            await proc.process(event("VmPoweredOnEvent", 1))
            await proc.process(event("VmPoweredOffEvent", 2))
            await proc.process(event("VmCreatedEvent", 3))  # nobody subscribed
            await proc.process(event(None, 4))  # no subject, no topic
        finally:
            await proc.close()
    got = sorted((i.function, json.loads(i.body)["id"]) for i in gw.invocations)
    assert got == [("audit", "id-1"), ("power", "id-1"), ("power", "id-2")]
    first = gw.calls("audit")[0]
    assert first.mode == "sync"
    assert first.headers["content-type"] == "application/cloudevents+json"
    assert first.headers["x-topic"] == "VmPoweredOnEvent"
    body = json.loads(first.body)
    assert body["specversion"] == "1.0" and body["subject"] == "VmPoweredOnEvent"
    assert body["data"] == {"Key": 1, "Vm": {"Name": "Test-VM"}}
    assert proc.counters["unsubscribed"] == 2 and proc.counters["invoked"] == 3


async def test_new_and_removed_functions_apply_after_a_refresh() -> None:
    async with OpenFaaSGateway() as gw:
        gw.deploy("old", "VmPoweredOnEvent")
        proc = await started(context(gw.url, refresh=0.2))
        try:
            await proc.process(event("VmPoweredOnEvent", 1))
            gw.deploy("new", "VmPoweredOnEvent")
            gw.remove("old")
            # wait for the list itself: a refresh already in flight may still bring the old one
            await wait_until(lambda: proc.topics == {"VmPoweredOnEvent": ("new",)}, 3.0)
            await proc.process(event("VmPoweredOnEvent", 2))
        finally:
            await proc.close()
    assert [(i.function, json.loads(i.body)["id"]) for i in gw.invocations] == [
        ("old", "id-1"),
        ("new", "id-2"),
    ]


async def test_retries_then_delivers_and_reports_retries() -> None:
    async with OpenFaaSGateway() as gw:
        gw.deploy("fn", "VmPoweredOnEvent")
        proc = await started(context(gw.url))
        retries: list[tuple[int, str]] = []
        proc.retry_hook = lambda attempt, reason, _type: retries.append((attempt, reason))
        try:
            gw.fail_next("fn", 1, 503)
            gw.fail_next("fn", 1, 429)
            await proc.process(event("VmPoweredOnEvent", 1))
        finally:
            await proc.close()
    assert len(gw.calls("fn")) == 1
    assert retries == [(1, "HTTP 503"), (2, "HTTP 429")]


async def test_a_sync_function_slower_than_the_timeout_is_not_invoked_again() -> None:
    """The request reached the function, which is still running when the read times out:
    sending it again would run the function twice. Reported as a failure, sent once."""
    async with OpenFaaSGateway() as gw:
        gw.deploy("slow", "VmPoweredOnEvent", delay=1.0)
        proc = OpenFaaSProcessor(context(gw.url), retry=FAST)
        proc.invoke_timeout = 0.3
        await proc.start()
        try:
            with pytest.raises(DeliveryError, match=r"ReadTimeout.*not retried"):
                await proc.process(event("VmPoweredOnEvent", 1))
            await asyncio.sleep(1.3)  # every request sent has finished on the gateway now
        finally:
            await proc.close()
    assert len(gw.calls("slow")) == 1


async def test_failure_after_the_last_retry_is_reported_not_swallowed() -> None:
    async with OpenFaaSGateway() as gw:
        gw.deploy("flaky", "VmPoweredOnEvent")
        gw.deploy("fine", "VmPoweredOnEvent")
        proc = await started(context(gw.url))
        try:
            gw.fail_next("flaky", 3, 502)
            with pytest.raises(DeliveryError) as info:
                await proc.process(event("VmPoweredOnEvent", 1))
            gw.fail_next("flaky", 1, 501)  # Not Implemented: not retried
            with pytest.raises(DeliveryError) as info501:
                await proc.process(event("VmPoweredOnEvent", 2))
        finally:
            await proc.close()
    assert "1 of 2 function(s) failed" in str(info.value)
    assert "flaky" in str(info.value) and "after 3 attempt(s): HTTP 502" in str(info.value)
    assert info.value.retryable
    assert "HTTP 501 (not retryable)" in str(info501.value)
    # the healthy function got both events; the flaky one neither
    assert [json.loads(i.body)["id"] for i in gw.calls("fine")] == ["id-1", "id-2"]
    assert gw.calls("flaky") == []
    assert proc.counters["failed:flaky"] == 2


async def test_removed_function_fails_and_triggers_a_refresh() -> None:
    async with OpenFaaSGateway() as gw:
        gw.deploy("gone", "VmPoweredOnEvent")
        proc = await started(context(gw.url, refresh=3600))
        try:
            gw.remove("gone")
            before = gw.list_requests
            with pytest.raises(DeliveryError, match="HTTP 404"):
                await proc.process(event("VmPoweredOnEvent", 1))
            await wait_until(lambda: "VmPoweredOnEvent" not in proc.topics, 3.0)
            assert gw.list_requests == before + 1
            await proc.process(event("VmPoweredOnEvent", 2))  # nobody subscribed now
            assert proc.counters["unsubscribed"] == 1
        finally:
            await proc.close()


async def test_connection_errors_are_retried_then_reported() -> None:
    async with OpenFaaSGateway() as gw:
        gw.deploy("fn", "VmPoweredOnEvent")
        proc = await started(context(gw.url))
        retries: list[str] = []
        proc.retry_hook = lambda attempt, reason, _type: retries.append(reason)
    # the gateway is stopped now
    try:
        with pytest.raises(DeliveryError, match="after 3 attempt"):
            await proc.process(event("VmPoweredOnEvent", 1))
    finally:
        await proc.close()
    assert len(retries) == 2 and all("Connect" in r for r in retries)


async def test_async_mode_posts_to_async_function() -> None:
    async with OpenFaaSGateway() as gw:
        gw.deploy("fn", "VmPoweredOnEvent")
        proc = await started(context(gw.url, async_=True))
        try:
            await proc.process(event("VmPoweredOnEvent", 1))
            gw.fail_next("fn", 1, 503)  # the queue is briefly unavailable: retried
            await proc.process(event("VmPoweredOnEvent", 2))
        finally:
            await proc.close()
    assert [(i.mode, json.loads(i.body)["id"]) for i in gw.invocations] == [
        ("async", "id-1"),
        ("async", "id-2"),
    ]
    assert gw.calls(mode="sync") == []


async def test_basic_auth_for_listing_and_invocation(caplog: Any) -> None:
    caplog.set_level(logging.DEBUG)
    secret = "0penfaas-s3cret"
    async with OpenFaaSGateway(auth=("admin", secret), auth_functions=True) as gw:
        gw.deploy("fn", "VmPoweredOnEvent")
        proc = await started(context(gw.url, auth=("admin", secret)))
        try:
            await proc.process(event("VmPoweredOnEvent", 1))
        finally:
            await proc.close()
        assert len(gw.calls("fn")) == 1 and gw.unauthorized == 0
        # wrong password: a startup error naming the auth field, without the password
        bad = OpenFaaSProcessor(context(gw.url, auth=("admin", "wrong-pass")), retry=FAST)
        with pytest.raises(OpenFaaSSetupError) as info:
            await bad.start()
        await bad.close()
        assert "eventProcessor.openfaas.auth" in str(info.value) and "HTTP 401" in str(info.value)
        assert "wrong-pass" not in str(info.value)
        # no credentials configured at all
        none = OpenFaaSProcessor(context(gw.url), retry=FAST)
        with pytest.raises(OpenFaaSSetupError, match=r"the gateway needs auth\.basicAuth"):
            await none.start()
    assert secret not in caplog.text and "wrong-pass" not in caplog.text
    assert secret not in repr(proc.cfg)


async def test_unreachable_gateway_is_a_clear_startup_error() -> None:
    async with OpenFaaSGateway() as gw:
        url = gw.url
    proc = OpenFaaSProcessor(context(url), retry=FAST)
    with pytest.raises(OpenFaaSSetupError, match=r"openfaas.address: cannot reach the OpenFaaS"):
        await proc.start()


async def test_https_gateway_is_trusted_through_root_cas(tmp_path: Path) -> None:
    """certificates.rootCAs are trusted for the gateway too (as for every TLS client);
    without them an unknown CA fails the start, naming the certificate problem."""
    ca, server_tls = make_tls(tmp_path)
    async with OpenFaaSGateway(ssl_context=server_tls) as gw:
        assert gw.url.startswith("https://")
        gw.deploy("fn", "VmPoweredOnEvent")
        trusting = context(gw.url)
        trusting.config.certificates = Certificates(rootCAs=[str(ca)])
        proc = await started(trusting)
        try:
            await proc.process(event("VmPoweredOnEvent", 1))
        finally:
            await proc.close()
        assert len(gw.calls("fn")) == 1
        untrusting = OpenFaaSProcessor(context(gw.url), retry=FAST)
        with pytest.raises(OpenFaaSSetupError, match=r"cannot reach .*[Cc]ertificate"):
            await untrusting.start()


PROXY_VARS = ("http_proxy", "https_proxy", "all_proxy", "no_proxy")


async def test_proxy_from_the_environment_is_used(monkeypatch: pytest.MonkeyPatch) -> None:
    """HTTP_PROXY (with credentials) is honoured: the gateway test server stands in for the
    proxy, so a gateway host that does not resolve is reached through it."""
    for name in PROXY_VARS:
        monkeypatch.delenv(name, raising=False)
        monkeypatch.delenv(name.upper(), raising=False)
    async with OpenFaaSGateway() as gw:
        gw.deploy("fn", "VmPoweredOnEvent")
        host = gw.url.split("://", 1)[1]
        monkeypatch.setenv("HTTP_PROXY", f"http://proxy-user:proxy-pass@{host}")
        proc = await started(context("http://gateway.openfaas.invalid:8080"))
        try:
            await proc.process(event("VmPoweredOnEvent", 1))
        finally:
            await proc.close()
        # NO_PROXY: connected directly (and the name does not resolve)
        monkeypatch.setenv("NO_PROXY", ".openfaas.invalid")
        direct = OpenFaaSProcessor(context("http://gateway.openfaas.invalid:8080"), retry=FAST)
        with pytest.raises(OpenFaaSSetupError, match="cannot reach"):
            await direct.start()
    (call,) = gw.calls("fn")
    assert call.headers["host"] == "gateway.openfaas.invalid:8080"
    credentials = base64.b64encode(b"proxy-user:proxy-pass").decode()
    assert call.headers["proxy-authorization"] == f"Basic {credentials}"


async def test_order_is_kept_per_function_while_functions_run_in_parallel() -> None:
    async with OpenFaaSGateway() as gw:
        gw.deploy("slow-a", "VmPoweredOnEvent", delay=0.02)
        gw.deploy("slow-b", "VmPoweredOnEvent", delay=0.02)
        proc = await started(context(gw.url))
        try:
            # the router calls process up to max_in_flight times concurrently, in order
            assert proc.max_in_flight > 1
            tasks = [
                asyncio.create_task(proc.process(event("VmPoweredOnEvent", n))) for n in range(10)
            ]
            await asyncio.gather(*tasks)
        finally:
            await proc.close()
    for fn in ("slow-a", "slow-b"):
        assert [json.loads(i.body)["id"] for i in gw.calls(fn)] == [f"id-{n}" for n in range(10)]
        assert gw.max_concurrency[fn] == 1  # one at a time per function
    assert gw.max_total_concurrency == 2  # the two functions were served side by side


async def test_events_through_the_router_reach_subscribed_functions(caplog: Any) -> None:
    caplog.set_level(logging.WARNING, logger="event_router.router")
    async with OpenFaaSGateway() as gw:
        gw.deploy("power", "VmPoweredOnEvent,VmPoweredOffEvent")
        gw.deploy("broken", "VmPoweredOffEvent", status=501)  # not retried
        router = Router(context(gw.url, port=free_port()))  # registry path, as the CLI does
        await router.start()
        try:
            await router.wait_ready(5)
            url = router.provider.url  # type: ignore[attr-defined]
            subjects = ["VmPoweredOnEvent", "VmCreatedEvent", "VmPoweredOffEvent"]
            batch = [to_dict(event(s, n)) for n, s in enumerate(subjects)]
            async with httpx.AsyncClient() as client:
                resp = await client.post(
                    url,
                    content=json.dumps(batch),
                    headers={"Content-Type": "application/cloudevents-batch+json"},
                )
            assert resp.status_code == 202, resp.text
            await gw.wait_for(2, timeout=5)
        finally:
            await router.stop(timeout=10)
        stats = router.stats()
    assert [json.loads(i.body)["id"] for i in gw.calls("power")] == ["id-0", "id-2"]
    # the failing function's event (a non-retryable 501, no dead-letter sink) is dropped:
    # counted as such, not as delivered, and logged at ERROR with the function and the answer
    faas = stats["vmware.event.router.stats"]["openfaas"]
    assert faas["dropped"] == 1
    assert faas["invocations"]["VmPoweredOffEvent"]["FailureCount"] == 1
    failures = [
        r.getMessage()
        for r in caplog.records
        if "dropped" in r.getMessage() and r.levelname == "ERROR"
    ]
    assert len(failures) == 1, failures
    assert "event id-2" in failures[0] and "broken" in failures[0] and "HTTP 501" in failures[0]
