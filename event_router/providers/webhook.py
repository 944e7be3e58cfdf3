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
* 202 only once every event of the request was accepted by the router (queued). When it
  cannot be accepted within ``accept_timeout`` (queues full) or the router is stopping:
  503 with ``Retry-After``, so a client retry covers it.
"""

from __future__ import annotations

import asyncio
import json
import logging
import re
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
SPEC_VERSIONS = ("1.0", "0.3")
_REQUIRED = ("id", "source", "type")


class InvalidEvent(ValueError):
    """The request does not hold a valid CloudEvent (answered 400)."""


class UnsupportedMediaType(ValueError):
    """Neither binary mode nor a CloudEvents media type (answered 415)."""


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
    for name, value in attrs.items():
        if not _ATTR_NAME.match(name):
            raise InvalidEvent(
                f"attribute name {name!r} is invalid (allowed: lower-case letters and digits)"
            )
        if not isinstance(value, str | int | bool):
            raise InvalidEvent(
                f"attribute {name!r} must be a string, integer or boolean "
                f"(got {type(value).__name__})"
            )
        if isinstance(value, str) and _CONTROL.search(value):
            raise InvalidEvent(f"attribute {name!r} contains control characters")
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
        return json.loads(body)
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
        return [make_event(attrs, cebinding.binary_data(content_type, body))]
    raise UnsupportedMediaType(
        f"unsupported media type {media or '(none)'!r}: send a binary-mode CloudEvent "
        f"(ce-specversion and other ce- headers) or Content-Type {STRUCTURED} or {BATCH}"
    )


#: bytes of request bodies the webhook holds at once (read, or waiting for queue room);
#: past it a request gets 503 at once, before its body is read (memory stays bounded
#: however many clients post while the processors are behind). At least maxBodyBytes.
MAX_PENDING_BYTES = 32 * 1024 * 1024


class WebhookProvider(Provider):
    type = "webhook"

    def __init__(
        self, context: RouterContext, *, accept_timeout: float = 5.0, retry_after: int = 1
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

    def address(self) -> str:
        return f"http://{self.cfg.bindAddress}{self.cfg.path}"

    async def run(self, publisher: Publisher) -> None:
        self._publisher = publisher
        self._count_rejected = getattr(publisher, "count_rejected", None)
        app = web.Application(client_max_size=self.max_body)
        app.router.add_route("*", self.path, self._handle)
        runner = web.AppRunner(app, access_log=None, handle_signals=False, shutdown_timeout=2.0)
        await runner.setup()
        try:
            site = web.TCPSite(runner, self.host, self.port)
            try:
                await site.start()
            except OSError as err:
                raise OSError(
                    err.errno,
                    f"{FIELD}.bindAddress: cannot listen on {self.cfg.bindAddress}: {err.strerror}",
                ) from err
            server = site._server
            if server is not None and getattr(server, "sockets", None):
                self.port = server.sockets[0].getsockname()[1]  # type: ignore[attr-defined]
            host = f"[{self.host}]" if ":" in self.host else self.host
            self.url = f"http://{host}:{self.port}{self.path}"
            self.stats.address = self.url
            self.ready = True
            log.info("webhook: listening on %s", self.url)
            await asyncio.Event().wait()
        finally:
            self.ready = False
            await runner.cleanup()

    # --- request handling ------------------------------------------------------------

    def _reject(
        self, status: int, text: str, headers: dict[str, str] | None = None
    ) -> web.Response:
        if self._count_rejected is not None:
            self._count_rejected(self.type, status)
        return web.Response(status=status, text=text + "\n", headers=headers)

    async def _handle(self, request: web.Request) -> web.Response:
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
        try:
            body = await request.read()
        except web.HTTPRequestEntityTooLarge:
            return self._reject(413, self._too_large(None))
        headers = {k.lower(): v for k, v in request.headers.items()}
        try:
            events = parse_request(headers, body)
        except UnsupportedMediaType as err:
            return self._reject(415, str(err))
        except InvalidEvent as err:
            self.stats.events_err += 1
            return self._reject(400, f"invalid CloudEvent: {err}")
        publisher = self._publisher
        assert publisher is not None
        try:
            async with asyncio.timeout(self.accept_timeout):
                for event in events:
                    await publisher.publish(event)
        except TimeoutError:
            log.warning("webhook: router queue full for %.1fs; answering 503", self.accept_timeout)
            return self._reject(503, "router busy: retry later", {"Retry-After": self.retry_after})
        except Exception as err:  # RouterClosed (shutting down) and the like
            log.info("webhook: event not accepted (%s); answering 503", err)
            return self._reject(
                503, "router shutting down: retry later", {"Retry-After": self.retry_after}
            )
        return web.Response(status=202)

    def _too_large(self, length: int | None) -> str:
        got = f"{length} bytes" if length is not None else "more"
        return (
            f"request body too large (got {got}; allowed: at most {self.max_body} bytes, "
            f"{FIELD}.maxBodyBytes)"
        )
