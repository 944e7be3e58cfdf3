"""webhook provider: receive CloudEvents over HTTP and pass them on unchanged.

Listens on ``eventProvider.webhook.bindAddress`` at ``path``:

* POST only (405 with ``Allow: POST`` otherwise).
* Binary mode (``ce-*`` headers, any body), structured mode
  (``Content-Type: application/cloudevents+json``) and batches
  (``application/cloudevents-batch+json``, a JSON array of structured events), decoded by
  the HTTP binding's rules in :mod:`event_router.cebinding` (percent-decoded ``ce-``
  headers, ``Content-Type`` as ``datacontenttype``).
* 400 for an invalid CloudEvent (with the reason), 415 for another media type, 413 for a
  body over ``maxBodyBytes``, 401 with ``WWW-Authenticate`` when ``auth`` (basic_auth) is
  set and the credentials are missing or wrong (compared in constant time).
* ``ack: delivered`` (the default): 202 only once every processor settled every event of
  the request (delivered, filtered out, dead-lettered, or dropped as rejected for good);
  503 with ``Retry-After`` when that did not happen within ``ackTimeoutSeconds`` or the
  router stopped first (the event may still be delivered: a client retry then sends it
  twice, with the same id). ``ack: queued``: 202 once every event was queued in memory
  (faster; the events are lost if the router dies before delivering them).
* Either way, when the events cannot be queued within ``accept_timeout`` (queues full) or
  the router is stopping: 503 with ``Retry-After``, so a client retry covers it.
* Requests are independent: their events are delivered concurrently (no order exists
  between separate clients; the events of one request keep theirs when queued).

It never changes an event nor acknowledges one it could lose, so before any 2xx it answers
400 for: a header value that is not UTF-8 (it would be altered on the way); an attribute
name longer than :data:`MAX_ATTRIBUTE_NAME` characters (the CloudEvents spec's limit), an
attribute value longer than :data:`MAX_ATTRIBUTE_VALUE_BYTES`, more than
:data:`MAX_ATTRIBUTES` attributes or more than :data:`MAX_ATTRIBUTES_BYTES` of them in all
(in binary mode they become HTTP headers; a sink would answer 431 to larger ones, after
our 202); an integer attribute outside the spec's 32-bit range; JSON with ``NaN`` /
``Infinity`` (or a number that overflows to it) or a duplicate key (re-encoding would change
it).

Robustness: a connection must send its request headers within ``header_timeout`` seconds
(from connecting, or from the end of the previous response) and the body within
``body_timeout`` (408), else it is closed (slowloris); at most ``max_connections`` are
open at once (more get 503 and are closed). Malformed requests are logged at WARNING
without a traceback, once per reason per minute (:class:`OncePerReason`).
"""

from __future__ import annotations

import asyncio
import json
import logging
import math
import re
import time
from typing import Any

from aiohttp import web
from cloudevents.http import CloudEvent

from event_router import cebinding
from event_router.core import Provider, Publisher, RouterContext
from event_router.metrics import basic_auth_checker, split_host_port

log = logging.getLogger(__name__)

__all__ = ["WebhookProvider", "make_event", "parse_request"]

FIELD = "eventProvider.webhook"
STRUCTURED = cebinding.STRUCTURED
BATCH = cebinding.BATCH
#: the request headers a debug log shows as they are; any other shows as <redacted> (a client
#: may put a token in any header: X-Gitlab-Token, X-Hub-Signature-256, X-Amz-Security-Token...)
LOGGED_HEADERS = frozenset(
    {"content-type", "content-length", "content-encoding", "user-agent", "host", "accept"}
)
_ATTR_NAME = re.compile(r"^[a-z0-9]+$")
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")
#: what undecodable bytes become (surrogateescape) or lone surrogates in JSON ("\ud800")
_SURROGATE = re.compile("[\ud800-\udfff]")
SPEC_VERSIONS = ("1.0", "0.3")
_REQUIRED = ("id", "source", "type")

#: limits on an event's attributes (also ``docs/router.md``). Names: the CloudEvents spec's
#: 20 characters. Values and totals: so that binary-mode headers stay far below the 8 KiB
#: per header line and 64 KiB per request that common servers accept (percent-encoding can
#: triple a value).
MAX_ATTRIBUTE_NAME = 20
MAX_ATTRIBUTE_VALUE_BYTES = 2048
MAX_ATTRIBUTES = 64
MAX_ATTRIBUTES_BYTES = 16384
#: the spec's Integer type: a signed 32-bit number
INT32 = (-(2**31), 2**31 - 1)
#: connection guards (WebhookProvider arguments)
HEADER_TIMEOUT = 10.0
BODY_TIMEOUT = 30.0
MAX_CONNECTIONS = 1024


