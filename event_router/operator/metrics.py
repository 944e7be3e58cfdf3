"""The operator's own metrics server (``--metrics-bind-address``).

One :class:`event_router.metrics.MetricsServer` in the operator process serves

* ``/metrics``: every in-process router's series (each router keeps its own registry, with
  the constant labels ``namespace`` and ``routerconfig``), merged per metric name, plus the
  operator's own series (RouterConfigs by Ready status, reconcile passes, peering state);
* ``/stats``: ``{"<namespace>/<name>": <the router's original /stats JSON>}``;
* ``/healthz``, ``/readyz`` (ready once the reconciler is built and, with peering, this
  replica is the active one or a healthy standby: both answer 200).

The collector reads the live routers at every scrape, so a deleted RouterConfig's series
are gone as soon as its router is stopped.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

from prometheus_client import CollectorRegistry
from prometheus_client.exposition import generate_latest
from prometheus_client.metrics_core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

READY_STATES = ("True", "False", "Unknown")


def running_routers(rec: Any) -> dict[tuple[str, str], Any]:
    """(namespace, name) -> Router of the in-process runtime's live routers (none for the
    deployment runtime, or before the reconciler exists)."""
    tasks = getattr(getattr(rec, "runtime", None), "tasks", None) or {}
    return {key: rt.router for key, rt in list(tasks.items()) if rt.router is not None}


class OperatorCollector(Collector):
    """Yields the operator's series and, merged by name, those of the live routers."""

    def __init__(self, reconciler: Callable[[], Any], active: Callable[[], bool]) -> None:
        self._reconciler = reconciler
        self._active = active

    def _routers(self) -> list[Any]:
        return list(running_routers(self._reconciler()).values())

    def collect(self) -> Iterator[Metric]:
        rec = self._reconciler()
        by_ready = dict.fromkeys(READY_STATES, 0)
        passes = 0
        if rec is not None:
            passes = rec.passes
            for state in list(rec.ready.values()):
                by_ready[state if state in by_ready else "Unknown"] += 1
        g = GaugeMetricFamily(
            "event_router_operator_routerconfigs",
            "RouterConfigs this operator reconciles, by the status of their Ready condition",
            labels=["ready"],
        )
        for state, n in by_ready.items():
            g.add_metric([state], n)
        yield g
        p = GaugeMetricFamily(
            "event_router_operator_reconcile_passes",
            "Reconcile passes since the operator started",
        )
        p.add_metric([], passes)
        yield p
        a = GaugeMetricFamily(
            "event_router_operator_active",
            "1 when this replica acts (peering: the active one, or --standalone), 0 when paused",
        )
        a.add_metric([], 1.0 if self._active() else 0.0)
        yield a

        merged: dict[str, Metric] = {}
        for router in self._routers():
            for family in router.metrics.registry.collect():
                into = merged.get(family.name)
                if into is None:
                    into = merged[family.name] = Metric(
                        family.name, family.documentation, family.type, family.unit
                    )
                into.samples.extend(family.samples)
        yield from merged.values()


class OperatorMetrics:
    """The registry the operator's ``/metrics`` renders, and its ``/stats``."""

    def __init__(
        self, reconciler: Callable[[], Any], active: Callable[[], bool] = lambda: True
    ) -> None:
        self._reconciler = reconciler
        self.registry = CollectorRegistry(auto_describe=False)
        self.registry.register(OperatorCollector(reconciler, active))

    def render(self) -> bytes:
        return generate_latest(self.registry)

    def stats(self) -> dict[str, Any]:
        routers = running_routers(self._reconciler())
        return {f"{ns}/{name}": routers[ns, name].stats() for ns, name in sorted(routers)}
