"""``event-router-operator``: the kopf operator for RouterConfig resources."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import os
import signal
import sys
from collections.abc import Sequence
from typing import Any, cast

import kopf
import kubernetes.client
import kubernetes.config

from event_router.operator.kube import Kube
from event_router.operator.resources import DEFAULT_IMAGE, RuntimeOptions

log = logging.getLogger("event_router.operator")


def _env(name: str, default: str) -> str:
    return os.environ.get(name, default)


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        prog="event-router-operator",
        description="Reconcile RouterConfig resources (event-router.vmware.com/v1alpha1) into "
        "running event routers.",
    )
    p.add_argument(
        "--runtime",
        choices=["deployment", "inprocess"],
        default=_env("EVENT_ROUTER_OPERATOR_RUNTIME", "deployment"),
        help="deployment: one Deployment per RouterConfig (default); inprocess: run each "
        "router as a task inside the operator (laptop, one-node, demo)",
    )
    scope = p.add_mutually_exclusive_group()
    scope.add_argument(
        "-n", "--namespace", action="append", default=[], help="watch this namespace (repeatable)"
    )
    scope.add_argument("-A", "--all-namespaces", action="store_true", help="watch every namespace")
    p.add_argument(
        "--standalone",
        action="store_true",
        help="no peering: act even if another operator replica is running",
    )
    p.add_argument(
        "--peering",
        default=None,
        help="kopf peering object shared by the replicas (default: event-router, or "
        "EVENT_ROUTER_OPERATOR_PEERING). Given explicitly, it must be usable: without the "
        "kopf.dev peering CRDs the operator stops at start. Not given and no peering CRDs: "
        "the operator runs standalone with a warning (kopf's rule)",
    )
    p.add_argument(
        "--priority",
        type=int,
        default=int(_env("EVENT_ROUTER_OPERATOR_PRIORITY", "0")),
        help="peering priority: the highest acts, the others wait",
    )
    p.add_argument(
        "--router-image",
        default=_env("EVENT_ROUTER_IMAGE", DEFAULT_IMAGE),
        help="image of the router pods (runtime deployment)",
    )
    p.add_argument(
        "--image-pull-policy", default="IfNotPresent", choices=["Always", "IfNotPresent", "Never"]
    )
    p.add_argument("--cluster-domain", default=_env("EVENT_ROUTER_CLUSTER_DOMAIN", "cluster.local"))
    p.add_argument(
        "--resync-seconds",
        type=float,
        default=30.0,
        help="re-check every RouterConfig this often (Secrets, sinks, routers)",
    )
    p.add_argument(
        "--liveness",
        default=None,
        metavar="URL",
        help="serve kopf's liveness probe, e.g. http://0.0.0.0:8080/healthz",
    )
    p.add_argument(
        "--metrics-bind-address",
        default=_env("EVENT_ROUTER_OPERATOR_METRICS_BIND_ADDRESS", "") or None,
        metavar="HOST:PORT",
        help="serve /metrics (the operator's and every in-process router's series, labelled "
        "namespace and routerconfig), /stats, /healthz and /readyz here, e.g. 127.0.0.1:8081 "
        "(default: off)",
    )
    p.add_argument(
        "--peering-lifetime",
        type=int,
        default=int(_env("EVENT_ROUTER_OPERATOR_PEERING_LIFETIME", "60")),
        help="seconds after its last keep-alive that a silent replica counts as gone and a "
        "standby takes over (kopf settings.peering.lifetime; default 60)",
    )
    p.add_argument("--log-level", default="info", choices=["debug", "info", "warning", "error"])
    p.add_argument("--version", action="store_true")
    args = p.parse_args(argv)
    if args.resync_seconds <= 0:
        p.error(f"--resync-seconds: must be > 0 (got {args.resync_seconds})")
    #: kopf's rule: an explicit peering name is mandatory, the default one is optional
    args.peering_explicit = args.peering is not None or bool(
        os.environ.get("EVENT_ROUTER_OPERATOR_PEERING")
    )
    if args.peering is None:
        args.peering = _env("EVENT_ROUTER_OPERATOR_PEERING", "") or "event-router"
    if args.peering_lifetime < 2:
        p.error(f"--peering-lifetime: must be >= 2 seconds (got {args.peering_lifetime})")
    if args.metrics_bind_address:
        from event_router.metrics import split_host_port

        try:
            split_host_port(args.metrics_bind_address, field="--metrics-bind-address")
        except ValueError as e:
            p.error(str(e))
    return args


def kube_client() -> kubernetes.client.ApiClient:
    cfg = kubernetes.client.Configuration()
    try:
        kubernetes.config.load_incluster_config(client_configuration=cfg)
    except kubernetes.config.ConfigException:
        kubernetes.config.load_kube_config(client_configuration=cfg)
    cfg.connection_pool_maxsize = 32
    return kubernetes.client.ApiClient(cfg)


def ensure_peering(name: str, namespaces: list[str]) -> None:
    """Create the kopf peering object(s) if missing (cluster-wide: ClusterKopfPeering;
    per watched namespace: KopfPeering), so ``kubectl apply -k`` needs no second pass."""
    from event_router.operator.peering import ensure_peering_objects

    api = kube_client()
    try:
        ensure_peering_objects(api, name, namespaces)
    finally:
        api.close()


def peering_available(args: argparse.Namespace, namespaces: list[str]) -> bool:
    """kopf's rule at start: are the kopf.dev peering CRDs installed? When they are not, an
    explicit ``--peering NAME`` is an error (logged here, naming the object and the fix) and
    the default peering falls back to standalone with a WARNING."""
    from event_router.operator.peering import (
        PEERING_FIX,
        missing_peering_message,
        peering_crds_installed,
    )

    api = kube_client()
    try:
        if peering_crds_installed(api):
            return True
    finally:
        api.close()
    if args.peering_explicit:
        log.error("%s", missing_peering_message(args.peering, list(namespaces)))
    else:
        log.warning(
            "peering: the kopf.dev peering CRDs are not installed and no --peering was given: "
            "running standalone (kopf's rule). Run one replica only; for several, %s",
            PEERING_FIX.split(", or ")[0],
        )
    return False


def make_builder(args: argparse.Namespace) -> Any:
    def build() -> Any:
        from event_router.operator.reconciler import Reconciler
        from event_router.operator.runtimes import DeploymentRuntime, InprocessRuntime
        from event_router.operator.sinks import Resolver

        api = kube_client()
        kube = Kube(api)
        resolver = Resolver(api, args.cluster_domain)
        holder: dict[str, Reconciler] = {}

        def notify(key: tuple[str, str]) -> None:
            rec = holder.get("rec")
            if rec is not None:
                rec.trigger(key)

        runtime: Any
        if args.runtime == "inprocess":
            runtime = InprocessRuntime(kube, notify)
        else:
            options = RuntimeOptions(
                image=args.router_image,
                image_pull_policy=args.image_pull_policy,
                cluster_domain=args.cluster_domain,
                log_level="debug" if args.log_level == "debug" else "info",
            )
            runtime = DeploymentRuntime(kube, options)
        rec = Reconciler(kube, resolver, runtime, retry_seconds=min(10.0, args.resync_seconds))
        holder["rec"] = rec
        log.info("runtime %s, resync every %.0f s", args.runtime, args.resync_seconds)
        return rec

    return build


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    if args.version:
        from importlib.metadata import version

        print(f"event-router-operator {version('event-router')}")
        return 0
    logging.basicConfig(
        level=getattr(logging, args.log_level.upper()),
        format="%(asctime)s %(levelname)-7s %(name)s: %(message)s",
    )
    if args.log_level != "debug":
        for noisy in ("kopf", "aiohttp.access", "urllib3", "kubernetes"):
            logging.getLogger(noisy).setLevel(logging.WARNING)
        logging.getLogger("kopf.activities.startup").setLevel(logging.INFO)
    import event_router.operator.handlers  # noqa: F401 - registers the handlers

    clusterwide = args.all_namespaces or not args.namespace
    if not args.standalone and not peering_available(args, [] if clusterwide else args.namespace):
        if args.peering_explicit:
            return 2
        args.standalone = True
    from event_router.operator.peering import own_identity

    identity = own_identity()
    memo = kopf.Memo(
        identity=identity,
        priority=args.priority,
        namespaces=[] if clusterwide else list(args.namespace),
        build_reconciler=make_builder(args),
        resync_seconds=args.resync_seconds,
        peering_name=None if args.standalone else args.peering,
        peering_lifetime=args.peering_lifetime,
        metrics_bind_address=args.metrics_bind_address,
    )
    log.info(
        "event-router-operator: watching %s, %s",
        "all namespaces" if clusterwide else ", ".join(args.namespace),
        "standalone" if args.standalone else f"peering {args.peering!r} priority {args.priority}",
    )
    if not args.standalone:
        ensure_peering(args.peering, [] if clusterwide else list(args.namespace))
    try:
        asyncio.run(
            operate(
                memo,
                standalone=args.standalone,
                priority=args.priority,
                peering_name=None if args.standalone else args.peering,
                namespaces=[] if clusterwide else args.namespace,
                clusterwide=clusterwide,
                liveness_endpoint=args.liveness,
                # the same id our peering gate looks for (kopf's Identity is a str NewType)
                identity=cast(Any, identity),
            )
        )
    except KeyboardInterrupt:
        pass
    return 0


#: how long a SIGTERM waits for the in-process routers to stop (final checkpoints) before
#: the operator stops anyway
STOP_ROUTERS_SECONDS = 20.0


async def operate(memo: kopf.Memo, **kopf_options: Any) -> None:
    """kopf.operator, with our own SIGTERM/SIGINT: the in-process routers stop first (their
    final checkpoints written) while this replica's peering entry still stands, and only
    then kopf stops (and removes the entry). With kopf's own handlers the entry went first,
    and a standby could start the same routers while these were still delivering."""
    stop = asyncio.Event()
    existing = set(asyncio.all_tasks())
    tasks = await kopf.spawn_tasks(memo=memo, stop_flag=stop, **kopf_options)
    loop = asyncio.get_running_loop()
    stopping: list[asyncio.Task[None]] = []

    def on_signal(sig: signal.Signals) -> None:
        if stopping:
            log.warning("received %s again: stopping now", sig.name)
            stop.set()
            return
        log.info("received %s: stopping the routers, then the operator", sig.name)
        stopping.append(asyncio.create_task(_stop_routers_then(memo, stop)))

    for sig in (signal.SIGTERM, signal.SIGINT):  # replaces the handlers kopf installed
        with contextlib.suppress(NotImplementedError, RuntimeError, ValueError):
            loop.add_signal_handler(sig, on_signal, sig)
    await kopf.run_tasks(tasks, ignored=existing)


async def _stop_routers_then(memo: kopf.Memo, stop: asyncio.Event) -> None:
    try:
        gate_task = memo.get("gate_task")
        if gate_task is not None:
            gate_task.cancel()  # no resume while stopping
        rec = memo.get("reconciler")
        if rec is not None:
            await asyncio.wait_for(rec.pause(), STOP_ROUTERS_SECONDS)
    except Exception:
        log.exception("stopping the routers failed; stopping the operator anyway")
    finally:
        stop.set()


if __name__ == "__main__":
    sys.exit(main())
