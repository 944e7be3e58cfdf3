"""An OpenFaaS-gateway-compatible test server (aiohttp on 127.0.0.1:<ephemeral port>).

Written from the gateway's documented HTTP API (openfaas/faas ``api-docs/spec.openapi.yml``):

* ``GET /system/functions`` -> 200, a JSON array of function status objects
  (``name``, ``image``, ``namespace``, ``invocationCount``, ``replicas``,
  ``availableReplicas``, ``envProcess``, ``labels``, ``annotations``, ``createdAt``);
  protected by basic auth when the gateway has auth enabled (401 with
  ``WWW-Authenticate: Basic realm="Restricted"`` otherwise).
* ``POST /function/{name}`` -> the function's answer (sync); 404 for an unknown function.
* ``POST /async-function/{name}`` -> 202 Accepted with ``X-Call-Id`` (queued; the function
  runs later); 404 for an unknown function.
* ``GET /healthz`` -> 200.

As in OpenFaaS CE, invocations are not behind basic auth (``auth_functions=True`` puts
them behind it too). Test controls: :meth:`deploy`/:meth:`remove` functions with a
``topic`` annotation, :meth:`fail_next` (per function, answers ``status`` instead of
running), ``delay`` per function, and the record of :attr:`invocations`. With an
``ssl_context`` it serves HTTPS.
"""

from __future__ import annotations

import asyncio
import base64
import ssl
import time
import uuid
from collections import deque
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web


@dataclass
class Invocation:
    function: str
    mode: str  # "sync" | "async"
    body: bytes
    headers: dict[str, str]
    at: float = field(default_factory=time.monotonic)


@dataclass
class _Function:
    name: str
    annotations: dict[str, str]
    labels: dict[str, str]
    created: str
    delay: float = 0.0
    status: int = 200
    invocations: int = 0
    fail: deque[int] = field(default_factory=deque)


