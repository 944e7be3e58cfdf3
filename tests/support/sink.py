"""A real CloudEvents HTTP sink for tests: an aiohttp server on 127.0.0.1:<ephemeral port>.

It decodes each request with the cloudevents SDK (binary, structured, and
``application/cloudevents-batch+json``) and records the events; the SDK does not undo the
HTTP binding's percent-encoding of ``ce-`` header values (3.1.3.2), so the sink does that
first, with the standard library's ``urllib.parse.unquote`` (an implementation apart from the
router's). ``raw`` keeps every request's headers and body as they arrived. ``fail_next(n, status)``
makes the next ``n`` requests answer ``status`` (the event is then *not* recorded, as a
real sink that failed would not have processed it). ``delay`` slows every answer (for
backpressure tests); ``auth`` = (username, password) makes it demand basic auth (401);
``ssl_context`` serves HTTPS (see ``tests.support.tls.make_tls``).

    async with CloudEventSink() as sink:
        ...  # deliver to sink.url
        events = await sink.wait_for(3, timeout=5)
"""

from __future__ import annotations

import asyncio
import base64
import json
import ssl
import time
from collections import deque
from collections.abc import Mapping
from typing import Any
from urllib.parse import quote, unquote

from aiohttp import web
from cloudevents.conversion import to_dict
from cloudevents.http import CloudEvent, from_dict, from_http

BATCH_MEDIA_TYPE = "application/cloudevents-batch+json"


