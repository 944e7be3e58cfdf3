"""Where a RouterConfig's router runs.

* :class:`DeploymentRuntime` (default in a cluster): owned children per RouterConfig, a
  config Secret, ServiceAccount/Role/RoleBinding limited to its checkpoint ConfigMap and a
  Deployment that rolls when the config hash changes.
* :class:`InprocessRuntime` (``--runtime inprocess``): one asyncio task per RouterConfig
  running :class:`event_router.router.Router` inside the operator, checkpoints in the same
  ConfigMap.

Both answer ``apply()`` with a :class:`RuntimeState` the reconciler turns into the
``Deployed`` condition and the runtime part of ``Ready``.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Protocol

from event_router import stallreport
from event_router.config.models import RouterConfig
from event_router.operator import resources
from event_router.operator.certificates import CARef, CAStage, deployment_paths
from event_router.operator.kube import Kube
from event_router.operator.resources import Owner, RuntimeOptions

log = logging.getLogger(__name__)

Key = tuple[str, str]  # (namespace, name)


@dataclass(frozen=True)
class RuntimeState:
    deployed: bool
    ready: bool
    reason: str
    message: str
    #: replicas > 1: the pod holding the Lease ("" while none does)
    leader: str | None = None
    #: router pods available
    available: int | None = None
    #: processors whose delivery is stalled (:mod:`event_router.stallreport` entries);
    #: None when the router could not be asked
    stalled: list[dict[str, Any]] | None = None


class Runtime(Protocol):
    name: str

    def ca_files(self, key: Key, refs: list[CARef], pems: list[str]) -> list[str]:
        """The paths the router reads ``spec.certificates.rootCAs`` from."""
        ...

    async def apply(
        self,
        owner: Owner,
        rendered: dict[str, Any],
        config: RouterConfig,
        hash_: str,
        ca_refs: list[CARef] | None = None,
        replicas: int = 1,
    ) -> RuntimeState: ...

    async def remove(self, key: Key) -> None: ...

    async def suspend(self) -> None:
        """Another operator replica acts now (peering): stop acting, forget caches."""
        ...

    def expire(self) -> None:
        """A resync: verify at the next pass what is normally skipped as unchanged."""
        ...

    async def close(self) -> None: ...


# --- deployment -------------------------------------------------------------------------------


def lease_holder(lease_obj: dict[str, Any] | None) -> str:
    """The pod that holds a router Lease: its identity is ``<pod>_<random>``; "" when
    nobody holds it."""
    holder = str(((lease_obj or {}).get("spec") or {}).get("holderIdentity") or "")
    return holder.rsplit("_", 1)[0] if "_" in holder else holder


def deployment_state(
    dep: dict[str, Any] | None,
    hash_: str,
    namespace: str,
    name: str,
    rc: str = "",
    leader: str | None = None,
) -> RuntimeState:
    """Ready when the Deployment rolled out the current config hash and has an available pod
    (with leader election: and a pod holds the Lease)."""
    where = f"Deployment {namespace}/{name}"
    if dep is None:
        return RuntimeState(False, False, "DeploymentMissing", f"{where} does not exist")
    annotations = (
        dep.get("spec", {}).get("template", {}).get("metadata", {}).get("annotations") or {}
    )
    if annotations.get(resources.HASH_ANNOTATION) != hash_:
        return RuntimeState(True, False, "RouterStarting", f"{where} is rolling out a new config")
    status = dep.get("status") or {}
    wanted = int(dep.get("spec", {}).get("replicas", 1) or 1)
    generation = dep.get("metadata", {}).get("generation", 0)
    observed = status.get("observedGeneration", 0)
    updated = status.get("updatedReplicas", 0) or 0
    available = status.get("availableReplicas", 0) or 0
    pods = f"{available}/{wanted} router pod{'s' if wanted > 1 else ''} available"
    if observed >= generation and updated >= 1 and available >= 1:
        if leader is None:
            return RuntimeState(True, True, "RouterRunning", f"{where}: {pods}", None, available)
        if leader:
            return RuntimeState(
                True, True, "RouterRunning", f"{where}: {pods}, {leader} leads", leader, available
            )
        return RuntimeState(
            True,
            False,
            "NoLeader",
            f"{where}: {pods}, none holds Lease {namespace}/{name} yet (a standby takes it "
            "once the last holder's lease runs out)",
            "",
            available,
        )
    for cond in status.get("conditions") or []:
        if cond.get("type") == "ReplicaFailure" and cond.get("status") == "True":
            return RuntimeState(True, False, "RouterFailed", f"{where}: {cond.get('message')}")
        if cond.get("type") == "Progressing" and cond.get("reason") == "ProgressDeadlineExceeded":
            return RuntimeState(True, False, "RouterFailed", f"{where}: {cond.get('message')}")
    return RuntimeState(
        True,
        False,
        "RouterStarting",
        f"{where}: {pods} (updated: {updated}); if it stays so: "
        f"kubectl describe pod -n {namespace} -l {resources.LABEL_RC}={resources.label_value(rc)}",
        leader,
        available,
    )


class DeploymentRuntime:
    name = "deployment"

    def __init__(self, kube: Kube, options: RuntimeOptions) -> None:
        self.kube = kube
        self.options = options
        #: last applied children digest per RouterConfig (skips no-op applies)
        self._applied: dict[Key, str] = {}
        #: RouterConfigs whose children are applied again at their next pass (resync), so a
        #: child deleted or edited by hand comes back
        self._stale: set[Key] = set()

    def ca_files(self, key: Key, refs: list[CARef], pems: list[str]) -> list[str]:
        return deployment_paths(refs)  # mounted from the ConfigMaps by the kubelet

    async def apply(
        self,
        owner: Owner,
        rendered: dict[str, Any],
        config: RouterConfig,
        hash_: str,
        ca_refs: list[CARef] | None = None,
        replicas: int = 1,
    ) -> RuntimeState:
        key = (owner.namespace, owner.name)
        name = resources.router_name(owner.name)
        digest = f"{owner.uid}/{hash_}/{replicas}/{self.options}"
        same = self._applied.get(key) == digest
        elected = resources.leader_elected(rendered, replicas)
        if not (same and key not in self._stale):
            await asyncio.to_thread(
                self._apply_all,
                owner,
                rendered,
                hash_,
                ca_refs or [],
                logging.DEBUG if same else logging.INFO,
                replicas,
            )
            self._applied[key] = digest
            self._stale.discard(key)
        dep = await asyncio.to_thread(self.kube.get, "apps/v1", "Deployment", owner.namespace, name)
        if dep is None and same:
            # deleted by hand: apply again now
            self._applied.pop(key, None)
            return await self.apply(owner, rendered, config, hash_, ca_refs, replicas)
        leader: str | None = None
        if elected:
            lease_obj = await asyncio.to_thread(
                self.kube.get,
                "coordination.k8s.io/v1",
                "Lease",
                owner.namespace,
                resources.lease_name(owner.name),
            )
            leader = lease_holder(lease_obj)
        state = deployment_state(dep, hash_, owner.namespace, name, owner.name, leader)
        cm = await asyncio.to_thread(
            self.kube.get,
            "v1",
            "ConfigMap",
            owner.namespace,
            resources.checkpoint_configmap_name(owner.name),
        )
        stalled = stallreport.from_reports((cm or {}).get("data") or {})
        return dataclasses.replace(state, stalled=stalled)

    def _apply_all(
        self,
        owner: Owner,
        rendered: dict[str, Any],
        hash_: str,
        ca_refs: list[CARef],
        level: int = logging.INFO,
        replicas: int = 1,
    ) -> None:
        self.kube.create_if_absent(resources.checkpoint_configmap(owner))
        if resources.leader_elected(rendered, replicas):
            self.kube.create_if_absent(resources.lease(owner))
        children = resources.children(owner, rendered, hash_, self.options, ca_refs, replicas)
        for obj in children:
            self.kube.apply(obj)  # server-side apply: a no-op when nothing differs
        name = resources.router_name(owner.name)
        if not any(obj["kind"] == "Service" for obj in children):
            # no webhook (any more): its Service goes, apply never deletes
            if self.kube.delete_owned("v1", "Service", owner.namespace, name, owner.uid):
                log.info(
                    "%s/%s: deleted Service %s (no webhook)", owner.namespace, owner.name, name
                )
        if replicas == 1 and self.kube.delete_owned(
            "policy/v1", "PodDisruptionBudget", owner.namespace, name, owner.uid
        ):
            log.info(
                "%s/%s: deleted PodDisruptionBudget %s (one replica)",
                owner.namespace,
                owner.name,
                name,
            )
        log.log(
            level,
            "%s/%s: applied router children (config hash %s, %d replica%s)",
            owner.namespace,
            owner.name,
            hash_,
            replicas,
            "s" if replicas > 1 else "",
        )

    def expire(self) -> None:
        """At a resync: apply every RouterConfig's children again at its next pass."""
        self._stale = set(self._applied)

    async def remove(self, key: Key) -> None:
        # children carry ownerReferences: the garbage collector removes them
        self._applied.pop(key, None)
        self._stale.discard(key)

    async def suspend(self) -> None:
        # the Deployments keep running (another replica owns them now); re-check on resume
        self._applied.clear()

    async def close(self) -> None:
        return None