class OpenFaaSGateway:
    def __init__(
        self,
        *,
        auth: tuple[str, str] | None = None,
        auth_functions: bool = False,
        namespace: str = "openfaas-fn",
        ssl_context: ssl.SSLContext | None = None,
    ) -> None:
        self.ssl_context = ssl_context
        self.auth = auth
        self.auth_functions = auth_functions
        self.namespace = namespace
        self.url = ""
        self.invocations: list[Invocation] = []
        #: requests to GET /system/functions (including rejected ones)
        self.list_requests = 0
        self.unauthorized = 0
        self._functions: dict[str, _Function] = {}
        self._changed = asyncio.Event()
        self._runner: web.AppRunner | None = None
        self._in_flight: dict[str, int] = {}
        #: highest number of concurrent invocations seen per function, and over all
        self.max_concurrency: dict[str, int] = {}
        self.max_total_concurrency = 0

    # --- control ---------------------------------------------------------------------

    def deploy(
        self,
        name: str,
        topics: str | None = None,
        *,
        delay: float = 0.0,
        status: int = 200,
        annotations: dict[str, str] | None = None,
    ) -> None:
        """Deploy (or update) a function; ``topics`` becomes its ``topic`` annotation."""
        ann = dict(annotations or {})
        if topics is not None:
            ann["topic"] = topics
        self._functions[name] = _Function(
            name=name,
            annotations=ann,
            labels={"faas_function": name},
            created=time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
            delay=delay,
            status=status,
        )

    def remove(self, name: str) -> None:
        self._functions.pop(name, None)

    def fail_next(self, name: str, n: int, status: int = 503) -> None:
        """The next ``n`` invocations of ``name`` answer ``status`` without running it."""
        self._functions[name].fail.extend([status] * n)

    def calls(self, name: str | None = None, mode: str | None = None) -> list[Invocation]:
        return [
            i
            for i in self.invocations
            if (name is None or i.function == name) and (mode is None or i.mode == mode)
        ]

    async def wait_for(self, count: int, timeout: float = 5.0) -> list[Invocation]:  # noqa: ASYNC109
        """Wait until ``count`` successful invocations were recorded."""
        async with asyncio.timeout(timeout):
            while len(self.invocations) < count:
                self._changed.clear()
                await self._changed.wait()
        return list(self.invocations)

    # --- server ----------------------------------------------------------------------

    async def __aenter__(self) -> OpenFaaSGateway:
        app = web.Application(client_max_size=8 * 1024 * 1024)
        app.router.add_get("/healthz", self._healthz)
        app.router.add_get("/system/functions", self._list)
        app.router.add_post("/function/{name}", self._sync)
        app.router.add_post("/async-function/{name}", self._async)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0, ssl_context=self.ssl_context)
        await site.start()
        port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
        scheme = "https" if self.ssl_context is not None else "http"
        self.url = f"{scheme}://127.0.0.1:{port}"
        return self

    async def __aexit__(self, *exc: object) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    def _authorized(self, request: web.Request) -> bool:
        if self.auth is None:
            return True
        header = request.headers.get("Authorization", "")
        scheme, _, value = header.partition(" ")
        if scheme.lower() != "basic":
            return False
        try:
            user, _, password = base64.b64decode(value).decode().partition(":")
        except (ValueError, UnicodeDecodeError):
            return False
        return (user, password) == self.auth

    def _deny(self) -> web.Response:
        self.unauthorized += 1
        return web.Response(
            status=401,
            text="Unauthorized\n",
            headers={"WWW-Authenticate": 'Basic realm="Restricted"'},
        )

    async def _healthz(self, request: web.Request) -> web.Response:
        return web.Response(text="OK")

    async def _list(self, request: web.Request) -> web.Response:
        self.list_requests += 1
        if not self._authorized(request):
            return self._deny()
        body: list[dict[str, Any]] = [
            {
                "name": f.name,
                "image": f"functions/{f.name}:latest",
                "namespace": self.namespace,
                "invocationCount": f.invocations,
                "replicas": 1,
                "availableReplicas": 1,
                "envProcess": "",
                "labels": f.labels,
                "annotations": f.annotations,
                "createdAt": f.created,
            }
            for f in self._functions.values()
        ]
        return web.json_response(body)

    async def _invoke(self, request: web.Request, mode: str) -> web.Response:
        if self.auth_functions and not self._authorized(request):
            return self._deny()
        name = request.match_info["name"]
        fn = self._functions.get(name)
        if fn is None:
            return web.Response(status=404, text=f"Cannot find service: {name}.\n")
        body = await request.read()
        if fn.fail:
            return web.Response(status=fn.fail.popleft(), text="injected failure\n")
        call_id = str(uuid.uuid4())
        if mode == "async":
            self._record(fn, mode, body, request)
            return web.Response(status=202, headers={"X-Call-Id": call_id})
        self._in_flight[name] = self._in_flight.get(name, 0) + 1
        self.max_concurrency[name] = max(self.max_concurrency.get(name, 0), self._in_flight[name])
        self.max_total_concurrency = max(self.max_total_concurrency, sum(self._in_flight.values()))
        try:
            if fn.delay:
                await asyncio.sleep(fn.delay)
        finally:
            self._in_flight[name] -= 1
        if fn.status >= 400:
            return web.Response(status=fn.status, text="function error\n")
        self._record(fn, mode, body, request)
        return web.Response(
            status=fn.status,
            body=b"ok",
            headers={"X-Call-Id": call_id, "X-Duration-Seconds": f"{fn.delay:.6f}"},
        )

    def _record(self, fn: _Function, mode: str, body: bytes, request: web.Request) -> None:
        fn.invocations += 1
        headers = {k.lower(): v for k, v in request.headers.items()}
        self.invocations.append(Invocation(fn.name, mode, body, headers))
        self._changed.set()

    async def _sync(self, request: web.Request) -> web.Response:
        return await self._invoke(request, "sync")

    async def _async(self, request: web.Request) -> web.Response:
        return await self._invoke(request, "async")
