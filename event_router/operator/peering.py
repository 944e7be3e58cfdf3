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

A missing peering object or CRD means paused, as for kopf. Any other failure to read it (a
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
                log.warning(
                    "peering CRDs (kopf.dev) are not installed: apply manifests/peering.yaml, "
                    "or run one replica with --standalone"
                )
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
            return False, f"replica {other} has a higher priority ({their} > {priority})"
        if their == priority:
            return False, f"replica {other} has the same priority {priority} (kopf pauses both)"
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

    async def check(self) -> bool:
        acts, why = True, ""
        for path in self.paths:
            try:
                obj = await asyncio.to_thread(self._get, path)
            except ApiException as e:
                if e.status == 404:
                    acts, why = False, f"{path} does not exist (is manifests/peering.yaml applied?)"
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
            self.active, self.why = acts, why
        return acts

    async def run(self) -> None:
        while True:
            try:
                await self.check()
            except Exception:  # on_change failed: try again at the next check
                log.exception("peering: applying the state failed")
            await asyncio.sleep(self.interval)
