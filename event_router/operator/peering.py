"""Whether this operator replica acts, following kopf peering.

kopf pauses its watch streams (and so our handlers) while another replica of higher or equal
priority is alive on the same peering object, but it does not expose that state, and it
cannot pause what runs beside its handlers: the operator's resync loop and the in-process
routers. :class:`PeeringGate` reads the same peering object(s) kopf keeps alive and applies
kopf's own rule (``kopf/_core/engines/peering.py``):

* this replica acts only once its own entry is in the peering status (kopf starts paused
  until then: peering is mandatory when a peering name is given);
* it pauses while any *other* live peer (``lastseen + lifetime`` in the future) has a
  priority >= its own (kopf pauses every replica of equal priority);
* with several watched namespaces (one ``KopfPeering`` each), it acts only if it may act
  in all of them (kopf pauses the whole operator when any of them conflicts).

At start (:func:`peering_crds_installed`, used by ``main``), kopf's own rule: without the
kopf.dev peering CRDs the operator runs standalone with a WARNING when no peering was asked
for, and stops with an error naming the missing object and the fix when ``--peering NAME``
was given. A peering object or CRD that goes missing while running means paused, as for kopf;
a replica paused for any reason but a live peer that acts (a healthy standby) answers 503 on
``/readyz`` with the reason, and logs it at ERROR once it lasts (RouterConfigs get no status
while nobody acts). Any other failure to read it (a
503 during an API server upgrade, a timeout) keeps the current state, so a blip does not stop
and restart every router; but a replica that has not read the object for half the peering
lifetime pauses (its own keep-alives are failing too, and at the full lifetime a standby takes
over: the routers must be stopped before that), and so does one whose own entry is older than
its lifetime.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import getpass
import logging
import os
import secrets
import socket
import time
from collections.abc import Awaitable, Callable
from typing import Any

from kubernetes.client.exceptions import ApiException

log = logging.getLogger(__name__)


def own_identity() -> str:
    """This replica's peering id (the pod name when ``POD_ID`` is set, as kopf does)."""
    pod = os.environ.get("POD_ID")
    if pod:
        return pod
    return f"{getpass.getuser()}@{socket.gethostname()}/{os.getpid()}/{secrets.token_hex(3)}"


def peering_paths(name: str, namespaces: list[str]) -> list[tuple[str, str, str | None]]:
    """(collection path, kind, namespace) of the peering object(s) kopf uses."""
    if not namespaces:
        return [("/apis/kopf.dev/v1/clusterkopfpeerings", "ClusterKopfPeering", None)]
    return [
        (f"/apis/kopf.dev/v1/namespaces/{ns}/kopfpeerings", "KopfPeering", ns) for ns in namespaces
    ]


#: what the peering objects need
PEERING_FIX = (
    "apply manifests/peering.yaml (the kopf.dev peering CRDs), or run one replica with --standalone"
)


def peering_crds_installed(api: Any) -> bool:
    """Whether the API server serves kopf.dev/v1 (ClusterKopfPeering, KopfPeering)."""
    from event_router.operator.kube import request

    try:
        request(api, "GET", "/apis/kopf.dev/v1")
    except ApiException as e:
        if e.status == 404:
            return False
        raise
    return True


def missing_peering_message(name: str, namespaces: list[str]) -> str:
    """The start error of an explicit ``--peering NAME`` without the peering CRDs."""
    objects = ", ".join(
        f"{kind} {name!r}" + (f" in namespace {ns}" if ns else "")
        for _, kind, ns in peering_paths(name, namespaces)
    )
    return (
        f"--peering {name}: peering was asked for, but {objects} cannot exist: the kopf.dev "
        f"peering CRDs are not installed on this API server. Fix: {PEERING_FIX}; or leave "
        f"out --peering (and EVENT_ROUTER_OPERATOR_PEERING) to run standalone"
    )


def ensure_peering_objects(api: Any, name: str, namespaces: list[str]) -> bool:
    """Create the missing peering object(s); True when all exist. A watched namespace that
    does not exist yet is skipped (its object is created once it does: the gate calls this
    again while one is missing)."""
    from event_router.operator.kube import request

    complete = True
    for path, kind, ns in peering_paths(name, namespaces):
        meta: dict[str, Any] = {"name": name}
        if ns:
            meta["namespace"] = ns
        body = {"apiVersion": "kopf.dev/v1", "kind": kind, "metadata": meta}
        try:
            request(api, "POST", path, body=body)
            log.info("created %s %s", kind, name if ns is None else f"{ns}/{name}")
        except ApiException as e:
            if e.status == 409:
                continue
            if e.status != 404:
                raise
            complete = False
            if ns is not None and not _exists(api, f"/api/v1/namespaces/{ns}"):
                log.warning(
                    "namespace %s does not exist yet: nothing acts until it does (its %s "
                    "is created then)",
                    ns,
                    kind,
                )
            else:
                log.warning("peering CRDs (kopf.dev) are not installed: %s", PEERING_FIX)
                return False
    return complete


def _exists(api: Any, path: str) -> bool:
    from event_router.operator.kube import request

    try:
        request(api, "GET", path)
    except ApiException as e:
        if e.status == 404:
            return False
        raise
    return True


def _parse_time(value: str | None) -> dt.datetime | None:
    if not value:
        return None
    try:
        t = dt.datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        return None
    return t if t.tzinfo else t.replace(tzinfo=dt.UTC)


