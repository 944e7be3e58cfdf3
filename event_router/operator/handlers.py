"""Thin kopf handlers: every event only triggers :class:`Reconciler` (level-based).

No handler adds a finalizer or writes kopf state into the objects: deleting a
RouterConfig never waits for the operator, and its children go with the garbage collector.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Mapping
from typing import Any

import kopf

from event_router.operator.crd import GROUP, KIND, PLURAL, VERSION
from event_router.operator.reconciler import Reconciler
from event_router.operator.resources import MANAGED_BY

log = logging.getLogger(__name__)

#: Addressables the operator watches to re-resolve sinks at once (others: the resync loop)
WATCHED_TARGETS = [
    ("eventing.knative.dev", "v1", "brokers", "Broker"),
    ("serving.knative.dev", "v1", "services", "Service"),
    ("messaging.knative.dev", "v1", "channels", "Channel"),
]


def may_scan(api: Any) -> bool:
    """Whether this operator may list CRDs and namespaces cluster-wide (what kopf's
    dynamic scanning needs), asked as ``kubectl auth can-i`` does."""
    from event_router.operator.kube import request

    for group, resource in (
        ("apiextensions.k8s.io", "customresourcedefinitions"),
        ("", "namespaces"),
    ):
        review = request(
            api,
            "POST",
            "/apis/authorization.k8s.io/v1/selfsubjectaccessreviews",
            body={
                "apiVersion": "authorization.k8s.io/v1",
                "kind": "SelfSubjectAccessReview",
                "spec": {
                    "resourceAttributes": {"verb": "watch", "group": group, "resource": resource}
                },
            },
        )
        if not (review.get("status") or {}).get("allowed"):
            return False
    return True


def _reconciler(memo: Any) -> Reconciler | None:
    rec: Reconciler | None = getattr(memo, "reconciler", None)
    return rec


@kopf.on.startup()
async def startup(settings: kopf.OperatorSettings, memo: Any, **_: Any) -> None:
    settings.posting.level = logging.WARNING
    settings.watching.server_timeout = 300
    settings.persistence.finalizer = f"{GROUP}/operator"
    settings.persistence.progress_storage = kopf.AnnotationsProgressStorage(prefix=GROUP)
    settings.persistence.diffbase_storage = kopf.AnnotationsDiffBaseStorage(prefix=GROUP)
    if memo.get("peering_name"):
        settings.peering.name = memo["peering_name"]
        settings.peering.lifetime = int(memo.get("peering_lifetime") or 60)
    build = memo["build_reconciler"]
    rec = memo.reconciler = build()
    if memo.get("namespaces") and not await asyncio.to_thread(may_scan, rec.kube.api):
        # the namespaced install (manifests-namespaced/): no rights to watch CRDs and
        # namespaces cluster-wide, so kopf serves the given namespaces and the resources
        # served at startup (a Knative CRD installed later is noticed after a restart)
        settings.scanning.disabled = True
        logging.getLogger("event_router.operator").info(
            "no rights to list CRDs and namespaces cluster-wide: watching the given "
            "namespaces and the resources served now (kopf scanning off)"
        )
    memo.gate = None
    if memo.get("peering_name"):
        # kopf pauses its watches while another replica acts, not our resync loop nor the
        # in-process routers: the gate pauses those (see event_router/operator/peering.py)
        from event_router.operator.kube import request
        from event_router.operator.peering import PeeringGate, ensure_peering_objects

        async def on_change(active: bool) -> None:
            if active:
                rec.resume()
            else:
                await rec.pause()

        rec.paused = True  # until the gate sees this replica registered and unopposed
        gate = PeeringGate(
            lambda path: request(rec.kube.api, "GET", path),
            memo["peering_name"],
            list(memo.get("namespaces") or []),
            memo["identity"],
            int(memo.get("priority") or 0),
            on_change,
            interval=min(2.0, settings.peering.lifetime / 4),
            lifetime=settings.peering.lifetime,
            ensure=lambda: ensure_peering_objects(
                rec.kube.api, memo["peering_name"], list(memo.get("namespaces") or [])
            ),
        )
        memo.gate = gate
        memo.gate_task = asyncio.create_task(gate.run())
    memo.resync_task = asyncio.create_task(_resync(memo))
    memo.metrics_server = None
    if memo.get("metrics_bind_address"):
        from event_router.metrics import MetricsServer
        from event_router.operator.metrics import OperatorMetrics

        g = memo.gate
        metrics = OperatorMetrics(
            lambda: _reconciler(memo), (lambda: g.active) if g is not None else (lambda: True)
        )

        def not_ready() -> str | None:
            if _reconciler(memo) is None:
                return "the reconciler is not built yet"
            return g.problem() if g is not None else None

        server = MetricsServer(
            memo["metrics_bind_address"],
            metrics,
            stats=metrics.stats,
            ready=lambda: not_ready() is None,
            bind_field="--metrics-bind-address",
            not_ready_reason=not_ready,
        )
        await server.start()
        memo.metrics_server = server


async def _resync(memo: Any) -> None:
    interval = float(memo.get("resync_seconds", 30.0))
    while True:
        await asyncio.sleep(interval)
        rec = _reconciler(memo)
        if rec is not None:
            rec.resync()


@kopf.on.cleanup()
async def cleanup(memo: Any, **_: Any) -> None:
    for name in ("resync_task", "gate_task"):
        task = memo.get(name)
        if task is not None:
            task.cancel()
            with contextlib.suppress(BaseException):
                await task
    server = memo.get("metrics_server")
    if server is not None:
        await server.stop()
    rec = _reconciler(memo)
    if rec is not None:
        await rec.close()


@kopf.on.event(GROUP, VERSION, PLURAL)
async def routerconfig_event(
    type: str, name: str, namespace: str | None, memo: Any, **_: Any
) -> None:
    rec = _reconciler(memo)
    if rec is None or namespace is None:
        return
    if type == "DELETED":
        await rec.forget((namespace, name))
    else:
        rec.trigger((namespace, name))


@kopf.on.event("", "v1", "secrets")
async def secret_event(name: str, namespace: str | None, memo: Any, **_: Any) -> None:
    rec = _reconciler(memo)
    if rec is not None and namespace is not None:
        rec.secret_changed(namespace, name)


@kopf.on.event("", "v1", "configmaps")
async def configmap_event(name: str, namespace: str | None, body: Any, memo: Any, **_: Any) -> None:
    """Root CA bundles (``spec.certificates.rootCAs``): a change re-renders the config.
    Checkpoint ConfigMaps: a router pod's stall report changes ``DeliveryStalled``."""
    rec = _reconciler(memo)
    if rec is not None and namespace is not None:
        rec.configmap_changed(namespace, name)
        rec.checkpoint_changed(namespace, name, dict(body.get("data") or {}))


