"""Metrics of one Router: the original's ``/stats`` JSON, Prometheus ``/metrics``, probes.

Every :class:`RouterMetrics` owns its own :class:`prometheus_client.CollectorRegistry`, so
several routers can run in one process (the operator's in-process runtime) without their
series colliding. :class:`MetricsServer` is the ``default`` metrics provider: an aiohttp
server on ``metricsProvider.default.bindAddress`` serving

* ``/stats``   - JSON compatible with the original router (``vmware.event.router.stats``)
* ``/metrics`` - Prometheus text format
* ``/healthz`` - 200 while the process serves requests
* ``/readyz``  - 200 when the provider is connected and processors started, else 503

Basic auth (``metricsProvider.default.auth``) protects ``/stats`` and ``/metrics``; the
probes stay open so kubelet probes work without credentials (they reveal nothing).
"""

from __future__ import annotations

import base64
import hmac
import logging
from collections.abc import Callable, Iterator
from typing import Any, Protocol

from aiohttp import web
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram
from prometheus_client.exposition import CONTENT_TYPE_LATEST, generate_latest
from prometheus_client.metrics_core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from event_router.config.models import Auth
from event_router.timefmt import rfc3339_epoch

log = logging.getLogger(__name__)

__all__ = [
    "MAX_DISTINCT",
    "OTHER",
    "InvocationStats",
    "MetricsServer",
    "Renders",
    "RouterMetrics",
    "basic_auth_checker",
    "rfc3339",
    "split_host_port",
]

#: distinct event types (metric label values) and subjects (/stats keys) kept per router;
#: more are counted under OTHER, so a client posting random types cannot grow memory
MAX_DISTINCT = 1000
OTHER = "_other"

LATENCY_BUCKETS = (
    0.001,
    0.0025,
    0.005,
    0.01,
    0.025,
    0.05,
    0.1,
    0.25,
    0.5,
    1.0,
    2.5,
    5.0,
    10.0,
    30.0,
    60.0,
)


def split_host_port(value: str, *, field: str) -> tuple[str, int]:
    """``host:port`` / ``[v6]:port`` -> (host, port); ValueError naming ``field``."""
    host, sep, port_s = value.rpartition(":")
    if not sep or not port_s.isdigit():
        raise ValueError(f"{field}: expected host:port (got {value!r}; e.g. 0.0.0.0:8082)")
    port = int(port_s)
    if not 0 <= port <= 65535:
        raise ValueError(f"{field}: port out of range (got {value!r}; allowed: 0-65535)")
    if host.startswith("[") and host.endswith("]"):
        host = host[1:-1]
    return host or "0.0.0.0", port


def basic_auth_checker(auth: Auth | None, *, field: str) -> Callable[[str | None], bool] | None:
    """A constant-time checker of an ``Authorization`` header value, or None (no auth).

    Only ``basic_auth`` is meaningful for an HTTP listener; other types raise ValueError.
    """
    if auth is None:
        return None
    if auth.type != "basic_auth" or auth.basicAuth is None:
        raise ValueError(
            f"{field}.type: only basic_auth is supported here (got {auth.type!r}; "
            f"allowed: basic_auth with {field}.basicAuth)"
        )
    secret = f"{auth.basicAuth.username}:{auth.basicAuth.password.get_secret_value()}"
    expected = base64.b64encode(secret.encode())

    def check(header: str | None) -> bool:
        # RFC 7235: the scheme is case-insensitive (Basic, basic, BASIC), then one or more
        # spaces, then the credentials (token68, compared exactly)
        scheme, _, credentials = (header or "").strip(" \t").partition(" ")
        given = credentials.strip(" ").encode("utf-8", "surrogateescape")
        # compare_digest runs in time independent of where the strings differ
        same = hmac.compare_digest(given, expected)
        return same and scheme.lower() == "basic"

    return check


class InvocationStats:
    """Per processor: SuccessCount / FailureCount per event subject (the original's shape)."""

    __slots__ = ("address", "by_subject", "started", "type")

    def __init__(self, type_: str, address: str, started: float) -> None:
        self.type = type_
        self.address = address
        self.started = started
        self.by_subject: dict[str, list[int]] = {}

    def record(self, subject: Any, ok: bool) -> None:
        # a webhook client may send a number or a boolean as subject: keys stay strings (the
        # JSON keys they become), so /stats can always sort them
        subject = subject if isinstance(subject, str) else str(subject)
        counts = self.by_subject.get(subject)
        if counts is None:
            if len(self.by_subject) >= MAX_DISTINCT:
                subject = OTHER
                counts = self.by_subject.get(subject)
            if counts is None:
                counts = self.by_subject[subject] = [0, 0]
        counts[0 if ok else 1] += 1

    def as_json(self) -> dict[str, Any]:
        return {
            "type": self.type,
            "address": self.address,
            "started": rfc3339(self.started),
            "invocations": {
                subject: {"SuccessCount": s, "FailureCount": f}
                for subject, (s, f) in sorted(self.by_subject.items())
            },
        }