#: how may_act's reason starts when a live replica of a higher priority acts (this one is a
#: healthy standby; with equal priorities kopf pauses both, and nobody acts)
STANDBY_PREFIX = "standby behind replica "


def may_act(
    status: dict[str, Any] | None, identity: str, priority: int, now: dt.datetime | None = None
) -> tuple[bool, str]:
    """kopf's rule for one peering object's ``status``: (acts, why)."""
    peers = status or {}
    if identity not in peers:
        return False, "not yet registered in the peering object"
    now = now or dt.datetime.now(dt.UTC)
    mine = peers[identity] if isinstance(peers[identity], dict) else {}
    my_seen = _parse_time(mine.get("lastseen"))
    if my_seen is not None and my_seen + dt.timedelta(seconds=int(mine.get("lifetime", 60))) <= now:
        return False, "this replica's own keep-alive is older than its lifetime"
    for other, info in peers.items():
        if other == identity or not isinstance(info, dict):
            continue
        lastseen = _parse_time(info.get("lastseen")) or now
        deadline = lastseen + dt.timedelta(seconds=int(info.get("lifetime", 60)))
        if deadline <= now:
            continue  # dead peer
        their = int(info.get("priority", 0))
        if their > priority:
            return False, f"{STANDBY_PREFIX}{other} has a higher priority ({their} > {priority})"
        if their == priority:
            return False, (
                f"replica {other} has the same priority {priority} (kopf pauses both: give "
                "the replicas different --priority values)"
            )
    return True, "no live replica with a higher or equal priority"


class PeeringGate:
    """Polls the peering object(s) and calls ``on_change(active)`` when the state flips."""

    def __init__(
        self,
        get: Callable[[str], Any],
        name: str,
        namespaces: list[str],
        identity: str,
        priority: int,
        on_change: Callable[[bool], Awaitable[None]],
        *,
        interval: float = 2.0,
        lifetime: float = 60.0,
        ensure: Callable[[], Any] | None = None,
    ) -> None:
        self._get = get
        self.paths = [f"{path}/{name}" for path, _, _ in peering_paths(name, namespaces)]
        self.identity = identity
        self.priority = priority
        self.on_change = on_change
        self.interval = interval
        self.lifetime = lifetime
        #: creates missing peering objects (called, at most every 10 s, while one is missing)
        self._ensure = ensure
        self._ensured = 0.0
        self.active = False
        self.why = ""
        self._last_read = time.monotonic()
        #: paused because a live peer with a higher or equal priority acts (healthy)
        self.standby = False
        #: since when this replica is paused for another reason (None: it is not)
        self._stuck_since: float | None = time.monotonic()
        self._reported = ""
        #: how long a pause that is not a standby may last before it counts as a failure
        #: (kopf needs a moment to register this replica at start)
        self.grace = max(10.0, 3 * interval)

    @property
    def healthy(self) -> bool:
        """Acting, a standby behind a live peer, or not paused for longer than ``grace``."""
        return self.problem() is None

    def problem(self) -> str | None:
        """Why this replica cannot act and nobody acts in its place, once that lasts."""
        if self.active or self.standby or self._stuck_since is None:
            return None
        if time.monotonic() - self._stuck_since < self.grace:
            return None
        return f"peering: this replica cannot act ({self.why}); {PEERING_FIX}"

    async def check(self) -> bool:
        acts, why = True, ""
        for path in self.paths:
            try:
                obj = await asyncio.to_thread(self._get, path)
            except ApiException as e:
                if e.status == 404:
                    acts, why = False, f"the peering object {path} does not exist"
                    await self._create_missing()
                    break
                return await self._unread(f"{e.status} {e.reason}")
            except Exception as e:
                return await self._unread(f"{type(e).__name__}: {e}")
            ok, why = may_act((obj or {}).get("status"), self.identity, self.priority)
            if not ok:
                acts = False
                break
        self._last_read = time.monotonic()
        return await self._set(acts, why)

    async def _create_missing(self) -> None:
        if self._ensure is None or time.monotonic() - self._ensured < 10.0:
            return
        self._ensured = time.monotonic()
        try:
            await asyncio.to_thread(self._ensure)
        except Exception as e:
            log.warning("peering: cannot create the peering object(s): %s", e)

    async def _unread(self, error: str) -> bool:
        """The peering object could not be read: keep the state, unless that has lasted for
        half the lifetime (a standby takes over at the full lifetime)."""
        silent = time.monotonic() - self._last_read
        if self.active and silent >= self.lifetime / 2:
            why = f"the peering object unread for {silent:.0f}s ({error})"
            return await self._set(False, why)
        log.warning("peering: cannot read the peering object (%s); keeping the state", error)
        return self.active

    async def _set(self, acts: bool, why: str) -> bool:
        if acts != self.active:
            log.info("peering: this replica is now %s (%s)", "ACTIVE" if acts else "PAUSED", why)
            await self.on_change(acts)  # if it fails, the next check tries again
            self.active = acts
        self.why = why
        self.standby = not acts and why.startswith(STANDBY_PREFIX)
        if acts or self.standby:
            self._stuck_since, self._reported = None, ""
        elif self._stuck_since is None:
            self._stuck_since = time.monotonic()
        problem = self.problem()
        if problem is not None and problem != self._reported:
            log.error("%s. RouterConfigs get no status while no replica acts", problem)
            self._reported = problem
        return acts

    async def run(self) -> None:
        while True:
            try:
                await self.check()
            except Exception:  # on_change failed: try again at the next check
                log.exception("peering: applying the state failed")
            await asyncio.sleep(self.interval)