@kopf.on.event("", "v1", "services")
async def service_event(name: str, namespace: str | None, memo: Any, **_: Any) -> None:
    rec = _reconciler(memo)
    if rec is not None and namespace is not None:
        rec.target_changed("v1", "Service", namespace, name)


@kopf.on.event("apps", "v1", "deployments", labels={"app.kubernetes.io/managed-by": MANAGED_BY})
async def deployment_event(
    meta: Mapping[str, Any], namespace: str | None, memo: Any, **_: Any
) -> None:
    rec = _reconciler(memo)
    # the owner by its reference, not by a label: labels hold at most 63 characters
    owners = [
        ref.get("name")
        for ref in meta.get("ownerReferences") or []
        if ref.get("kind") == KIND and str(ref.get("apiVersion", "")).startswith(f"{GROUP}/")
    ]
    for owner in owners:
        if rec is not None and owner and namespace and (namespace, owner) in rec.known:
            rec.trigger((namespace, owner))


@kopf.on.event(
    "coordination.k8s.io", "v1", "leases", labels={"app.kubernetes.io/managed-by": MANAGED_BY}
)
async def lease_event(
    meta: Mapping[str, Any], spec: Mapping[str, Any], namespace: str | None, memo: Any, **_: Any
) -> None:
    """A router Lease (replicas > 1): a new holder updates status.leader; renews do not."""
    rec = _reconciler(memo)
    if rec is None or not namespace:
        return
    from event_router.operator.runtimes import lease_holder

    holder = lease_holder({"spec": dict(spec)})
    for ref in meta.get("ownerReferences") or []:
        if ref.get("kind") == KIND and str(ref.get("apiVersion", "")).startswith(f"{GROUP}/"):
            rec.lease_changed(namespace, str(ref.get("name")), holder)


def _target_handler(group: str, version: str, kind: str) -> Any:
    async def handler(name: str, namespace: str | None, memo: Any, **_: Any) -> None:
        rec = _reconciler(memo)
        if rec is not None and namespace is not None:
            rec.target_changed(f"{group}/{version}", kind, namespace, name)

    handler.__name__ = f"{kind.lower()}_{group.split('.')[0]}_event"
    return handler


for _group, _version, _plural, _kind in WATCHED_TARGETS:
    kopf.on.event(_group, _version, _plural, id=f"{_plural}.{_group}")(
        _target_handler(_group, _version, _kind)
    )