class InvalidEvent(ValueError):
    """The request does not hold a valid CloudEvent (answered 400)."""


class UnsupportedMediaType(ValueError):
    """Neither binary mode nor a CloudEvents media type (answered 415)."""


class NotStandardJSON(ValueError):
    """JSON that parses only with Python's extensions (NaN, Infinity) or holds a duplicate
    key: decoding and re-encoding would change it."""


def _reject_constant(name: str) -> Any:
    raise NotStandardJSON(f"{name} is not a JSON number (allowed: finite numbers)")


def _finite_float(text: str) -> float:
    value = float(text)
    if not math.isfinite(value):
        raise NotStandardJSON(f"the number {text[:40]} is out of range (allowed: finite numbers)")
    return value


def _no_duplicates(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in pairs:
        if key in out:
            raise NotStandardJSON(f"duplicate key {key[:64]!r}")
        out[key] = value
    return out


def strict_json(body: bytes | str) -> Any:
    """``json.loads`` of standard JSON only: :class:`NotStandardJSON` for NaN/Infinity, a
    number beyond a float's range and duplicate keys; ValueError for a syntax error."""
    return json.loads(
        body,
        parse_constant=_reject_constant,
        parse_float=_finite_float,
        object_pairs_hook=_no_duplicates,
    )


def _binary_data(content_type: str | None, body: bytes) -> Any:
    """:func:`event_router.cebinding.binary_data` with standard JSON only: a JSON body that
    parses only with NaN/Infinity or a duplicate key is refused (:class:`InvalidEvent`),
    since re-encoding would change it; one that does not parse stays bytes as there."""
    if body and cebinding.is_json(content_type):
        try:
            return strict_json(body)
        except NotStandardJSON as err:
            raise InvalidEvent(f"the JSON data is not standard JSON: {err}") from None
        except (ValueError, UnicodeDecodeError, RecursionError):
            return body
    return cebinding.binary_data(content_type, body)


def make_event(attrs: dict[str, Any], data: Any) -> CloudEvent:
    """A CloudEvent of exactly these attributes, validated: required ``specversion``
    (1.0 or 0.3), ``id``, ``source``, ``type`` as non-empty strings; attribute names of
    lower-case letters and digits; values strings, integers or booleans. Nothing is added
    (the SDK's constructor would invent a ``time``)."""
    spec = attrs.get("specversion")
    if spec not in SPEC_VERSIONS:
        raise InvalidEvent(f"attribute 'specversion' must be 1.0 or 0.3 (got {spec!r})")
    for name in _REQUIRED:
        value = attrs.get(name)
        if not isinstance(value, str) or not value:
            raise InvalidEvent(f"attribute {name!r} must be a non-empty string (got {value!r})")
    if len(attrs) > MAX_ATTRIBUTES:
        raise InvalidEvent(f"{len(attrs)} attributes (allowed: at most {MAX_ATTRIBUTES})")
    total = 0
    for name, value in attrs.items():
        if len(name) > MAX_ATTRIBUTE_NAME:
            raise InvalidEvent(
                f"attribute name {name[:MAX_ATTRIBUTE_NAME]!r}... is {len(name)} characters "
                f"long (allowed: at most {MAX_ATTRIBUTE_NAME}, the CloudEvents spec's limit)"
            )
        if not _ATTR_NAME.match(name):
            raise InvalidEvent(
                f"attribute name {name!r} is invalid (allowed: lower-case letters and digits)"
            )
        if (
            isinstance(value, int)
            and not isinstance(value, bool)
            and not (INT32[0] <= value <= INT32[1])
        ):
            raise InvalidEvent(
                f"attribute {name!r} is an integer out of range (allowed: {INT32[0]} to "
                f"{INT32[1]}, the CloudEvents Integer type)"
            )
        size = len(value.encode("utf-8", "surrogatepass")) if isinstance(value, str) else 0
        if size > MAX_ATTRIBUTE_VALUE_BYTES:
            raise InvalidEvent(
                f"attribute {name!r} is {size} bytes long (allowed: at most "
                f"{MAX_ATTRIBUTE_VALUE_BYTES} bytes)"
            )
        total += len(name) + size
        if total > MAX_ATTRIBUTES_BYTES:
            raise InvalidEvent(
                f"the attributes exceed {MAX_ATTRIBUTES_BYTES} bytes (allowed: at most "
                f"{MAX_ATTRIBUTES_BYTES} bytes of attribute names and values)"
            )
        if not isinstance(value, str | int | bool):
            raise InvalidEvent(
                f"attribute {name!r} must be a string, integer or boolean "
                f"(got {type(value).__name__})"
            )
        if isinstance(value, str) and _CONTROL.search(value):
            raise InvalidEvent(f"attribute {name!r} contains control characters")
        if isinstance(value, str) and _SURROGATE.search(value):
            raise InvalidEvent(f"attribute {name!r} is not valid UTF-8")
    had_time = "time" in attrs
    event = CloudEvent(attrs, data)
    if not had_time:
        event._attributes.pop("time", None)
    return event


def _structured_event(raw: Any) -> CloudEvent:
    try:
        attrs, data = cebinding.from_structured(raw)
    except cebinding.BindingError as err:
        raise InvalidEvent(str(err)) from None
    return make_event(attrs, data)


def _json(body: bytes, what: str) -> Any:
    try:
        return strict_json(body)
    except NotStandardJSON as err:
        raise InvalidEvent(f"{what} is not standard JSON: {err}") from None
    except (ValueError, UnicodeDecodeError, RecursionError) as err:
        raise InvalidEvent(f"{what} is not valid JSON: {_message(err)}") from None


def _message(err: BaseException) -> str:
    text = " ".join(str(err).split()) or type(err).__name__
    return text[:300] + ("..." if len(text) > 300 else "")


def parse_request(headers: dict[str, str], body: bytes) -> list[CloudEvent]:
    """Decode one request into CloudEvents (headers with lower-case names).

    Raises :class:`InvalidEvent` (400) or :class:`UnsupportedMediaType` (415).
    """
    content_type = headers.get("content-type")
    media = (content_type or "").split(";", 1)[0].strip().lower()
    # the media type decides first (HTTP binding 3): a structured or batch request may carry
    # ce- headers too (3.2.3), and they do not make it binary
    if media == STRUCTURED:
        return [_structured_event(_json(body, "the structured event"))]
    if media == BATCH:
        items = _json(body, "the batch body")
        if not isinstance(items, list):
            raise InvalidEvent(f"batch body must be a JSON array (got {type(items).__name__})")
        events = []
        for i, item in enumerate(items):
            try:
                events.append(_structured_event(item))
            except InvalidEvent as err:
                raise InvalidEvent(f"batch item {i}: {err}") from None
        return events
    if media.startswith("application/cloudevents"):
        raise UnsupportedMediaType(
            f"unsupported event format {media!r}: send Content-Type {STRUCTURED} or {BATCH}, "
            "or a binary-mode CloudEvent"
        )
    if "ce-specversion" in headers:  # binary content mode
        try:
            attrs: dict[str, Any] = dict(cebinding.binary_attributes(headers))
        except cebinding.BindingError as err:
            raise InvalidEvent(str(err)) from None
        return [make_event(attrs, _binary_data(content_type, body))]
    raise UnsupportedMediaType(
        f"unsupported media type {media or '(none)'!r}: send a binary-mode CloudEvent "
        f"(ce-specversion and other ce- headers) or Content-Type {STRUCTURED} or {BATCH}"
    )


#: bytes of request bodies the webhook holds at once (read, or waiting for queue room);
#: past it a request gets 503 at once, before its body is read (memory stays bounded
#: however many clients post while the processors are behind). At least maxBodyBytes.
MAX_PENDING_BYTES = 32 * 1024 * 1024
#: how a valid request that was answered 503 because its events were not delivered is logged
NOT_ACKNOWLEDGED = "events not acknowledged (the client should retry)"


class OncePerReason:
    """Logs each reason for a malformed request at WARNING once, then at most once per
    ``interval`` seconds with the number of repeats in between; never a traceback (an
    attacker must not be able to flood the log)."""

    def __init__(self, logger: logging.Logger, interval: float = 60.0) -> None:
        self.logger = logger
        self.interval = interval
        #: reason -> (monotonic time of the last line, repeats since)
        self._seen: dict[str, tuple[float, int]] = {}

    def warn(self, reason: str, detail: str, kind: str = "malformed request") -> bool:
        """Log ``kind: reason: detail`` unless ``reason`` was logged within ``interval``;
        whether a line was written."""
        now = time.monotonic()
        last = self._seen.get(reason)
        if last is not None and now - last[0] < self.interval:
            self._seen[reason] = (last[0], last[1] + 1)
            return False
        if len(self._seen) > 256:  # reasons are a small fixed set; stay bounded anyway
            self._seen.clear()
        repeats = f" ({last[1]} more since the last report)" if last and last[1] else ""
        detail = " ".join(detail.split())
        detail = detail if len(detail) <= 200 else detail[:197] + "..."
        self.logger.warning("webhook: %s: %s: %s%s", kind, reason, detail, repeats)
        self._seen[reason] = (now, 0)
        return True


class _ServerLog:
    """The ``logger`` of aiohttp's request handler: requests its HTTP parser refuses (bad
    method, header line too long, invalid characters ...) go to :class:`OncePerReason`
    instead of an ERROR with a traceback each."""

    def __init__(self, once: OncePerReason) -> None:
        self.once = once

    def _report(self, msg: str, args: tuple[Any, ...], exc: Any) -> None:
        if isinstance(exc, BaseException):
            reason = type(exc).__name__
            detail = str(getattr(exc, "message", "") or exc)
        else:
            reason, detail = "bad request", msg % args if args else msg
        self.once.warn(reason, detail)

    def exception(self, msg: str, *args: Any, exc_info: Any = None, **_: Any) -> None:
        if msg.startswith("Error handling request"):
            self._report(msg, args, exc_info)
        else:  # a fault of ours (an unhandled exception in the handler): keep it visible
            log.error(msg, *args, exc_info=exc_info)

    def debug(self, msg: str, *args: Any, exc_info: Any = None, **_: Any) -> None:
        if msg.startswith("Error handling request"):
            self._report(msg, args, exc_info)
        else:
            log.debug(msg, *args)

    def warning(self, msg: str, *args: Any, **_: Any) -> None:
        log.warning(msg, *args)

    def info(self, msg: str, *args: Any, **_: Any) -> None:
        log.info(msg, *args)

    def error(self, msg: str, *args: Any, **_: Any) -> None:
        log.error(msg, *args)

    def isEnabledFor(self, level: int) -> bool:
        return log.isEnabledFor(level)


class _Guard(asyncio.Protocol):
    """Wraps aiohttp's protocol for one connection: refuses it past the connection limit
    and closes it when its request headers do not arrive within the header timeout."""

    def __init__(self, provider: WebhookProvider, inner: asyncio.Protocol) -> None:
        self.provider = provider
        self.inner = inner
        self.transport: asyncio.Transport | None = None
        self.busy = 0
        self.refused = False
        self._timer: asyncio.TimerHandle | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        p = self.provider
        if len(p._guards) >= p.max_connections:
            self.refused = True
            p._once.warn(
                "connection limit",
                f"{p.max_connections} connections are open; refusing one more with 503",
            )
            transport.write(
                b"HTTP/1.1 503 Service Unavailable\r\nConnection: close\r\n"
                b"Retry-After: " + p.retry_after.encode() + b"\r\nContent-Length: 0\r\n\r\n"
            )
            transport.close()
            return
        self.transport = transport
        p._guards[transport] = self
        self.arm()
        self.inner.connection_made(transport)

    def arm(self) -> None:
        self.disarm()
        loop = asyncio.get_running_loop()
        self._timer = loop.call_later(self.provider.header_timeout, self._expired)

    def disarm(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None

    def _expired(self) -> None:
        self._timer = None
        if self.busy or self.transport is None:
            return
        peer = self.transport.get_extra_info("peername")
        self.provider._once.warn(
            "header timeout",
            f"no complete request headers from {peer} within "
            f"{self.provider.header_timeout:g}s; closing the connection",
        )
        self.transport.abort()

    def data_received(self, data: bytes) -> None:
        if not self.refused:
            self.inner.data_received(data)

    def eof_received(self) -> bool | None:
        return None if self.refused else self.inner.eof_received()

    def pause_writing(self) -> None:
        if not self.refused:
            self.inner.pause_writing()

    def resume_writing(self) -> None:
        if not self.refused:
            self.inner.resume_writing()

    def connection_lost(self, exc: Exception | None) -> None:
        self.disarm()
        if self.refused:
            return
        if self.transport is not None:
            self.provider._guards.pop(self.transport, None)
        self.inner.connection_lost(exc)


class WebhookProvider(Provider):
    type = "webhook"
    ordered = False  # separate clients: no order between their events

    def __init__(
        self,
        context: RouterContext,
        *,
        accept_timeout: float = 5.0,
        retry_after: int = 1,
        header_timeout: float = HEADER_TIMEOUT,
        body_timeout: float = BODY_TIMEOUT,
        max_connections: int = MAX_CONNECTIONS,
    ) -> None:
        cfg = context.config.eventProvider.webhook
        if cfg is None:
            raise ValueError(f"{FIELD}: required when eventProvider.type is webhook")
        self.cfg = cfg
        super().__init__(context)
        self.host, self.port = split_host_port(cfg.bindAddress, field=f"{FIELD}.bindAddress")
        if not cfg.path.startswith("/") or cfg.path == "/":
            raise ValueError(
                f"{FIELD}.path: must start with / and not be / alone (got {cfg.path!r}; "
                "e.g. /webhook)"
            )
        self.path = cfg.path
        self.max_body = cfg.maxBodyBytes
        self.max_pending_bytes = max(MAX_PENDING_BYTES, self.max_body)
        self._pending_bytes = 0
        self.accept_timeout = accept_timeout
        self.retry_after = str(retry_after)
        self._check_auth = basic_auth_checker(cfg.auth, field=f"{FIELD}.auth")
        self._publisher: Publisher | None = None
        self._count_rejected: Any = None
        self.url = ""
        self.header_timeout = header_timeout
        self.body_timeout = body_timeout
        self.max_connections = max_connections
        self._guards: dict[asyncio.BaseTransport, _Guard] = {}
        self._once = OncePerReason(log)

    def address(self) -> str:
        return f"http://{self.cfg.bindAddress}{self.cfg.path}"

    async def run(self, publisher: Publisher) -> None:
        self._publisher = publisher
        self._count_rejected = getattr(publisher, "count_rejected", None)
        app = web.Application(client_max_size=self.max_body)
        app.router.add_route("*", self.path, self._handle)
        runner = web.AppRunner(
            app,
            access_log=None,
            handle_signals=False,
            shutdown_timeout=2.0,
            logger=_ServerLog(self._once),
        )
        await runner.setup()
        server: asyncio.Server | None = None
        try:
            factory = runner.server
            assert factory is not None
            loop = asyncio.get_running_loop()

            def guarded() -> asyncio.Protocol:
                return _Guard(self, factory())

            try:
                server = await loop.create_server(guarded, self.host, self.port, reuse_address=True)
            except OSError as err:
                raise OSError(
                    err.errno,
                    f"{FIELD}.bindAddress: cannot listen on {self.cfg.bindAddress}: {err.strerror}",
                ) from err
            if server.sockets:
                self.port = server.sockets[0].getsockname()[1]
            host = f"[{self.host}]" if ":" in self.host else self.host
            self.url = f"http://{host}:{self.port}{self.path}"
            self.stats.address = self.url
            self.ready = True
            log.info("webhook: listening on %s", self.url)
            await asyncio.Event().wait()
        finally:
            self.ready = False
            if server is not None:
                server.close()
            await runner.cleanup()

    # --- request handling ------------------------------------------------------------

    def _reject(
        self,
        status: int,
        text: str,
        headers: dict[str, str] | None = None,
        *,
        reason: str | None = None,
        kind: str = "malformed request",
    ) -> web.Response:
        """An error answer; ``reason`` (a short fixed text) logs it as ``kind`` (by default a
        malformed request), once per reason per minute."""
        if self._count_rejected is not None:
            self._count_rejected(self.type, status)
        if reason is not None:
            self._once.warn(reason, f"answered {status}: {text}", kind)
        return web.Response(status=status, text=text + "\n", headers=headers)

    async def _handle(self, request: web.Request) -> web.Response:
        guard = self._guards.get(request.transport) if request.transport else None
        if guard is not None:
            guard.busy += 1
            guard.disarm()
        try:
            return await self._handle_request(request)
        finally:
            if guard is not None:
                guard.busy -= 1
                if not guard.busy:
                    guard.arm()  # the next request's headers, on a kept-alive connection

    async def _handle_request(self, request: web.Request) -> web.Response:
        if log.isEnabledFor(logging.DEBUG):
            log.debug(
                "webhook request %s %s from %s headers=%s",
                request.method,
                request.path,
                request.remote,
                {
                    k: (
                        v
                        if k.lower() in LOGGED_HEADERS or k.lower().startswith("ce-")
                        else "<redacted>"
                    )
                    for k, v in request.headers.items()
                },
            )
        if request.method != "POST":
            return self._reject(
                405, f"method {request.method} not allowed: use POST", {"Allow": "POST"}
            )
        if self._check_auth is not None and not self._check_auth(
            request.headers.get("Authorization")
        ):
            return self._reject(
                401,
                "unauthorized: valid basic auth credentials required",
                {"WWW-Authenticate": 'Basic realm="event-router webhook", charset="UTF-8"'},
            )
        length = request.content_length
        if length is not None and length > self.max_body:
            return self._reject(413, self._too_large(length))
        charge = length if length is not None else self.max_body
        if self._pending_bytes and self._pending_bytes + charge > self.max_pending_bytes:
            return self._reject(
                503,
                f"router busy: {self._pending_bytes} bytes of requests are waiting; retry later",
                {"Retry-After": self.retry_after},
            )
        self._pending_bytes += charge
        try:
            return await self._accept(request)
        finally:
            self._pending_bytes -= charge

    async def _accept(self, request: web.Request) -> web.Response:
        for name, value in request.raw_headers:
            try:
                value.decode("utf-8")
            except UnicodeDecodeError:
                self.stats.events_err += 1
                shown = name.decode("ascii", "replace")[:64]
                return self._reject(
                    400,
                    f"invalid request: the value of header {shown} is not valid UTF-8",
                    reason="header not UTF-8",
                )
        try:
            async with asyncio.timeout(self.body_timeout):
                body = await request.read()
        except web.HTTPRequestEntityTooLarge:
            return self._reject(413, self._too_large(None), reason="body too large")
        except TimeoutError:
            return self._reject(
                408,
                f"request body not received within {self.body_timeout:g}s",
                {"Connection": "close"},
                reason="body timeout",
            )
        headers = {k.lower(): v for k, v in request.headers.items()}
        try:
            events = parse_request(headers, body)
        except UnsupportedMediaType as err:
            return self._reject(415, str(err), reason="unsupported media type")
        except InvalidEvent as err:
            self.stats.events_err += 1
            return self._reject(400, f"invalid CloudEvent: {err}", reason="invalid CloudEvent")
        publisher = self._publisher
        assert publisher is not None
        tickets: list[asyncio.Future[bool]] = []
        try:
            async with asyncio.timeout(self.accept_timeout):
                for event in events:
                    tickets.append(await publisher.publish(event))
        except TimeoutError:
            log.warning("webhook: router queue full for %.1fs; answering 503", self.accept_timeout)
            return self._reject(503, "router busy: retry later", {"Retry-After": self.retry_after})
        except Exception as err:  # RouterClosed (shutting down) and the like
            log.info("webhook: event not accepted (%s); answering 503", err)
            return self._reject(
                503, "router shutting down: retry later", {"Retry-After": self.retry_after}
            )
        if self.cfg.ack == "queued":
            return web.Response(status=202)
        return await self._await_delivery(tickets)

    async def _await_delivery(self, tickets: list[asyncio.Future[bool]]) -> web.Response:
        """``ack: delivered``: 202 once every ticket resolved True, else 503."""
        pending = [t for t in tickets if not t.done()]
        if pending:
            # shielded: a client that hangs up does not cancel the delivery
            done, _ = await asyncio.wait(
                [asyncio.shield(t) for t in pending], timeout=self.cfg.ackTimeoutSeconds
            )
            if len(done) < len(pending):
                return self._reject(
                    503,
                    f"not delivered within {self.cfg.ackTimeoutSeconds:g}s "
                    f"({FIELD}.ackTimeoutSeconds); retry later",
                    {"Retry-After": self.retry_after},
                    reason="not delivered in time",
                    kind=NOT_ACKNOWLEDGED,
                )
        if all(t.result() for t in tickets):
            return web.Response(status=202)
        return self._reject(
            503,
            "not delivered: the router stopped first; retry later",
            {"Retry-After": self.retry_after},
            reason="not delivered",
            kind=NOT_ACKNOWLEDGED,
        )

    def _too_large(self, length: int | None) -> str:
        got = f"{length} bytes" if length is not None else "more"
        return (
            f"request body too large (got {got}; allowed: at most {self.max_body} bytes, "
            f"{FIELD}.maxBodyBytes)"
        )