class CloudEventSink:
    def __init__(
        self,
        *,
        delay: float = 0.0,
        auth: tuple[str, str] | None = None,
        path: str = "/",
        ssl_context: ssl.SSLContext | None = None,
        host: str = "127.0.0.1",
    ) -> None:
        self.host = host  # TESTENV_HOST_IP when pods must reach the sink
        self.delay = delay
        self.auth = auth
        self.path = path
        self.ssl_context = ssl_context
        self.url = ""
        self.port = 0
        self.events: list[CloudEvent] = []
        #: every request that reached the handler (including failed and rejected ones)
        self.requests = 0
        #: raw headers of every request, in order (lower-cased names)
        self.request_headers: list[dict[str, str]] = []
        #: (headers with lower-cased names, body) of every request that was decoded
        self.raw: list[tuple[dict[str, str], bytes]] = []
        #: the client's (host, port) of every request, in order: one port = one connection
        self.peers: list[tuple[str, int]] = []
        #: requests currently being handled (for concurrency assertions)
        self.in_flight = 0
        #: time.monotonic() of each entry of ``events``
        self.arrivals: list[float] = []
        self.max_in_flight = 0
        self._fail: deque[int] = deque()
        #: while set, every request is answered with this status (a sink that is down)
        self.down: int | None = None
        #: an event whose body holds one of these texts is answered 400 (a poison event)
        self.reject_containing: set[bytes] = set()
        self._retry_after: str | None = None
        self._location: str | None = None
        self._changed = asyncio.Event()
        self._runner: web.AppRunner | None = None

    # --- control ---------------------------------------------------------------------

    def fail_next(
        self,
        n: int,
        status: int = 503,
        retry_after: str | None = None,
        location: str | None = None,
    ) -> None:
        """Answer the next ``n`` requests with ``status`` (optionally with Retry-After, or
        with Location for a redirect)."""
        for _ in range(n):
            self._fail.append(status)
        self._retry_after = retry_after
        self._location = location

    async def wait_for(self, count: int, timeout: float) -> list[CloudEvent]:  # noqa: ASYNC109
        """Wait until at least ``count`` events arrived; raise TimeoutError otherwise."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while len(self.events) < count:
            remaining = deadline - loop.time()
            if remaining <= 0:
                raise TimeoutError(
                    f"sink got {len(self.events)} events, expected {count} within {timeout}s"
                )
            self._changed.clear()
            try:
                await asyncio.wait_for(self._changed.wait(), remaining)
            except TimeoutError:
                continue
        return list(self.events)

    # --- lifecycle -------------------------------------------------------------------

    async def __aenter__(self) -> CloudEventSink:
        app = web.Application(client_max_size=64 * 1024 * 1024)
        app.router.add_route("*", "/{tail:.*}", self._handle)
        # a handler still sleeping (``delay``) at exit is cancelled after 2 s, not aiohttp's 60
        self._runner = web.AppRunner(app, access_log=None, shutdown_timeout=2.0)
        await self._runner.setup()
        site = web.TCPSite(self._runner, self.host, 0, ssl_context=self.ssl_context)
        await site.start()
        server = site._server
        assert server is not None
        port = server.sockets[0].getsockname()[1]  # type: ignore[attr-defined]
        scheme = "https" if self.ssl_context is not None else "http"
        self.url = f"{scheme}://{self.host}:{port}{self.path}"
        self.port = port
        return self

    async def __aexit__(self, *exc: object) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    # --- handler ---------------------------------------------------------------------

    async def _handle(self, request: web.Request) -> web.Response:
        self.requests += 1
        self.request_headers.append({k.lower(): v for k, v in request.headers.items()})
        peer = request.transport.get_extra_info("peername") if request.transport else None
        self.peers.append((peer[0], peer[1]) if peer else ("", 0))
        self.in_flight += 1
        self.max_in_flight = max(self.max_in_flight, self.in_flight)
        try:
            body = await request.read()
            if self.delay:
                await asyncio.sleep(self.delay)
            if self.auth is not None and not self._authorized(request):
                return web.Response(status=401, headers={"WWW-Authenticate": 'Basic realm="sink"'})
            if self.down is not None:
                return web.Response(status=self.down, text="sink down")
            if any(text in body for text in self.reject_containing):
                return web.Response(status=400, text='{"error":"poison event rejected"}')
            if self._fail:
                status = self._fail.popleft()
                headers = {"Retry-After": self._retry_after} if self._retry_after else {}
                if self._location:
                    headers["Location"] = self._location
                return web.Response(status=status, headers=headers, text="injected failure")
            self.raw.append(({k.lower(): v for k, v in request.headers.items()}, body))
            try:
                events = self._decode(request, body)
            except Exception as err:  # the SDK raises several exception types
                return web.Response(status=400, text=f"invalid CloudEvent: {err}")
            self.events.extend(events)
            self.arrivals.extend([time.monotonic()] * len(events))
            self._changed.set()
            return web.Response(status=202)
        finally:
            self.in_flight -= 1

    def _authorized(self, request: web.Request) -> bool:
        assert self.auth is not None
        expected = base64.b64encode(f"{self.auth[0]}:{self.auth[1]}".encode()).decode()
        return request.headers.get("Authorization", "") == f"Basic {expected}"

    @staticmethod
    def _decode(request: web.Request, body: bytes) -> list[CloudEvent]:
        if request.content_type == BATCH_MEDIA_TYPE:
            items: Any = json.loads(body)
            if not isinstance(items, list):
                raise ValueError("batch body is not a JSON array")
            return [
                from_http({"content-type": "application/cloudevents+json"}, json.dumps(i))
                for i in items
            ]
        return [from_http(percent_decoded(request.headers), body)]


def percent_decoded(headers: Mapping[str, str]) -> dict[str, str]:
    """Headers with the ``ce-`` values percent-decoded (UTF-8, strict), names lower-cased."""
    return {
        k.lower(): unquote(v, errors="strict") if k.lower().startswith("ce-") else v
        for k, v in headers.items()
    }


def event_dict(event: CloudEvent) -> dict[str, Any]:
    """The canonical dict of an event (attributes and data), for equality assertions."""
    return to_dict(event)


#: what HTTP binding 3.1.3.2 leaves unencoded: printable ASCII but '"' and '%'
_HEADER_SAFE = "".join(chr(c) for c in range(0x21, 0x7F) if chr(c) not in '"%')


def percent_encoded(headers: Mapping[str, Any]) -> dict[str, str]:
    """Headers (e.g. of the SDK's ``to_binary``, which does not encode) with the ``ce-``
    values percent-encoded as HTTP binding 3.1.3.2 says, by ``urllib.parse.quote``."""
    return {
        k: quote(str(v), safe=_HEADER_SAFE) if k.lower().startswith("ce-") else str(v)
        for k, v in headers.items()
    }


__all__ = [
    "BATCH_MEDIA_TYPE",
    "CloudEventSink",
    "event_dict",
    "from_dict",
    "percent_decoded",
    "percent_encoded",
]