def rfc3339(ts: float) -> str:
    """A POSIX timestamp in RFC 3339 with milliseconds (``2024-05-01T10:00:00.000Z``)."""
    return rfc3339_epoch(ts, 3)


class RouterMetrics:
    """The Prometheus series of one router, in their own registry.

    ``labels`` (e.g. the RouterConfig's namespace/name under the operator) are added to
    every series as constant labels.
    """

    def __init__(self, labels: dict[str, str] | None = None) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        self.const_labels = dict(sorted((labels or {}).items()))
        extra = list(self.const_labels)
        r = self.registry
        self.received = Counter(
            "event_router_events_received",
            "Events accepted from the provider, by provider and event type",
            ["provider", "type", *extra],
            registry=r,
        )
        self.delivered = Counter(
            "event_router_events_delivered",
            "Events delivered by a processor, by processor and event type",
            ["processor", "type", *extra],
            registry=r,
        )
        self.failed = Counter(
            "event_router_events_failed",
            "Delivery rounds that failed after a processor's retries, by processor and event "
            "type (a retryable failure is retried again until delivered)",
            ["processor", "type", *extra],
            registry=r,
        )
        self.dropped = Counter(
            "event_router_events_dropped",
            "Events a processor rejected for good (a non-retryable answer) with no "
            "deadLetterSink: logged at ERROR with their id, then given up",
            ["processor", "type", *extra],
            registry=r,
        )
        self.filtered = Counter(
            "event_router_events_filtered",
            "Events a processor's filters did not select (settled without a delivery), by "
            "processor and event type",
            ["processor", "type", *extra],
            registry=r,
        )
        self.dead_lettered = Counter(
            "event_router_events_dead_lettered",
            "Events sent to a processor's deadLetterSink after their delivery failed for good",
            ["processor", "type", *extra],
            registry=r,
        )
        self.stalled = Gauge(
            "event_router_delivery_stalled_events",
            "Events whose delivery keeps failing with a retryable error and is retried until "
            "the sink recovers (the stream waits behind them), by processor",
            ["processor", *extra],
            registry=r,
        )
        self.retried = Counter(
            "event_router_delivery_retries",
            "Delivery attempts that failed and were retried, by processor, event type and reason",
            ["processor", "type", "reason", *extra],
            registry=r,
        )
        self.rejected = Counter(
            "event_router_requests_rejected",
            "Requests a provider rejected (webhook: by HTTP status)",
            ["provider", "status", *extra],
            registry=r,
        )
        self.latency = Histogram(
            "event_router_delivery_latency_seconds",
            "From acceptance by the router to settlement by a processor (queueing, "
            "delivery and retries included)",
            ["processor", *extra],
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        self.queue_depth = Gauge(
            "event_router_queue_depth",
            "Events waiting in a processor's queue",
            ["processor", *extra],
            registry=r,
        )
        self.queue_capacity = Gauge(
            "event_router_queue_capacity",
            "Capacity of a processor's queue",
            ["processor", *extra],
            registry=r,
        )
        self.ready = Gauge(
            "event_router_ready", "1 when the router is ready, else 0", extra, registry=r
        )
        self.leader = Gauge(
            "event_router_leader",
            "1 while this replica streams events (the Lease holder, or the only replica), 0 "
            "while it waits as a standby",
            extra,
            registry=r,
        )
        self.provider_connected = Gauge(
            "event_router_provider_connected",
            "1 while the provider is connected to its source (vCenter/Horizon: logged in and "
            "reading events; webhook: listening), else 0",
            ["provider", *extra],
            registry=r,
        )
        self._extra_values = tuple(self.const_labels.values())
        self._children: dict[tuple[Any, ...], Any] = {}
        self._types: set[str] = set()

    def type_label(self, event_type: str | None) -> str:
        """The event type as a label value; past MAX_DISTINCT types, OTHER."""
        value = event_type or ""
        if value in self._types:
            return value
        if len(self._types) >= MAX_DISTINCT:
            return OTHER
        self._types.add(value)
        return value

    def child(self, metric: Any, *values: str) -> Any:
        """A labelled child, cached (labels() lookups are the costly part of the hot path)."""
        key = (id(metric), *values)
        c = self._children.get(key)
        if c is None:
            labels = (*values, *self._extra_values)
            c = self._children[key] = metric.labels(*labels) if labels else metric
        return c

    def watch_provider(self, label: str, provider: Any) -> None:
        """Series read from the provider at every scrape: ``provider_connected`` and, for a
        provider that keeps checkpoints, the checkpoint's pending events and last advance."""
        self.child(self.provider_connected, label).set_function(
            lambda: 1.0 if provider.ready else 0.0
        )
        self.registry.register(_CheckpointCollector(label, provider, self.const_labels))

    def render(self) -> bytes:
        return generate_latest(self.registry)


class _CheckpointCollector(Collector):
    """``event_router_checkpoint_*``: only for a provider that keeps checkpoints (so a
    webhook or ``checkpoint: false`` router has none of these series)."""

    def __init__(self, label: str, provider: Any, const_labels: dict[str, str]) -> None:
        self._provider = provider
        self._names = ["provider", *const_labels]
        self._values = [label, *const_labels.values()]

    def collect(self) -> Iterator[Metric]:
        tracker = self._provider.checkpoint_tracker
        if tracker is not None:
            pending = GaugeMetricFamily(
                "event_router_checkpoint_pending_events",
                "Events the provider published that its checkpoint does not cover yet "
                "(not settled, or behind an event that was not delivered)",
                labels=self._names,
            )
            pending.add_metric(self._values, float(tracker.uncovered))
            yield pending
        advanced = self._provider.checkpoint_advanced_at
        if advanced is not None:
            last = GaugeMetricFamily(
                "event_router_checkpoint_last_advanced_timestamp_seconds",
                "Unix time of the last checkpoint save that moved the checkpoint",
                labels=self._names,
            )
            last.add_metric(self._values, advanced)
            yield last


class Renders(Protocol):
    """What :class:`MetricsServer` serves on ``/metrics``: Prometheus text format."""

    def render(self) -> bytes: ...


class MetricsServer:
    """The ``default`` metrics provider: /stats, /metrics, /healthz, /readyz over aiohttp.

    Also the operator's ``--metrics-bind-address`` server (``metrics`` is then the operator's
    collector of every in-process router, ``bind_field`` names the flag in errors)."""

    def __init__(
        self,
        bind_address: str,
        metrics: Renders,
        *,
        stats: Callable[[], dict[str, Any]],
        ready: Callable[[], bool],
        auth: Auth | None = None,
        field: str = "metricsProvider.default",
        bind_field: str | None = None,
        not_ready_reason: Callable[[], str | None] | None = None,
        role: Callable[[], str | None] | None = None,
    ) -> None:
        self.bind_field = bind_field or f"{field}.bindAddress"
        self.host, self.port = split_host_port(bind_address, field=self.bind_field)
        self.metrics = metrics
        self._stats = stats
        self._ready = ready
        #: why /readyz answers 503 (its body says it), when the owner knows
        self._not_ready_reason = not_ready_reason
        #: "leader" or "standby" under leader election (the /readyz body says which)
        self._role = role
        self._check = basic_auth_checker(auth, field=f"{field}.auth")
        self._runner: web.AppRunner | None = None
        self.url = ""

    async def start(self) -> None:
        app = web.Application()
        app.router.add_get("/stats", self._guard(self._handle_stats))
        app.router.add_get("/metrics", self._guard(self._handle_metrics))
        app.router.add_get("/healthz", self._handle_healthz)
        app.router.add_get("/readyz", self._handle_readyz)
        runner = web.AppRunner(app, access_log=None, handle_signals=False)
        await runner.setup()
        site = web.TCPSite(runner, self.host, self.port)
        try:
            await site.start()
        except OSError as err:
            await runner.cleanup()
            raise OSError(
                err.errno,
                f"{self.bind_field}: cannot listen on {self.host}:{self.port}: {err.strerror}",
            ) from err
        self._runner = runner
        server = site._server
        if server is not None and getattr(server, "sockets", None):
            sock = server.sockets[0].getsockname()  # type: ignore[attr-defined]
            self.port = sock[1]
        host = f"[{self.host}]" if ":" in self.host else self.host
        self.url = f"http://{host}:{self.port}"
        log.info("metrics server listening on %s (/stats, /metrics, /healthz, /readyz)", self.url)

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    def _guard(self, handler: Any) -> Any:
        check = self._check
        if check is None:
            return handler

        async def guarded(request: web.Request) -> web.StreamResponse:
            if not check(request.headers.get("Authorization")):
                return web.Response(
                    status=401,
                    text="unauthorized\n",
                    headers={"WWW-Authenticate": 'Basic realm="event-router metrics"'},
                )
            result: web.StreamResponse = await handler(request)
            return result

        return guarded

    async def _handle_stats(self, request: web.Request) -> web.Response:
        return web.json_response(self._stats(), dumps=_dumps)

    async def _handle_metrics(self, request: web.Request) -> web.Response:
        body = self.metrics.render()
        return web.Response(body=body, headers={"Content-Type": CONTENT_TYPE_LATEST})

    async def _handle_healthz(self, request: web.Request) -> web.Response:
        return web.Response(text="ok\n")

    async def _handle_readyz(self, request: web.Request) -> web.Response:
        if self._ready():
            role = self._role() if self._role is not None else None
            if role:
                return web.Response(text=f"ready ({role})\n", headers={"X-Event-Router-Role": role})
            return web.Response(text="ready\n")
        why = self._not_ready_reason() if self._not_ready_reason is not None else None
        return web.Response(status=503, text=f"not ready: {why}\n" if why else "not ready\n")


def _dumps(obj: Any) -> str:
    import json

    return json.dumps(obj, indent=2, sort_keys=False)