# --- in-process ---------------------------------------------------------------------------------


class _RouterTask:
    def __init__(self, hash_: str, ca_files: list[str]) -> None:
        self.hash = hash_
        self.ca_files = ca_files
        self.task: asyncio.Task[None] | None = None
        self.router: Any = None
        self.reason = "RouterStarting"
        self.message = "starting the router"
        self.ready = False
        self.stopping = False


class InprocessRuntime:
    """Each RouterConfig's router as an asyncio task in this process."""

    name = "inprocess"

    def __init__(
        self,
        kube: Kube,
        notify: Callable[[Key], None],
        *,
        stop_timeout: float = 10.0,
        max_backoff: float = 60.0,
    ) -> None:
        self.kube = kube
        self.notify = notify
        self.stop_timeout = stop_timeout
        self.max_backoff = max_backoff
        self.tasks: dict[Key, _RouterTask] = {}
        #: root CA files of the routers, in a private temp dir
        self.cas = CAStage()

    def ca_files(self, key: Key, refs: list[CARef], pems: list[str]) -> list[str]:
        return self.cas.stage(key, pems)

    def _state(self, rt: _RouterTask) -> RuntimeState:
        stalled = None
        if rt.router is not None and rt.ready:
            stalled = stallreport.stalled_processors(rt.router.processor_states())
        return RuntimeState(True, rt.ready, rt.reason, rt.message, stalled=stalled)

    async def apply(
        self,
        owner: Owner,
        rendered: dict[str, Any],
        config: RouterConfig,
        hash_: str,
        ca_refs: list[CARef] | None = None,
        replicas: int = 1,
    ) -> RuntimeState:
        # replicas: one router task whatever it says (operator peering picks the replica)
        key = (owner.namespace, owner.name)
        current = self.tasks.get(key)
        if current is not None and current.hash == hash_:
            return self._state(current)
        if current is not None:
            log.info("%s/%s: config changed, restarting its router", *key)
            del self.tasks[key]  # a failure below leaves no stopped router counted as running
            await self._stop(current)
        ca_files = list(config.certificates.rootCAs) if config.certificates else []
        self.cas.prune(key, ca_files)  # the old router's CA files, now unused
        await asyncio.to_thread(self.kube.create_if_absent, resources.checkpoint_configmap(owner))
        rt = _RouterTask(hash_, ca_files)
        rt.task = asyncio.create_task(self._run(key, rt, config), name=f"router-{key[0]}/{key[1]}")
        self.tasks[key] = rt
        return self._state(rt)

    def _context(self, key: Key, config: RouterConfig) -> Any:
        from event_router.checkpoints import ConfigMapStore
        from event_router.core import RouterContext

        namespace, name = key
        cm = resources.checkpoint_configmap_name(name)
        core = self.kube.core
        return RouterContext(
            config=config,
            checkpoint_store_factory=lambda store_key: ConfigMapStore(
                namespace, cm, store_key, api=core
            ),
            labels={"namespace": namespace, "routerconfig": name},
        )

    async def _run(self, key: Key, rt: _RouterTask, config: RouterConfig) -> None:
        from event_router.router import Router

        backoff = 1.0
        while not rt.stopping:
            router = None
            try:
                router = Router(self._context(key, config))
                rt.router = router
                await router.start()
                rt.reason, rt.message = "RouterStarting", "router started; connecting the provider"
                self.notify(key)
                router.stall_listener = lambda: self.notify(key)  # DeliveryStalled
                waiter = asyncio.create_task(router.wait())
                while not waiter.done():
                    await asyncio.wait({waiter}, timeout=0.5)
                    ready = bool(router.ready)
                    if ready != rt.ready:
                        rt.ready = ready
                        if ready:
                            backoff = 1.0
                            rt.reason = "RouterRunning"
                            rt.message = (
                                f"in-process router connected to {router.provider.address()}"
                            )
                        else:
                            rt.reason, rt.message = (
                                "RouterNotReady",
                                "the provider lost its connection; retrying",
                            )
                        self.notify(key)
                await waiter  # raises the provider's error
                if rt.stopping:
                    return
                raise RuntimeError("the provider stopped")
            except asyncio.CancelledError:
                if router is not None:
                    with contextlib.suppress(Exception):
                        await router.stop(self.stop_timeout)
                raise
            except Exception as e:  # a failed router is reported and retried
                if rt.stopping:
                    return
                log.warning("%s/%s: router failed: %s (retrying in %.0f s)", *key, e, backoff)
                rt.ready = False
                rt.reason = "RouterFailed"
                rt.message = f"{type(e).__name__}: {e} (retrying in {backoff:.0f} s)"
                self.notify(key)
                if router is not None:
                    with contextlib.suppress(Exception):
                        await router.stop(1.0)
                await asyncio.sleep(backoff)
                backoff = min(backoff * 2, self.max_backoff)

    async def _stop(self, rt: _RouterTask) -> None:
        rt.stopping = True
        router = rt.router
        if router is not None:
            try:
                await router.stop(self.stop_timeout)  # final checkpoint
            except Exception:
                log.exception("stopping a router failed")
        if rt.task is not None:
            rt.task.cancel()
            with contextlib.suppress(BaseException):
                await rt.task

    async def remove(self, key: Key) -> None:
        rt = self.tasks.pop(key, None)
        if rt is not None:
            log.info("%s/%s: RouterConfig deleted, stopping its router", *key)
            await self._stop(rt)
            log.info("%s/%s: router of the deleted RouterConfig stopped", *key)
        self.cas.remove(key)

    def expire(self) -> None:
        # a running router is its own check: nothing is skipped as unchanged here
        return None

    async def suspend(self) -> None:
        """Stop every router (final checkpoints): the active replica runs them now."""
        stopping = list(self.tasks.items())
        self.tasks.clear()
        if stopping:
            log.info("peering: paused, stopping %d in-process router(s)", len(stopping))
        await asyncio.gather(*(self._stop(rt) for _, rt in stopping), return_exceptions=True)
        for key, _ in stopping:
            self.cas.remove(key)

    async def close(self) -> None:
        tasks = list(self.tasks.values())
        self.tasks.clear()
        await asyncio.gather(*(self._stop(rt) for rt in tasks), return_exceptions=True)
        self.cas.close()
