"""send_with_retry against a real local HTTP sink (no mocked transport)."""

from __future__ import annotations

import email.utils
import socket
import time
from typing import Any

import aiohttp
import pytest
from cloudevents.conversion import to_binary
from cloudevents.http import CloudEvent

from event_router.core import DeliveryError
from event_router.delivery import (
    RetryPolicy,
    default_retry_status,
    retry_after_seconds,
    send_with_retry,
)
from event_router.httpclient import Response
from tests.support.sink import CloudEventSink

FAST = RetryPolicy(attempts=4, base_delay=0.01, max_delay=0.05, jitter=0.5)


def _event() -> CloudEvent:
    return CloudEvent({"type": "com.example.test", "source": "/test", "id": "1"}, {"n": 1})


async def _deliver(
    client: aiohttp.ClientSession, url: str, policy: RetryPolicy = FAST, **kw: Any
) -> Response:
    """One event through send_with_retry, sent the way the processors send (aiohttp)."""
    headers, body = to_binary(_event())

    async def send() -> Response:
        async with client.post(url, headers=headers, data=body, allow_redirects=False) as r:
            return Response(r.status, r.headers, await r.read())

    return await send_with_retry(send, policy, retry_status=default_retry_status, **kw)


async def test_503_twice_then_success_delivers_exactly_once() -> None:
    retries: list[str] = []
    async with CloudEventSink() as sink, aiohttp.ClientSession() as client:
        sink.fail_next(2, 503)
        response = await _deliver(client, sink.url, on_retry=lambda n, why: retries.append(why))
        assert response.status_code == 202
        assert sink.requests == 3
        assert len(sink.events) == 1
        assert retries == ["HTTP 503", "HTTP 503"]


@pytest.mark.parametrize("status", [408, 429, 500, 502, 504])
async def test_retryable_statuses_are_retried(status: int) -> None:
    async with CloudEventSink() as sink, aiohttp.ClientSession() as client:
        sink.fail_next(1, status)
        await _deliver(client, sink.url)
        assert sink.requests == 2
        assert len(sink.events) == 1


@pytest.mark.parametrize("status", [400, 401, 403, 404, 413, 422])
async def test_other_4xx_is_not_retried(status: int) -> None:
    async with CloudEventSink() as sink, aiohttp.ClientSession() as client:
        sink.fail_next(1, status)
        with pytest.raises(DeliveryError) as info:
            await _deliver(client, sink.url)
        assert f"HTTP {status}" in str(info.value)
        assert info.value.retryable is False
        assert sink.requests == 1


@pytest.mark.parametrize("status", [301, 302, 303, 307, 308])
async def test_redirect_is_a_failure_not_a_delivery(status: int) -> None:
    # the event was not taken by the receiver: counting it delivered would advance a
    # checkpoint past it; following a 301/302/303 would re-send it as a GET without a body
    async with CloudEventSink() as sink, aiohttp.ClientSession() as client:
        sink.fail_next(1, status, location="http://user:pw@other.example:8080/in?token=t0k")
        with pytest.raises(DeliveryError) as info:
            await _deliver(client, sink.url)
        message = str(info.value)
        assert f"redirected with HTTP {status} to http://other.example:8080/in" in message
        assert "pw" not in message and "t0k" not in message
        assert info.value.retryable is False
        assert sink.requests == 1 and sink.events == []


async def test_gives_up_after_the_last_attempt() -> None:
    async with CloudEventSink() as sink, aiohttp.ClientSession() as client:
        sink.fail_next(10, 503)
        with pytest.raises(DeliveryError) as info:
            await _deliver(client, sink.url)
        assert "after 4 attempt(s)" in str(info.value)
        assert info.value.retryable is True
        assert sink.requests == 4
        assert sink.events == []


async def test_retry_after_seconds_is_honoured() -> None:
    async with CloudEventSink() as sink, aiohttp.ClientSession() as client:
        sink.fail_next(1, 429, retry_after="1")
        start = time.monotonic()
        await _deliver(client, sink.url)
        elapsed = time.monotonic() - start
        assert 0.9 <= elapsed < 3, elapsed
        assert len(sink.events) == 1


async def test_retry_after_is_capped() -> None:
    policy = RetryPolicy(attempts=2, base_delay=0.01, max_retry_after=0.2)
    async with CloudEventSink() as sink, aiohttp.ClientSession() as client:
        sink.fail_next(1, 503, retry_after="3600")
        start = time.monotonic()
        await _deliver(client, sink.url, policy)
        assert time.monotonic() - start < 1.5


async def test_transport_errors_are_retried_then_fail() -> None:
    with socket.socket() as s:  # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    tries: list[int] = []
    async with aiohttp.ClientSession() as client:
        with pytest.raises(DeliveryError) as info:
            await _deliver(
                client, f"http://127.0.0.1:{port}/", on_retry=lambda n, _: tries.append(n)
            )
    assert "ClientConnectorError" in str(info.value)
    assert tries == [1, 2, 3]


def test_retry_after_parsing() -> None:
    now = time.time()
    assert retry_after_seconds("7") == 7.0
    assert retry_after_seconds(None) is None
    assert retry_after_seconds("soon") is None
    date = email.utils.formatdate(now + 10, usegmt=True)
    parsed = retry_after_seconds(date, now=now)
    assert parsed is not None and 8.5 <= parsed <= 10.5
    past = email.utils.formatdate(now - 100, usegmt=True)
    assert retry_after_seconds(past, now=now) == 0.0


def test_backoff_grows_and_is_capped() -> None:
    policy = RetryPolicy(base_delay=0.1, max_delay=1.0, jitter=0.0)
    assert [policy.backoff(n) for n in (1, 2, 3, 4, 5, 6)] == [0.1, 0.2, 0.4, 0.8, 1.0, 1.0]
    jittered = RetryPolicy(base_delay=1.0, max_delay=1.0, jitter=0.5)
    values = {jittered.backoff(1) for _ in range(50)}
    assert all(0.5 <= v <= 1.0 for v in values) and len(values) > 1


def test_invalid_policy_is_rejected() -> None:
    with pytest.raises(ValueError, match="attempts"):
        RetryPolicy(attempts=0)
