"""The webhook never changes an event or loses one it acknowledged, and bad clients cannot
flood it: raw HTTP over sockets against a running webhook -> knative -> sink router.

Each case answers 400 (or 401/408/503) *before* any 2xx, so a client retry or fix covers
it; nothing reaches the sink. Malformed requests are logged at WARNING, without a
traceback, once per reason.
"""

from __future__ import annotations

import asyncio
import base64
import json
import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import pytest

from event_router.core import RouterContext
from event_router.processors.knative import KnativeProcessor
from event_router.providers.webhook import (
    MAX_ATTRIBUTE_NAME,
    MAX_ATTRIBUTE_VALUE_BYTES,
    MAX_ATTRIBUTES,
    MAX_ATTRIBUTES_BYTES,
    OncePerReason,
    WebhookProvider,
)
from event_router.router import ProcessorSlot, Router
from tests.support.sink import CloudEventSink
from tests.unit.test_router_e2e import FAST, make_config

pytestmark = pytest.mark.timeout(60)


@asynccontextmanager
async def hook(
    *, auth: tuple[str, str] | None = None, **guards: Any
) -> AsyncIterator[tuple[WebhookProvider, CloudEventSink]]:
    async with CloudEventSink() as sink:
        config = make_config(sink.url, webhook_auth=auth)
        context = RouterContext(config)
        provider = WebhookProvider(context, **guards)
        router = Router(
            context,
            provider=provider,
            processors=[ProcessorSlot(KnativeProcessor(context, retry=FAST), name="kn")],
        )
        await router.start()
        try:
            await router.wait_ready(5)
            yield provider, sink
        finally:
            await router.stop(timeout=5)


def port_of(provider: WebhookProvider) -> int:
    return provider.port


