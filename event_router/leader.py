"""Leader election over a ``coordination.k8s.io/v1`` Lease: one replica streams, the others
wait warm (see docs/operator.md, "Replicas and leader election").

The shape is client-go's ``leaderelection``: every ``retry_period`` a candidate reads the
Lease; it takes it when it is free (no holder) or when the holder's record has not changed
for ``lease_duration`` *as observed on the candidate's own monotonic clock* (never from the
holder's timestamps, so absolute clock skew between nodes does not matter). The holder
renews every ``retry_period`` and counts itself the leader only until ``renew_deadline``
after the *start* of its last successful renew. Since ``renew_deadline < lease_duration``,
a holder that cannot renew (API server unreachable, network split) stops delivering at least
``lease_duration - renew_deadline`` before any other replica may take the Lease; that margin
covers the time to stop (cancelling deliveries is immediate) and clock *rate* differences.

Writes use the Lease's ``resourceVersion`` (optimistic concurrency): of two candidates
racing for a free Lease exactly one wins, the other gets 409 Conflict.

The Kubernetes client is blocking: every call runs in a thread, bounded by a request
timeout shorter than the renew deadline.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import json
import logging
import os
import secrets
import socket
import time
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol

log = logging.getLogger(__name__)

ENV_LEASE = "EVENT_ROUTER_LEASE"
ENV_POD_NAME = "EVENT_ROUTER_POD_NAME"
ENV_LEASE_DURATION = "EVENT_ROUTER_LEASE_DURATION"
ENV_RENEW_DEADLINE = "EVENT_ROUTER_RENEW_DEADLINE"
ENV_RETRY_PERIOD = "EVENT_ROUTER_RETRY_PERIOD"


class LeaseConflict(Exception):
    """Someone else wrote the Lease since we read it (HTTP 409)."""


class LeaseMissing(Exception):
    """The Lease does not exist (the operator creates it; the router may not)."""


@dataclass(frozen=True)
class Timing:
    """client-go's three durations (its defaults, 15/10/2 s, scaled down so that a standby
    takes over in about 7 s after a leader dies without a goodbye)."""

    lease_duration: float = 6.0
    renew_deadline: float = 4.0
    retry_period: float = 1.0

    def __post_init__(self) -> None:
        if not self.lease_duration > self.renew_deadline:
            raise ValueError(
                f"{ENV_LEASE_DURATION} ({self.lease_duration:g}s) must be greater than "
                f"{ENV_RENEW_DEADLINE} ({self.renew_deadline:g}s)"
            )
        if not self.renew_deadline > 1.2 * self.retry_period:
            raise ValueError(
                f"{ENV_RENEW_DEADLINE} ({self.renew_deadline:g}s) must be greater than 1.2 x "
                f"{ENV_RETRY_PERIOD} ({self.retry_period:g}s)"
            )
        if self.retry_period <= 0:
            raise ValueError(f"{ENV_RETRY_PERIOD}: must be > 0 (got {self.retry_period:g})")

    @property
    def request_timeout(self) -> float:
        """One API call may take this long: a renew that hangs ends before the deadline."""
        return max(0.5, min(self.retry_period * 2, self.renew_deadline / 2))


@dataclass
class LeaseRecord:
    holder: str
    lease_duration_seconds: int
    acquire_time: str | None
    renew_time: str | None
    transitions: int
    resource_version: str
    #: the Lease's metadata as read (labels, ownerReferences): a replace sends it back
    metadata: dict[str, Any] = field(default_factory=dict)

    def same_as(self, other: LeaseRecord | None) -> bool:
        """Whether nothing changed (the holder renews by writing renewTime)."""
        return other is not None and self.resource_version == other.resource_version


class LeaseStore(Protocol):
    def describe(self) -> str: ...

    def get(self) -> LeaseRecord: ...

    def update(self, record: LeaseRecord) -> LeaseRecord:
        """Write ``record`` if the Lease is still at ``record.resource_version``."""
        ...


def _micro_time(ts: float | None = None) -> str:
    now = dt.datetime.fromtimestamp(time.time() if ts is None else ts, dt.UTC)
    return now.strftime("%Y-%m-%dT%H:%M:%S.%fZ")


class KubernetesLeaseStore:
    """A Lease read and replaced through the Kubernetes API (in-cluster service account, or
    ``KUBECONFIG``)."""

    def __init__(self, namespace: str, name: str, timeout: float, api: Any = None) -> None:
        self.namespace = namespace
        self.name = name
        self.timeout = timeout
        self._api = api

    def describe(self) -> str:
        return f"Lease {self.namespace}/{self.name}"

    def _client(self) -> Any:
        if self._api is None:
            from event_router.kubeclient import api_client

            self._api = api_client()
        return self._api

    def _path(self) -> str:
        return f"/apis/coordination.k8s.io/v1/namespaces/{self.namespace}/leases/{self.name}"

    def _call(self, method: str, body: Any = None) -> dict[str, Any]:
        from kubernetes.client.exceptions import ApiException

        api = self._client()
        params = api.param_serialize(
            method,
            self._path(),
            header_params={"Accept": "application/json", "Content-Type": "application/json"},
            body=body,
            auth_settings=["BearerToken"],
        )
        resp = api.call_api(*params, _request_timeout=self.timeout)
        resp.read()
        if resp.status == 404:
            raise LeaseMissing(f"{self.describe()} does not exist (the operator creates it)")
        if resp.status == 409:
            raise LeaseConflict(self.describe())
        if resp.status >= 400:
            raise ApiException(http_resp=resp)
        data: dict[str, Any] = json.loads(resp.data)
        return data

    @staticmethod
    def _record(obj: dict[str, Any]) -> LeaseRecord:
        spec = obj.get("spec") or {}
        return LeaseRecord(
            holder=str(spec.get("holderIdentity") or ""),
            lease_duration_seconds=int(spec.get("leaseDurationSeconds") or 0),
            acquire_time=spec.get("acquireTime"),
            renew_time=spec.get("renewTime"),
            transitions=int(spec.get("leaseTransitions") or 0),
            resource_version=str(obj["metadata"]["resourceVersion"]),
            metadata={k: v for k, v in obj["metadata"].items() if k != "managedFields"},
        )

    def get(self) -> LeaseRecord:
        return self._record(self._call("GET"))

    def update(self, record: LeaseRecord) -> LeaseRecord:
        body = {
            "apiVersion": "coordination.k8s.io/v1",
            "kind": "Lease",
            # the metadata as read (labels, ownerReferences stay); its resourceVersion is the
            # precondition: a write since our read -> 409
            "metadata": {
                **record.metadata,
                "name": self.name,
                "namespace": self.namespace,
                "resourceVersion": record.resource_version,
            },
            "spec": {
                "holderIdentity": record.holder or None,
                "leaseDurationSeconds": record.lease_duration_seconds,
                "acquireTime": record.acquire_time,
                "renewTime": record.renew_time,
                "leaseTransitions": record.transitions,
            },
        }
        return self._record(self._call("PUT", body))


def identity(environ: Mapping[str, str] | None = None) -> str:
    """``<pod name>_<random>``: a restarted container is a new candidate (it never mistakes
    the Lease of its previous life for its own)."""
    env = os.environ if environ is None else environ
    base = env.get(ENV_POD_NAME, "").strip() or socket.gethostname()
    return f"{base}_{secrets.token_hex(4)}"


def timing_from_env(environ: Mapping[str, str] | None = None) -> Timing:
    env = os.environ if environ is None else environ
    values: dict[str, float] = {}
    for var, attr in (
        (ENV_LEASE_DURATION, "lease_duration"),
        (ENV_RENEW_DEADLINE, "renew_deadline"),
        (ENV_RETRY_PERIOD, "retry_period"),
    ):
        raw = env.get(var, "").strip()
        if raw:
            try:
                values[attr] = float(raw)
            except ValueError:
                raise ValueError(f"{var}: expected seconds, e.g. 6 (got {raw!r})") from None
    return Timing(**values)


class LeaderElector:
    """Campaigns for the Lease; calls ``on_started`` once it leads and ``on_stopped`` the
    moment it may no longer count itself the leader (then :meth:`run` returns).

    :attr:`leading` is the fencing check: True only while the last successful renew started
    less than ``renew_deadline`` ago. Whatever must never happen after a takeover elsewhere
    (a checkpoint write) asks it first."""

    def __init__(
        self,
        store: LeaseStore,
        identity: str,
        timing: Timing | None = None,
        *,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.store = store
        self.identity = identity
        self.timing = timing or Timing()
        self._clock = clock
        self._observed: LeaseRecord | None = None
        self._observed_at = 0.0
        self._valid_until = 0.0
        self._was_leader = False
        self.holder: str = ""
        self.transitions = 0
        self._changed = asyncio.Event()
        self._last_error: str = ""

    @property
    def leading(self) -> bool:
        return self._was_leader and self._clock() < self._valid_until

    @property
    def role(self) -> str:
        return "leader" if self.leading else "standby"

    # --- one round ---------------------------------------------------------------------------

    def try_acquire_or_renew(self) -> bool:
        """One blocking round (run it in a thread). True when we hold the Lease now."""
        started = self._clock()
        current = self.store.get()
        if not current.same_as(self._observed):
            self._observed, self._observed_at = current, started
        self.holder = current.holder
        self.transitions = current.transitions
        mine = current.holder == self.identity
        if current.holder and not mine:
            # the holder's own duration, if it wrote one, else ours
            duration = current.lease_duration_seconds or self.timing.lease_duration
            if self._observed_at + duration > started:
                return False
        now = _micro_time()
        record = LeaseRecord(
            holder=self.identity,
            lease_duration_seconds=max(1, round(self.timing.lease_duration)),
            acquire_time=current.acquire_time if mine else now,
            renew_time=now,
            transitions=current.transitions if mine else current.transitions + 1,
            resource_version=current.resource_version,
            metadata=current.metadata,
        )
        written = self.store.update(record)
        self._observed, self._observed_at = written, started
        self._valid_until = started + self.timing.renew_deadline
        self.holder = self.identity
        self.transitions = written.transitions
        return True

    def release(self) -> bool:
        """Give the Lease up (a standby takes it within one retry period). Only when we
        still hold it; True if released."""
        try:
            current = self.store.get()
            if current.holder != self.identity:
                return False
            self.store.update(
                LeaseRecord(
                    holder="",
                    lease_duration_seconds=1,
                    acquire_time=current.acquire_time,
                    renew_time=_micro_time(),
                    transitions=current.transitions,
                    resource_version=current.resource_version,
                    metadata=current.metadata,
                )
            )
        except Exception as e:
            log.warning("leader election: could not release %s: %s", self.store.describe(), e)
            return False
        self._valid_until = 0.0
        self.holder = ""
        log.info("leader election: released %s", self.store.describe())
        return True

    async def _round(self) -> bool:
        try:
            ok = await asyncio.to_thread(self.try_acquire_or_renew)
        except LeaseConflict:
            ok = False
        except Exception as e:
            msg = f"{type(e).__name__}: {e}"
            if msg != self._last_error:
                log.warning("leader election: %s: %s", self.store.describe(), msg)
                self._last_error = msg
            return False
        self._last_error = ""
        return ok

    # --- the loop ------------------------------------------------------------------------------

    async def run(
        self,
        on_started: Callable[[], Awaitable[None]],
        on_stopped: Callable[[], Awaitable[None]],
    ) -> None:
        """Campaign until we lead, call ``on_started``, renew until we cannot, then call
        ``on_stopped`` and return. Cancel it to stop campaigning (then call :meth:`release`
        if a clean hand-over is wanted)."""
        t = self.timing
        log.info(
            "leader election: %s as %s (lease %gs, renew deadline %gs, retry %gs)",
            self.store.describe(),
            self.identity,
            t.lease_duration,
            t.renew_deadline,
            t.retry_period,
        )
        seen_holder: str | None = None
        while not await self._round():
            if self.holder != seen_holder:
                seen_holder = self.holder
                log.info(
                    "leader election: standby; %s is held by %s",
                    self.store.describe(),
                    self.holder or "nobody",
                )
            await asyncio.sleep(t.retry_period * (1 + 0.2 * (secrets.randbelow(1000) / 1000)))
        self._was_leader = True
        log.info(
            "leader election: %s acquired the lease (transition %d): streaming",
            self.identity,
            self.transitions,
        )
        watchdog = asyncio.create_task(self._watchdog(), name="lease-watchdog")
        renewer = asyncio.create_task(self._renew_loop(), name="lease-renew")
        try:
            await on_started()
            await asyncio.wait({watchdog, renewer}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for task in (watchdog, renewer):
                task.cancel()
                with contextlib.suppress(BaseException):
                    await task
        self._valid_until = 0.0
        log.error(
            "leader election: %s lost %s (no renew within %gs): stopping delivery",
            self.identity,
            self.store.describe(),
            t.renew_deadline,
        )
        await on_stopped()

    async def _renew_loop(self) -> None:
        t = self.timing
        while True:
            await asyncio.sleep(t.retry_period)
            if await self._round():
                continue
            if self.holder and self.holder != self.identity:
                return  # someone else holds it: our renew deadline cannot have been met
            # a failed renew: retry until the deadline (the watchdog ends it)

    async def _watchdog(self) -> None:
        """Ends the moment the renew deadline passes without a renew: a renew hanging in a
        thread cannot keep us leading."""
        while True:
            left = self._valid_until - self._clock()
            if left <= 0:
                return
            await asyncio.sleep(min(left, self.timing.retry_period / 4))
