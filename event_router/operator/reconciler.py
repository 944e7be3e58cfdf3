"""Level-based reconciliation of one RouterConfig: read it and what it references, render
the router config, hand it to the runtime, write ``status`` (only when it changed) and
Events on transitions.

Triggers (kopf events of RouterConfigs, Secrets, sink targets, router Deployments, the
resync loop, the in-process routers) only call :meth:`Reconciler.trigger`; concurrent
triggers of one RouterConfig coalesce into one pass.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import json
import logging
from collections import defaultdict
from typing import Any

from kubernetes.client.exceptions import ApiException
from pydantic import ValidationError

from event_router import stallreport
from event_router.config.loader import ConfigError, parse_config
from event_router.operator import certificates, resources
from event_router.operator.crd import GROUP, KIND, VERSION, EventProcessorSpec, RouterConfigSpec
from event_router.operator.kube import Kube
from event_router.operator.resources import Owner
from event_router.operator.runtimes import Key, Runtime, RuntimeState
from event_router.operator.secrets import CredentialsError, consent_error, consents, decode
from event_router.operator.sinks import Resolver, SinkError, Target, uri_string
from event_router.timefmt import rfc3339

log = logging.getLogger(__name__)

API_VERSION = f"{GROUP}/{VERSION}"


def _now() -> str:
    return rfc3339(dt.datetime.now(dt.UTC), 0)


def condition(type_: str, ok: bool, reason: str, message: str) -> dict[str, Any]:
    return {
        "type": type_,
        "status": "True" if ok else "False",
        "reason": reason,
        "message": message,
    }


def merge_conditions(
    old: list[dict[str, Any]], new: list[dict[str, Any]], generation: int
) -> list[dict[str, Any]]:
    """New conditions, keeping ``lastTransitionTime`` of those whose status did not flip."""
    before = {c.get("type"): c for c in old or []}
    out = []
    for c in new:
        prev = before.get(c["type"])
        stamp = (
            prev.get("lastTransitionTime") if prev and prev.get("status") == c["status"] else None
        )
        out.append({**c, "lastTransitionTime": stamp or _now(), "observedGeneration": generation})
    return out


def _sink_display(p: EventProcessorSpec) -> str | None:
    """What a processor that is not knative delivers to, for ``status`` (no credentials)."""
    if p.type == "openfaas" and p.openfaas is not None:
        return p.openfaas.address
    if p.type == "aws_event_bridge" and p.awsEventBridge is not None:
        eb = p.awsEventBridge
        return f"eventbridge://{eb.region}/{eb.eventBus}"
    return None


def _api_message(e: ApiException) -> str:
    try:
        body = json.loads(e.body or "{}")
    except ValueError:
        body = {}
    return f"{e.status} {body.get('message') or e.reason}"


def render_failure(e: Exception) -> str:
    """The ``InvalidConfig`` message for an error of
    :func:`~event_router.operator.resources.render_config` other than missing credentials.

    Rendering is a pure function of the spec, the Secrets and the sink: retrying cannot help,
    so whatever it raises becomes the status. A :class:`~resources.RenderError` names the
    field; anything else is a bug, logged with its traceback.
    """
    if isinstance(e, resources.RenderError):
        return str(e)
    log.error("rendering the router config failed", exc_info=e)
    return (
        f"the router config could not be rendered ({type(e).__name__}: {e}); see the operator log"
    )


def _or_placeholder(
    spec: RouterConfigSpec, uris: dict[int, str], *, knative_only: bool = False
) -> dict[int, str]:
    """The resolved URLs, and a placeholder for the unresolved ones: the first rendering only
    checks the credentials and the rest of the config."""
    out = dict(uris)
    for i, p in enumerate(spec.processors):
        if i in out:
            continue
        needed = (
            p.type == "knative"
            if knative_only
            else p.delivery is not None and p.delivery.deadLetterSink is not None
        )
        if needed:
            out[i] = "http://unresolved.invalid"
    return out


class Reconciler:
    def __init__(
        self,
        kube: Kube,
        resolver: Resolver,
        runtime: Runtime,
        *,
        concurrency: int = 16,
        retry_seconds: float = 10.0,
    ) -> None:
        self.kube = kube
        self.resolver = resolver
        self.runtime = runtime
        self.retry_seconds = retry_seconds
        self.known: set[Key] = set()
        #: the status of each known RouterConfig's Ready condition (operator metrics)
        self.ready: dict[Key, str] = {}
        #: (namespace, secret name) -> RouterConfigs using it
        self.by_secret: dict[tuple[str, str], set[Key]] = defaultdict(set)
        #: sink target -> RouterConfigs sending to it
        self.by_target: dict[Target, set[Key]] = defaultdict(set)
        #: (namespace, ConfigMap name) -> RouterConfigs taking root CAs from it
        self.by_configmap: dict[tuple[str, str], set[Key]] = defaultdict(set)
        self._deps: dict[Key, tuple[set[tuple[str, str]], set[Target], set[tuple[str, str]]]] = {}
        self._locks: dict[Key, asyncio.Lock] = defaultdict(asyncio.Lock)
        self._queued: set[Key] = set()
        self._sem = asyncio.Semaphore(concurrency)
        self._tasks: set[asyncio.Task[None]] = set()
        self._closing = False
        self.passes = 0
        #: while kopf peering pauses this replica: no passes, triggers are only remembered
        self.paused = False
        self._deferred: set[Key] = set()
        #: replicas > 1: the pod holding each RouterConfig's Lease, as status.leader says
        self.leaders: dict[Key, str] = {}
        #: (namespace, checkpoint ConfigMap) -> its RouterConfig, and the stall reports in it
        #: (:func:`event_router.stallreport.digest`) that the last pass saw
        self.by_checkpoint: dict[tuple[str, str], Key] = {}
        self.stall_digests: dict[Key, str] = {}

    # --- triggers ---------------------------------------------------------------------------

    def trigger(self, key: Key, delay: float = 0.0) -> None:
        """Reconcile ``key`` soon; triggers while one is queued coalesce."""
        if self.paused:
            self._deferred.add(key)
            return
        if self._closing or key in self._queued:
            return
        self._queued.add(key)
        task = asyncio.get_running_loop().create_task(self._run(key, delay))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    def secret_changed(self, namespace: str, name: str) -> None:
        for key in list(self.by_secret.get((namespace, name), ())):
            self.trigger(key)

    def configmap_changed(self, namespace: str, name: str) -> None:
        for key in list(self.by_configmap.get((namespace, name), ())):
            self.trigger(key)

    def checkpoint_changed(self, namespace: str, name: str, data: dict[str, str] | None) -> None:
        """A router pod wrote its checkpoint ConfigMap: a new pass only when its stall
        reports changed (checkpoints alone do not touch the status)."""
        key = self.by_checkpoint.get((namespace, name))
        if key is None:
            return
        if stallreport.digest(stallreport.from_reports(data)) != self.stall_digests.get(key):
            self.trigger(key)

    def target_changed(self, api_version: str, kind: str, namespace: str, name: str) -> None:
        target = Target(api_version, kind, name, namespace)
        for key in list(self.by_target.get(target, ())):
            self.trigger(key)

    def lease_changed(self, namespace: str, owner: str, holder: str) -> None:
        """A router Lease was written: a new holder (not a renew) updates status.leader."""
        key = (namespace, owner)
        if key in self.known and self.leaders.get(key) != holder:
            self.trigger(key)

    def resync(self) -> None:
        self.runtime.expire()  # children deleted or edited by hand are applied again
        for key in list(self.known):
            self.trigger(key)

    async def _run(self, key: Key, delay: float) -> None:
        if delay:
            await asyncio.sleep(delay)
        async with self._sem, self._locks[key]:
            self._queued.discard(key)
            try:
                await self.reconcile(*key)
            except Exception as e:
                log.warning(
                    "%s/%s: reconcile failed: %s; retrying in %.0f s", *key, e, self.retry_seconds
                )
                self._queued.discard(key)
                self.trigger(key, self.retry_seconds)

    async def pause(self) -> None:
        """Another replica acts (kopf peering): stop every pass and the runtime's routers."""
        if self.paused:
            return
        self.paused = True
        self._deferred |= self.known | self._queued
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        self._queued.clear()
        await self.runtime.suspend()

    def resume(self) -> None:
        """This replica acts again: reconcile everything it knows of (kopf also re-lists)."""
        if not self.paused:
            return
        self.paused = False
        keys, self._deferred = self._deferred | self.known, set()
        for key in keys:
            self.trigger(key)

    async def forget(self, key: Key) -> None:
        """The RouterConfig is gone: stop its router. Waits for a pass in progress, so that
        pass cannot start the router again after this."""
        async with self._locks[key]:
            await self._forget(key)

    async def _forget(self, key: Key) -> None:
        self._deferred.discard(key)
        self.known.discard(key)
        self.ready.pop(key, None)
        self.leaders.pop(key, None)
        self.stall_digests.pop(key, None)
        self.by_checkpoint.pop((key[0], resources.checkpoint_configmap_name(key[1])), None)
        self._index(key, set(), set(), set())
        await self.runtime.remove(key)

    async def close(self) -> None:
        self._closing = True
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        await self.runtime.close()

    def _index(
        self,
        key: Key,
        secrets: set[tuple[str, str]],
        targets: set[Target],
        configmaps: set[tuple[str, str]],
    ) -> None:
        old_secrets, old_targets, old_cms = self._deps.pop(key, (set(), set(), set()))
        for s in old_secrets:
            self.by_secret[s].discard(key)
            if not self.by_secret[s]:
                del self.by_secret[s]
        for c in old_cms:
            self.by_configmap[c].discard(key)
            if not self.by_configmap[c]:
                del self.by_configmap[c]
        for t in old_targets:
            self.by_target[t].discard(key)
            if not self.by_target[t]:
                del self.by_target[t]
        if secrets or targets or configmaps:
            self._deps[key] = (secrets, targets, configmaps)
            for s in secrets:
                self.by_secret[s].add(key)
            for c in configmaps:
                self.by_configmap[c].add(key)
            for t in targets:
                self.by_target[t].add(key)

    # --- one pass -----------------------------------------------------------------------------

    async def reconcile(self, namespace: str, name: str) -> None:
        key = (namespace, name)
        self.passes += 1
        body = await asyncio.to_thread(self.kube.get, API_VERSION, KIND, namespace, name)
        if body is None or body["metadata"].get("deletionTimestamp"):
            await self._forget(key)  # the pass holds the key's lock
            return
        self.known.add(key)
        if self.runtime.name == "deployment":  # in-process routers tell the runtime
            self.by_checkpoint[(namespace, resources.checkpoint_configmap_name(name))] = key
        generation = int(body["metadata"].get("generation", 0))
        old_status = body.get("status") or {}
        status: dict[str, Any] = {
            "observedGeneration": generation,
            "runtime": self.runtime.name,
            "sinkUri": None,
            "source": None,
        }
        conditions: list[dict[str, Any]] = []
        try:
            spec = RouterConfigSpec.model_validate(body.get("spec") or {})
        except ValidationError as e:
            msg = "; ".join(
                f"spec.{'.'.join(str(p) for p in err['loc'])}: {err['msg']}" for err in e.errors()
            )
            conditions.append(condition("Ready", False, "InvalidSpec", msg))
            await self._write_status(body, old_status, status, conditions)
            return
        status["source"] = resources.source_address(spec)

        # credentials
        secret_names = resources.referenced_secrets(spec)
        secrets: dict[str, dict[str, str] | None] = {}
        versions: dict[str, str] = {}
        #: Secrets that exist but do not consent to this RouterConfig -> their annotations
        refused: dict[str, dict[str, str]] = {}
        for sname in secret_names:
            obj = await asyncio.to_thread(self.kube.get, "v1", "Secret", namespace, sname)
            if obj is None:
                secrets[sname] = None
                continue
            versions[sname] = str(obj["metadata"].get("resourceVersion", ""))
            annotations = obj["metadata"].get("annotations") or {}
            if consents(annotations, name):
                secrets[sname] = decode(obj.get("data"))
            else:
                # its data is never decoded, rendered or handed to a router
                secrets[sname] = {}
                refused[sname] = annotations

        # root CAs (ConfigMaps)
        ca_refs = certificates.ca_refs(spec)
        cm_names = sorted({r.configmap for r in ca_refs})
        configmaps: dict[str, dict[str, str] | None] = {}
        for cname in cm_names:
            obj = await asyncio.to_thread(self.kube.get, "v1", "ConfigMap", namespace, cname)
            configmaps[cname] = certificates.configmap_text(obj)
            if obj is not None:
                # "/" cannot be in a Secret name: no clash with the Secrets' entries
                versions[f"configmap/{cname}"] = str(obj["metadata"].get("resourceVersion", ""))
        ca_error: certificates.CertificatesError | None = None
        pems: list[str] = []
        try:
            pems = certificates.collect_pems(namespace, ca_refs, configmaps)
        except certificates.CertificatesError as e:
            ca_error = e

        # sinks: each knative processor's destination, each delivery.deadLetterSink
        targets: set[Target] = set()
        sinks: dict[int, str] = {}
        dead_letters: dict[int, str] = {}
        sink_problems: list[tuple[str, str]] = []  # (reason, message)
        dls_problems: list[tuple[str, str]] = []
        sink_notes: list[str] = []
        dls_notes: list[str] = []
        processors_status: list[dict[str, Any]] = []
        listed = spec.eventProcessors is not None
        for i, p in enumerate(spec.processors):
            where = spec.processor_field(i)
            label = f"{p.name}: " if listed else ""
            entry: dict[str, Any] = {"name": p.name, "type": p.type}
            if p.type == "knative" and p.knative is not None:
                uri, note, problem, target = await self._resolve(
                    p.knative.destination,
                    namespace,
                    f"{where}.knative.destination" if listed else None,
                )
                if target is not None:
                    targets.add(target)
                if problem is not None:
                    sink_problems.append(problem)
                if uri is not None:
                    entry["sinkUri"] = uri
                    if problem is None:
                        sinks[i] = uri
                sink_notes.append(f"{label}{note}")
            else:
                entry["sinkUri"] = _sink_display(p)
                sink_notes.append(f"{label}{p.type} delivers itself")
            dls = p.delivery.deadLetterSink if p.delivery is not None else None
            if dls is not None:
                uri, note, problem, target = await self._resolve(
                    dls, namespace, f"{where}.delivery.deadLetterSink"
                )
                if target is not None:
                    targets.add(target)
                if problem is not None:
                    dls_problems.append(problem)
                if uri is not None:
                    entry["deadLetterSinkUri"] = uri
                    if problem is None:
                        dead_letters[i] = uri
                dls_notes.append(f"{label}{note}")
            processors_status.append({k: v for k, v in entry.items() if v is not None})
        self._index(
            key,
            {(namespace, s) for s in secret_names},
            targets,
            {(namespace, c) for c in cm_names},
        )
        sink_uri = processors_status[0].get("sinkUri")
        status["sinkUri"] = sink_uri
        status["processor"] = ",".join(p.type for p in spec.processors)
        status["processors"] = processors_status
        sink_ok = not sink_problems
        if sink_ok:
            only_self = all(p.type != "knative" for p in spec.processors)
            sink_reason = "NoSinkNeeded" if only_self else "Resolved"
            sink_msg = "; ".join(sink_notes)
        else:
            sink_reason, sink_msg = sink_problems[0][0], "; ".join(m for _, m in sink_problems)
        conditions.append(condition("SinkResolved", sink_ok, sink_reason, sink_msg))
        dls_ok = not dls_problems
        if not dls_notes:
            dls_reason, dls_msg = "NoDeadLetterSink", "no processor has a delivery.deadLetterSink"
        elif dls_ok:
            dls_reason, dls_msg = "Resolved", "; ".join(dls_notes)
        else:
            dls_reason, dls_msg = dls_problems[0][0], "; ".join(m for _, m in dls_problems)
        conditions.append(condition("DeadLetterSinkResolved", dls_ok, dls_reason, dls_msg))
        if not dls_ok and sink_ok:  # the router cannot start without it
            sink_ok, sink_reason, sink_msg = False, dls_reason, dls_msg

        rendered: dict[str, Any] | None = None
        cred_ok, cred_reason, cred_msg = (
            True,
            "SecretsFound",
            (
                f"Secret(s) {', '.join(secret_names)} have the needed keys"
                if secret_names
                else "no credentials needed"
            ),
        )
        if ca_refs:
            cred_msg += f"; ConfigMap(s) {', '.join(cm_names)} hold the root CAs"
        root_cas = self.runtime.ca_files(key, ca_refs, pems) if pems else None
        render_error: str | None = None
        try:
            for use in resources.secret_references(spec):
                if use.secret in refused:
                    raise consent_error(use, namespace, name, refused[use.secret])
            rendered = resources.render_config(
                name,
                namespace,
                spec,
                secrets,
                None,
                runtime=self.runtime.name,
                root_cas=root_cas,
                sink_uris=_or_placeholder(spec, sinks, knative_only=True),
                dead_letter_uris=_or_placeholder(spec, dead_letters),
            )
        except CredentialsError as e:
            cred_ok, cred_reason, cred_msg = False, e.reason, e.message
        except Exception as e:
            render_error = render_failure(e)
        if cred_ok and ca_error is not None:
            rendered = None
            cred_ok, cred_reason, cred_msg = False, ca_error.reason, ca_error.message
        conditions.append(condition("CredentialsReady", cred_ok, cred_reason, cred_msg))

        runtime_state: RuntimeState | None = None
        ready_reason, ready_msg = "", ""
        if not cred_ok:
            ready_reason, ready_msg = cred_reason, cred_msg
        elif render_error is not None:
            ready_reason, ready_msg = "InvalidConfig", render_error
        elif not sink_ok:
            ready_reason, ready_msg = sink_reason, sink_msg
        else:
            assert rendered is not None
            try:
                config = parse_config(rendered)
            except ConfigError as e:
                ready_reason, ready_msg = "InvalidConfig", "; ".join(e.errors)
            else:
                if self.runtime.name == "deployment":
                    # the pod reads its credentials from the Secrets it mounts: the config
                    # it gets (a ConfigMap) names them and holds none
                    rendered = resources.render_config(
                        name,
                        namespace,
                        spec,
                        secrets,
                        None,
                        runtime=self.runtime.name,
                        root_cas=root_cas,
                        mount_credentials=True,
                        sink_uris=sinks,
                        dead_letter_uris=dead_letters,
                    )
                owner = Owner(name=name, namespace=namespace, uid=body["metadata"]["uid"])
                hash_ = resources.config_hash(
                    spec, json.dumps([sinks, dead_letters], sort_keys=True), versions
                )
                status["configHash"] = hash_
                try:
                    runtime_state = await self.runtime.apply(
                        owner, rendered, config, hash_, ca_refs, replicas=spec.replicas
                    )
                except ApiException as e:
                    if e.status in (None, 409, 429) or (e.status or 0) >= 500:
                        raise  # transient: retried
                    runtime_state = RuntimeState(
                        False, False, "ApplyFailed", f"the API server refused: {_api_message(e)}"
                    )
        if runtime_state is None:
            prev = next(
                (c for c in old_status.get("conditions") or [] if c.get("type") == "Deployed"), None
            )
            if prev is not None and prev.get("status") == "True":
                conditions.append(
                    condition(
                        "Deployed",
                        True,
                        prev.get("reason", "Deployed"),
                        "the last good config keeps running",
                    )
                )
            else:
                conditions.append(
                    condition("Deployed", False, "Waiting", f"waiting for: {ready_reason}")
                )
            if old_status.get("configHash"):
                status["configHash"] = old_status["configHash"]
            conditions.append(condition("Ready", False, ready_reason, ready_msg))
        else:
            deployed_reason = "Deployed" if self.runtime.name == "deployment" else "Started"
            deployed_msg = (
                f"Deployment {namespace}/{resources.router_name(name)}"
                if self.runtime.name == "deployment"
                else "router task in the operator process"
            )
            if not runtime_state.deployed:
                deployed_reason, deployed_msg = runtime_state.reason, runtime_state.message
            conditions.append(
                condition("Deployed", runtime_state.deployed, deployed_reason, deployed_msg)
            )
            conditions.append(
                condition("Ready", runtime_state.ready, runtime_state.reason, runtime_state.message)
            )
            if runtime_state.leader is not None:
                status["leader"] = runtime_state.leader
                self.leaders[(namespace, name)] = runtime_state.leader
            if runtime_state.available is not None:
                status["replicas"] = runtime_state.available
            if runtime_state.stalled is None:
                conditions.append(
                    condition("DeliveryStalled", False, "NotObserved", "the router is not running")
                )
                conditions[-1]["status"] = "Unknown"
            else:
                stalled_ok, stalled_reason, stalled_msg = stallreport.summary(runtime_state.stalled)
                conditions.append(
                    condition("DeliveryStalled", stalled_ok, stalled_reason, stalled_msg)
                )
                self.stall_digests[key] = stallreport.digest(runtime_state.stalled)
        await self._write_status(body, old_status, status, conditions)

    async def _resolve(
        self, dest_spec: Any, namespace: str, field: str | None
    ) -> tuple[str | None, str, tuple[str, str] | None, Target | None]:
        """Resolve one destination: (URL or None, a note for the condition, (reason, message)
        when it failed, the target it follows)."""
        dest = dest_spec.model_dump(by_alias=True, exclude_none=True, mode="json")
        target: Target | None = None
        if dest.get("ref"):
            target = self.resolver.target(dest["ref"], namespace)
        try:
            uri, target = await asyncio.to_thread(self.resolver.resolve, dest, namespace)
        except SinkError as e:
            shown: str | None = None
            if dest.get("uri"):
                try:
                    shown = uri_string(dest["uri"])
                except SinkError:
                    shown = None
            message = f"{field}: {e.message}" if field else e.message
            return shown, e.message, (e.reason, message), target
        note = f"{target.describe()} -> {uri}" if target else f"uri {uri}"
        return uri, note, None, target

    async def _write_status(
        self,
        body: dict[str, Any],
        old: dict[str, Any],
        status: dict[str, Any],
        conditions: list[dict[str, Any]],
    ) -> None:
        meta = body["metadata"]
        generation = int(meta.get("generation", 0))
        order = {
            "Ready": 0,
            "SinkResolved": 1,
            "DeadLetterSinkResolved": 2,
            "CredentialsReady": 3,
            "Deployed": 4,
            "DeliveryStalled": 5,
        }
        conditions.sort(key=lambda c: order.get(c["type"], 9))
        status = {
            **status,
            "conditions": merge_conditions(old.get("conditions") or [], conditions, generation),
        }
        self.ready[(meta["namespace"], meta["name"])] = status["conditions"][0]["status"]
        comparable_old = {k: v for k, v in old.items() if k in status}
        comparable_new = {k: v for k, v in status.items() if v is not None}
        if comparable_old == comparable_new:
            return
        # null removes a key in a merge patch
        await asyncio.to_thread(self.kube.patch_status, meta["namespace"], meta["name"], status)
        if old.get("configHash") and status.get("configHash") not in (None, old["configHash"]):
            what = (
                f"rolling Deployment {meta['namespace']}/{resources.router_name(meta['name'])}"
                if self.runtime.name == "deployment"
                else "restarting the in-process router"
            )
            await self._event(
                body, "Normal", "ConfigChanged", f"{what} (config hash {status['configHash']})"
            )
        old_ready = next((c for c in old.get("conditions") or [] if c.get("type") == "Ready"), None)
        new_ready = status["conditions"][0]
        if old_ready is None or (old_ready.get("status"), old_ready.get("reason")) != (
            new_ready["status"],
            new_ready["reason"],
        ):
            ok = new_ready["status"] == "True" or new_ready["reason"] == "RouterStarting"
            await self._event(
                body, "Normal" if ok else "Warning", new_ready["reason"], new_ready["message"]
            )
        log.info(
            "%s/%s: Ready=%s %s: %s",
            meta["namespace"],
            meta["name"],
            new_ready["status"],
            new_ready["reason"],
            new_ready["message"],
        )

    async def _event(self, body: dict[str, Any], type_: str, reason: str, message: str) -> None:
        try:
            await asyncio.to_thread(
                self.kube.event, body, type_=type_, reason=reason, message=message
            )
        except ApiException as e:
            log.warning("could not post an Event (%s): %s", reason, _api_message(e))
        except Exception as e:  # e.g. a timeout: an Event is not worth failing the pass
            log.warning("could not post an Event (%s): %s: %s", reason, type(e).__name__, e)