async def exchange(port: int, raw: bytes, timeout: float = 10) -> bytes:  # noqa: ASYNC109
    """Send ``raw`` on a new connection; everything the server answers until it closes or
    one response is complete."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        writer.write(raw)
        await writer.drain()
        head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), timeout)
        length = 0
        for line in head.split(b"\r\n"):
            if line.lower().startswith(b"content-length:"):
                length = int(line.split(b":", 1)[1])
        body = await asyncio.wait_for(reader.readexactly(length), timeout) if length else b""
        return head + body
    finally:
        writer.close()


def status(answer: bytes) -> int:
    return int(answer.split(b" ", 2)[1])


def binary(headers: dict[str, bytes], body: bytes = b'{"a": 1}') -> bytes:
    base = {
        b"ce-specversion": b"1.0",
        b"ce-id": b"id-1",
        b"ce-source": b"/src",
        b"ce-type": b"t",
        b"content-type": b"application/json",
    }
    for k, v in headers.items():
        base[k.encode()] = v
    lines = b"".join(k + b": " + v + b"\r\n" for k, v in base.items())
    return (
        b"POST /webhook HTTP/1.1\r\nHost: x\r\n" + lines
        + b"Content-Length: " + str(len(body)).encode() + b"\r\n\r\n" + body
    )  # fmt: skip


def structured(body: bytes, ctype: bytes = b"application/cloudevents+json") -> bytes:
    return (
        b"POST /webhook HTTP/1.1\r\nHost: x\r\nContent-Type: " + ctype
        + b"\r\nContent-Length: " + str(len(body)).encode() + b"\r\n\r\n" + body
    )  # fmt: skip


GOOD = {"specversion": "1.0", "id": "id-1", "source": "/src", "type": "t"}

#: (case, request, the 400 message must contain)
BAD: list[tuple[str, bytes, str]] = [
    ("ce-id-invalid-utf8-ff", binary({"ce-id": b"id-\xff"}), "header ce-id is not valid UTF-8"),
    ("ce-id-invalid-utf8-fe", binary({"ce-id": b"id-\xfe"}), "header ce-id is not valid UTF-8"),
    ("ce-source-lone-continuation", binary({"ce-source": b"/s\x80"}), "not valid UTF-8"),
    ("ce-ext-overlong-utf8", binary({"ce-ext": b"\xc0\xaf"}), "not valid UTF-8"),
    ("ce-ext-surrogate-utf8", binary({"ce-ext": b"\xed\xa0\x80"}), "not valid UTF-8"),
    ("other-header-invalid-utf8", binary({"x-note": b"caf\xe9"}), "header x-note is not valid"),
    ("content-type-invalid-utf8", binary({"content-type": b"application/json\xff"}), "UTF-8"),
    (
        "binary-attribute-name-21",
        binary({"ce-" + "a" * 21: b"v"}),
        f"allowed: at most {MAX_ATTRIBUTE_NAME}",
    ),
    (
        "binary-attribute-value-too-long",
        binary({"ce-subject": b"s" * (MAX_ATTRIBUTE_VALUE_BYTES + 1)}),
        f"allowed: at most {MAX_ATTRIBUTE_VALUE_BYTES} bytes",
    ),
    (
        "binary-too-many-attributes",
        binary({f"ce-x{i}": b"v" for i in range(MAX_ATTRIBUTES)}),
        f"allowed: at most {MAX_ATTRIBUTES})",
    ),
    (
        "binary-attributes-total",
        binary({f"ce-x{i}": b"v" * 2000 for i in range(9)}),
        f"allowed: at most {MAX_ATTRIBUTES_BYTES} bytes",
    ),
    (
        "structured-attribute-name-500k",
        structured(json.dumps({**GOOD, "a" * 500_000: "v"}).encode()),
        "the CloudEvents spec's limit",
    ),
    (
        "structured-attribute-value-too-long",
        structured(json.dumps({**GOOD, "subject": "é" * MAX_ATTRIBUTE_VALUE_BYTES}).encode()),
        "bytes long",
    ),
    (
        "structured-integer-beyond-int32",
        structured(json.dumps({**GOOD, "seq": 2**31}).encode()),
        "CloudEvents Integer type",
    ),
    ("structured-data-nan", structured(b'{"specversion":"1.0","id":"i","source":"/s","type":"t","data":NaN}'), "NaN"),  # noqa: E501
    ("structured-data-infinity", structured(b'{"specversion":"1.0","id":"i","source":"/s","type":"t","data":[Infinity]}'), "Infinity"),  # noqa: E501
    ("structured-data-minus-infinity", structured(b'{"specversion":"1.0","id":"i","source":"/s","type":"t","data":{"x":-Infinity}}'), "Infinity"),  # noqa: E501
    ("structured-data-overflow", structured(b'{"specversion":"1.0","id":"i","source":"/s","type":"t","data":1e400}'), "out of range"),  # noqa: E501
    ("structured-duplicate-id", structured(b'{"specversion":"1.0","id":"a","id":"b","source":"/s","type":"t"}'), "duplicate key 'id'"),  # noqa: E501
    ("structured-duplicate-in-data", structured(b'{"specversion":"1.0","id":"i","source":"/s","type":"t","data":{"k":1,"k":2}}'), "duplicate key 'k'"),  # noqa: E501
    ("structured-lone-surrogate-attr", structured(b'{"specversion":"1.0","id":"i\\ud800","source":"/s","type":"t"}'), "not valid UTF-8"),  # noqa: E501
    ("batch-nan", structured(b'[{"specversion":"1.0","id":"i","source":"/s","type":"t","data":NaN}]', b"application/cloudevents-batch+json"), "NaN"),  # noqa: E501
    ("batch-duplicate", structured(b'[{"specversion":"1.0","id":"i","id":"j","source":"/s","type":"t"}]', b"application/cloudevents-batch+json"), "duplicate key"),  # noqa: E501
    ("binary-json-data-nan", binary({}, b'{"v": NaN}'), "NaN"),
    ("binary-json-data-duplicate", binary({}, b'{"v": 1, "v": 2}'), "duplicate key 'v'"),
]  # fmt: skip


async def test_each_bad_request_is_400_before_any_2xx_and_reaches_nothing(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.WARNING, logger="event_router")
    async with hook() as (provider, sink):
        for case, raw, text in BAD:
            answer = await exchange(port_of(provider), raw)
            assert status(answer) == 400, (case, answer[:300])
            assert text.encode() in answer, (case, answer[:400])
        # the same id twice, once per invalid byte, and nothing else, reached the sink
        good = await exchange(port_of(provider), binary({"ce-id": b"id-\xc3\xa9"}))
        assert status(good) == 202
        events = await sink.wait_for(1, timeout=5)
        await asyncio.sleep(0.3)
        assert [e["id"] for e in sink.events] == ["id-é"], events
    records = [r for r in caplog.records if "malformed request" in r.getMessage()]
    assert records and all(r.levelno == logging.WARNING and not r.exc_info for r in records)
    # once per reason: 25 bad requests, a handful of reasons
    reasons = {r.getMessage().split(": ")[2] for r in records}
    assert len(records) == len(reasons) <= 4, [r.getMessage() for r in records]


async def test_an_event_at_the_limits_is_delivered_unchanged() -> None:
    attrs = {f"x{i:02d}": "v" * 200 for i in range(MAX_ATTRIBUTES - 5)}
    attrs["a" * MAX_ATTRIBUTE_NAME] = "w" * MAX_ATTRIBUTE_VALUE_BYTES
    body = json.dumps({**GOOD, **attrs, "data": {"n": 2**40, "f": 1.5e300}}).encode()
    async with hook() as (provider, sink):
        answer = await exchange(port_of(provider), structured(body))
        assert status(answer) == 202, answer
        (event,) = await sink.wait_for(1, timeout=10)
        assert event["a" * MAX_ATTRIBUTE_NAME] == "w" * MAX_ATTRIBUTE_VALUE_BYTES
        assert event.get_data() == {"n": 2**40, "f": 1.5e300}


@pytest.mark.parametrize("scheme", ["Basic", "basic", "BASIC", "bAsIc"])
async def test_the_basic_scheme_is_case_insensitive(scheme: str) -> None:
    token = base64.b64encode(b"hook:s3cret-pass").decode()
    async with hook(auth=("hook", "s3cret-pass")) as (provider, _sink):
        ok = binary({"authorization": f"{scheme} {token}".encode()})
        assert status(await exchange(port_of(provider), ok)) == 202
        wrong = binary({"authorization": f"{scheme} {token[:-2]}xx".encode()})
        assert status(await exchange(port_of(provider), wrong)) == 401
        other = binary({"authorization": f"Bearer {token}".encode()})
        assert status(await exchange(port_of(provider), other)) == 401


async def test_slowloris_connections_are_closed_after_the_header_timeout(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.WARNING, logger="event_router")
    async with hook(header_timeout=0.5) as (provider, sink):
        port = port_of(provider)
        slow = []
        for _ in range(50):
            reader, writer = await asyncio.open_connection("127.0.0.1", port)
            writer.write(b"POST /webhook HTTP/1.1\r\nHost: x\r\nce-id: ")  # never finished
            slow.append((reader, writer))
        # one byte every 0.2 s does not keep a connection alive either
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        slow.append((reader, writer))
        for ch in b"POST /webhook HTTP/1.1\r\nX-a: bbbbbb":
            writer.write(bytes([ch]))
            await asyncio.sleep(0.02)
            if reader.at_eof():
                break
        for r, _w in slow:
            assert await asyncio.wait_for(r.read(), 5) == b""  # closed by the server
        assert not provider._guards
        # a real client still gets through, and a kept-alive connection serves a second
        # request that comes in time
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        for n in (1, 2):
            writer.write(binary({"ce-id": f"k-{n}".encode()}))
            head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 5)
            assert status(head) == 202
        await sink.wait_for(2, timeout=5)
        writer.close()
    timeouts = [r for r in caplog.records if "header timeout" in r.getMessage()]
    assert len(timeouts) == 1 and not timeouts[0].exc_info


async def test_a_slow_body_gets_408() -> None:
    async with hook(body_timeout=0.5) as (provider, sink):
        reader, writer = await asyncio.open_connection("127.0.0.1", port_of(provider))
        raw = binary({}, b'{"a": 1}')
        writer.write(raw[:-3])  # headers and part of the body
        head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 5)
        assert status(head) == 408
        writer.close()
        assert sink.requests == 0


async def test_connections_beyond_the_limit_get_503_and_are_closed(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.WARNING, logger="event_router")
    async with hook(max_connections=5, header_timeout=30) as (provider, _sink):
        port = port_of(provider)
        held = [await asyncio.open_connection("127.0.0.1", port) for _ in range(5)]
        await asyncio.sleep(0.1)
        assert len(provider._guards) == 5
        for _ in range(3):
            reader, writer = await asyncio.open_connection("127.0.0.1", port)
            answer = await asyncio.wait_for(reader.read(), 5)
            assert answer.startswith(b"HTTP/1.1 503 "), answer
            assert b"Retry-After: 1" in answer
            writer.close()
        for _r, w in held:
            w.close()
        await asyncio.sleep(0.2)
        # room again
        assert status(await exchange(port, binary({}))) == 202
    limit = [r for r in caplog.records if "connection limit" in r.getMessage()]
    assert len(limit) == 1


async def test_http_parser_errors_are_one_warning_per_reason_without_traceback(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.DEBUG)
    async with hook() as (provider, _sink):
        port = port_of(provider)
        garbage = [
            b"GARBAGE\r\n\r\n",
            b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03" + b"\x00" * 40,  # TLS hello
            b"POST /webhook HTTP/1.1\r\nHost: x\r\nce-id: " + b"a" * 9000 + b"\r\n\r\n",
            b"POST /webhook HTTP/1.1\r\nHost: x\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\n",
        ] * 5
        for raw in garbage:
            answer = await exchange(port, raw)
            assert status(answer) == 400
    assert not [r for r in caplog.records if r.exc_info], [
        r.getMessage() for r in caplog.records if r.exc_info
    ]
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR]
    warned = [r.getMessage() for r in caplog.records if "malformed request" in r.getMessage()]
    assert 1 <= len(warned) <= 4, warned  # 20 requests, at most one line per reason


def test_once_per_reason_counts_the_repeats() -> None:
    logger = logging.getLogger("test.once")
    records: list[str] = []

    class Keep(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            records.append(record.getMessage())

    logger.addHandler(Keep())
    once = OncePerReason(logger, interval=0.0)
    once.interval = 3600
    assert once.warn("r", "first")
    assert not once.warn("r", "second")
    assert not once.warn("r", "third")
    assert once.warn("other", "x" * 1000)
    once.interval = 0
    assert once.warn("r", "fourth")
    assert records[0] == "webhook: malformed request: r: first"
    assert len(records[1]) < 260
    assert records[2] == "webhook: malformed request: r: fourth (2 more since the last report)"
