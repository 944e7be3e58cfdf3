"""Processor ``openfaas``: invoke every function subscribed to the event's subject.

Functions subscribe with a ``topic`` annotation (comma-separated subjects, e.g.
``topic: "VmPoweredOnEvent,VmPoweredOffEvent"``). The processor reads them from the
gateway (``GET /system/functions``) at start and every ``refreshIntervalSeconds``, so new,
changed or removed functions apply without a restart.

For an event, topic = CloudEvent ``subject``; every subscribed function is invoked with
the structured CloudEvent JSON (``Content-Type: application/cloudevents+json``):
``POST /function/<name>`` (``async: false``) or ``POST /async-function/<name>``
(``async: true``, the gateway answers 202 once queued). Connection errors, 429 and 5xx
(except 501) are retried with backoff; after the last retry the event is reported to the
router as failed (:class:`DeliveryError`), never silently dropped. Events reach each
function in the order the router hands them over, while different functions are invoked
concurrently. In sync mode a read timeout (:class:`ReadTimeout`) is not retried: the
function got the event and may still be running.

One pooled aiohttp session (:class:`event_router.httpclient.Client`); an ``https://``
gateway's certificate is checked against the system CAs and ``certificates.rootCAs``.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import logging
from typing import Any

import aiohttp
from cloudevents.conversion import to_json

from event_router.config.models import EventProcessor, OpenFaaSConfig
from event_router.core import CloudEvent, DeliveryError, Processor, RouterContext
from event_router.delivery import TRANSPORT_ERRORS, RetryPolicy, send_with_retry
from event_router.httpclient import Client, Response

log = logging.getLogger(__name__)

__all__ = ["OpenFaaSProcessor", "OpenFaaSSetupError", "ReadTimeout", "parse_topics", "retry_status"]

FIELD = "eventProcessor.openfaas"
CONTENT_TYPE = "application/cloudevents+json"


class OpenFaaSSetupError(RuntimeError):
    """The gateway cannot be used: unreachable, credentials rejected, bad answer."""


class ReadTimeout(TimeoutError):
    """No answer (or no more of it) within ``invoke_timeout``: the request was sent."""


def retry_status(status: int) -> bool:
    """429 and 5xx except 501 Not Implemented are worth another try."""
    return status == 429 or (500 <= status <= 599 and status != 501)


def parse_topics(functions: Any) -> dict[str, tuple[str, ...]]:
    """Map subject -> function names from a ``GET /system/functions`` answer."""
    if not isinstance(functions, list):
        raise ValueError(f"expected a JSON array of functions (got {type(functions).__name__})")
    table: dict[str, list[str]] = collections.defaultdict(list)
    for fn in functions:
        if not isinstance(fn, dict) or not isinstance(fn.get("name"), str):
            continue
        annotations = fn.get("annotations") or {}
        topics = annotations.get("topic") if isinstance(annotations, dict) else None
        if not isinstance(topics, str):
            continue
        for topic in topics.split(","):
            topic = topic.strip()
            if topic and fn["name"] not in table[topic]:
                table[topic].append(fn["name"])
    return {topic: tuple(sorted(names)) for topic, names in table.items()}


def _not_a_read_timeout(err: BaseException) -> bool:
    return not isinstance(err, ReadTimeout)


class OpenFaaSProcessor(Processor):
    type = "openfaas"
    #: events in flight; order per function is kept (see module docstring)
    max_in_flight = 16
    #: seconds a sync invocation may take (the gateway's own timeouts usually end it first)
    invoke_timeout: float = 60.0

    def __init__(
        self,
        context: RouterContext,
        spec: EventProcessor | None = None,
        index: int = 0,
        *,
        retry: RetryPolicy | None = None,
    ) -> None:
        super().__init__(context, spec, index)
        self.field = f"{self.field_prefix}.openfaas"
        cfg = self.spec.openfaas
        if cfg is None:
            raise OpenFaaSSetupError(f"{self.field}: required when type is openfaas")
        self.cfg: OpenFaaSConfig = cfg
        self.base = cfg.address.rstrip("/")
        #: the ``Authorization`` header of ``auth.basicAuth`` (None: no auth)
        self._authorization: str | None = None
        if cfg.auth is not None:
            if cfg.auth.type != "basic_auth" or cfg.auth.basicAuth is None:
                raise OpenFaaSSetupError(
                    f"{self.field}.auth.type: {cfg.auth.type!r} with basicAuth is required "
                    "(allowed: basic_auth)"
                    if cfg.auth.type != "basic_auth"
                    else f"{self.field}.auth.basicAuth: required when auth.type is basic_auth"
                )
            basic = cfg.auth.basicAuth
            self._authorization = aiohttp.encode_basic_auth(
                basic.username, basic.password.get_secret_value()
            )
        delivery = self.spec.delivery
        self.retry = retry or RetryPolicy.of(
            delivery, RetryPolicy(attempts=5, base_delay=0.2, max_delay=5.0)
        )
        if "timeout" in delivery.model_fields_set:
            self.invoke_timeout = delivery.timeout_seconds
        #: the router sets this to count retries in its metrics
        #: subject -> subscribed function names
        self.topics: dict[str, tuple[str, ...]] = {}
        self.counters: collections.Counter[str] = collections.Counter()
        self._client: Client | None = None
        self._refresher: asyncio.Task[None] | None = None
        self._refresh_now = asyncio.Event()
        self._tails: dict[str, asyncio.Future[None]] = {}

    def address(self) -> str:
        return self.base

    @property
    def mode(self) -> str:
        return "async" if self.cfg.async_ else "sync"

    # --- lifecycle -------------------------------------------------------------------

    async def start(self) -> None:
        headers = {"X-Connector": "event-router"}
        if self._authorization is not None:
            headers["Authorization"] = self._authorization
        self._client = Client(
            self.base,
            ssl_context=self.context.ssl_context(False),
            # connecting 5 s; waiting for a pooled connection, and every read, invoke_timeout
            timeout=aiohttp.ClientTimeout(
                total=None,
                connect=self.invoke_timeout,
                sock_connect=5.0,
                sock_read=self.invoke_timeout,
            ),
            limit=self.max_in_flight * 4,
            headers=headers,
        )
        try:
            await self.refresh()
        except OpenFaaSSetupError:
            await self._client.aclose()
            self._client = None
            raise
        self._refresher = asyncio.create_task(self._refresh_loop(), name="openfaas-refresh")

    async def close(self) -> None:
        if self._refresher is not None:
            self._refresher.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._refresher
            self._refresher = None
        if self._client is not None:
            await self._client.aclose()
            self._client = None

    # --- discovery -------------------------------------------------------------------

    async def refresh(self) -> None:
        """Read the functions and their topics from the gateway."""
        assert self._client is not None
        try:
            response = await self._client.get("/system/functions")
        except TRANSPORT_ERRORS as err:
            raise OpenFaaSSetupError(
                f"{self.field}.address: cannot reach the OpenFaaS gateway at {self.base} "
                f"({type(err).__name__}: {str(err) or 'no detail'})"
            ) from None
        if response.status_code in (401, 403):
            hint = (
                "check auth.basicAuth"
                if self._authorization
                else "the gateway needs auth.basicAuth"
            )
            raise OpenFaaSSetupError(
                f"{self.field}.auth: the gateway at {self.base} rejected GET /system/functions "
                f"with HTTP {response.status_code} ({hint})"
            )
        if response.status_code != 200:
            raise OpenFaaSSetupError(
                f"{self.field}.address: GET {self.base}/system/functions answered HTTP "
                f"{response.status_code}, expected 200 (is this an OpenFaaS gateway?)"
            )
        try:
            topics = parse_topics(response.json())
        except ValueError as err:
            raise OpenFaaSSetupError(
                f"{self.field}.address: GET {self.base}/system/functions: {err}"
            ) from None
        if topics != self.topics:
            log.info(
                "openfaas: %d topic(s) subscribed: %s",
                len(topics),
                "; ".join(f"{t} -> {', '.join(fns)}" for t, fns in sorted(topics.items()))
                or "none",
            )
        self.topics = topics
        self.counters["refreshes"] += 1

    async def _refresh_loop(self) -> None:
        while True:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._refresh_now.wait(), self.cfg.refreshIntervalSeconds)
            self._refresh_now.clear()
            try:
                await self.refresh()
            except OpenFaaSSetupError as err:
                self.counters["refresh_errors"] += 1
                log.warning("openfaas: function refresh failed, keeping the last list: %s", err)

    # --- delivery --------------------------------------------------------------------

    async def process(self, event: CloudEvent) -> None:
        if self._client is None:
            raise DeliveryError("openfaas processor not started")
        subject = event.get("subject")
        functions = self.topics.get(subject, ()) if subject else ()
        if not functions:
            self.counters["unsubscribed"] += 1
            return
        body = to_json(event)
        headers = {"Content-Type": CONTENT_TYPE, "X-Topic": subject or ""}
        # take each function's place in line now, before any await, to keep the order
        loop = asyncio.get_running_loop()
        turns: list[tuple[str, asyncio.Future[None] | None, asyncio.Future[None]]] = []
        for name in functions:
            mine: asyncio.Future[None] = loop.create_future()
            turns.append((name, self._tails.get(name), mine))
            self._tails[name] = mine
        results = await asyncio.gather(
            *(
                self._in_turn(name, prev, mine, body, headers, event.get("type"))
                for name, prev, mine in turns
            ),
            return_exceptions=True,
        )
        failed = [
            (name, r) for (name, _, _), r in zip(turns, results, strict=True) if r is not None
        ]
        if not failed:
            return
        for _, err in failed:
            if not isinstance(err, DeliveryError):
                raise err
        detail = "; ".join(f"{name}: {err}" for name, err in failed)
        raise DeliveryError(
            f"{len(failed)} of {len(functions)} function(s) failed for {subject}: {detail}",
            retryable=any(getattr(e, "retryable", False) for _, e in failed),
        )

    async def _in_turn(
        self,
        name: str,
        prev: asyncio.Future[None] | None,
        mine: asyncio.Future[None],
        body: bytes,
        headers: dict[str, str],
        event_type: str | None = None,
    ) -> None:
        try:
            if prev is not None and not prev.done():
                await asyncio.shield(prev)
            await self._invoke(name, body, headers, event_type)
        finally:
            if not mine.done():
                mine.set_result(None)
            if self._tails.get(name) is mine:
                del self._tails[name]

    async def _invoke(
        self, name: str, body: bytes, headers: dict[str, str], event_type: str | None = None
    ) -> None:
        client = self._client
        assert client is not None
        path = f"/async-function/{name}" if self.cfg.async_ else f"/function/{name}"

        last_status = 0

        async def send() -> Response:
            nonlocal last_status
            try:
                response = await client.post(path, data=body, headers=headers)
            except aiohttp.SocketTimeoutError as err:
                raise ReadTimeout(str(err)) from err
            last_status = response.status_code
            return response

        try:
            response = await send_with_retry(
                send,
                self.retry,
                retry_status=retry_status,
                # sync: a read timeout means the function got the event and is still running;
                # sending it again would run it twice (connection errors are retried)
                retry_transport=None if self.cfg.async_ else _not_a_read_timeout,
                on_retry=self.on_retry(event_type),
                what=f"{self.mode} invocation of {name}",
            )
        except DeliveryError:
            self.counters["failed"] += 1
            self.counters[f"failed:{name}"] += 1
            if last_status == 404:  # removed since the last refresh: re-read the list now
                self._refresh_now.set()
            raise
        if self.cfg.async_ and response.status_code != 202:
            log.warning(
                "openfaas: async invocation of %s answered HTTP %d (expected 202)",
                name,
                response.status_code,
            )
        self.counters["invoked"] += 1
