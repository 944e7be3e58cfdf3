"""Checkpoint stores and the tracker that advances a checkpoint only over delivered events.

A checkpoint is a small JSON object whose fields belong to the provider (vCenter: the
original router's ``vCenter``, ``lastEventKey``, ...; Horizon: last event time and ids).
Stores: :class:`FileStore` (standalone) and :class:`ConfigMapStore` (under the operator).
:class:`VCenterCheckpoint` reads and writes the original router's vCenter checkpoint
format (``cp-<host>.json``), so a migration resumes where the original stopped.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import json
import logging
import os
import random
import re
import tempfile
import time
from collections import deque
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Generic, Protocol, TypeVar

from event_router.timefmt import rfc3339

if TYPE_CHECKING:
    import kubernetes.client

log = logging.getLogger(__name__)

Checkpoint = dict[str, Any]


class CheckpointStore(Protocol):
    async def load(self) -> Checkpoint | None:
        """The last saved checkpoint, or None when there is none."""
        ...

    async def save(self, checkpoint: Checkpoint) -> None:
        """Persist atomically: a crash leaves the old or the new checkpoint, never half."""
        ...

    def describe(self) -> str:
        """Where it lives, for logs (a path, ``configmap ns/name``)."""
        ...


class FileStore:
    """One JSON file, written atomically (temp file in the same directory, fsync, rename)."""

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.path = Path(path)

    def describe(self) -> str:
        return str(self.path)

    async def load(self) -> Checkpoint | None:
        return await asyncio.to_thread(self._load)

    def _load(self) -> Checkpoint | None:
        try:
            text = self.path.read_text(encoding="utf-8")
        except FileNotFoundError:
            return None
        try:
            data = json.loads(text)
        except json.JSONDecodeError as e:
            raise ValueError(
                f"checkpoint {self.path}: not valid JSON ({e}); fix or delete the file"
            ) from None
        if not isinstance(data, dict):
            raise ValueError(
                f"checkpoint {self.path}: expected a JSON object, got {type(data).__name__}"
            )
        return data

    async def save(self, checkpoint: Checkpoint) -> None:
        await asyncio.to_thread(self._save, checkpoint)

    def _save(self, checkpoint: Checkpoint) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{self.path.name}.", dir=self.path.parent)
        try:
            with os.fdopen(fd, "w", encoding="utf-8") as f:
                json.dump(checkpoint, f, indent=2)
                f.flush()
                os.fsync(f.fileno())
            os.replace(tmp, self.path)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise
        dir_fd = os.open(self.path.parent, os.O_RDONLY)
        try:
            os.fsync(dir_fd)
        finally:
            os.close(dir_fd)


P = TypeVar("P")


class CheckpointTracker(Generic[P]):
    """Tracks published events in order and tells how far the checkpoint may advance.

    ``add(position, ticket)`` for each published event, in stream order; ``advance()``
    pops every leading ticket that resolved True and returns the last such position (or
    None when nothing new). A ticket that resolved False (not delivered) stops the
    checkpoint there for good: it never passes an event that was not delivered, so a
    restart replays from that event. From then on nothing after it can move the checkpoint,
    so later tickets are no longer kept (memory stays bounded however long the process runs)
    and ``blocked_by`` names the undelivered event.

    ``added`` counts every position ever added, ``covered`` those the checkpoint advanced
    over; ``uncovered`` (their difference) is what the metric
    ``event_router_checkpoint_pending_events`` shows.
    """

    def __init__(self) -> None:
        self._pending: deque[tuple[P, asyncio.Future[bool]]] = deque()
        self.blocked_by: P | None = None
        self.added = 0
        self.covered = 0

    @property
    def uncovered(self) -> int:
        """Events published that the checkpoint does not cover (yet, or ever: blocked)."""
        return self.added - self.covered

    def add(self, position: P, ticket: asyncio.Future[bool]) -> None:
        self.added += 1
        if self.blocked_by is None:
            self._pending.append((position, ticket))

    def __len__(self) -> int:
        return len(self._pending)

    def advance(self) -> P | None:
        last: P | None = None
        if self.blocked_by is not None:
            return None
        while self._pending:
            position, ticket = self._pending[0]
            if not ticket.done():
                break
            if ticket.cancelled() or ticket.exception() is not None or not ticket.result():
                self.blocked_by = position
                self._pending.clear()
                break
            self._pending.popleft()
            self.covered += 1
            last = position
        return last


# --- ConfigMap store --------------------------------------------------------------------

#: seconds for one Kubernetes API request: an unreachable API server must not hold a
#: checkpoint save (or a router's stop) for the minutes TCP takes to give up
REQUEST_TIMEOUT = 10.0


class ConfigMapStore:
    """The checkpoint as JSON under one ``key`` of a ConfigMap (created on first save).

    Saves use optimistic concurrency: the replace carries the ``resourceVersion`` that was
    read; on 409 Conflict the ConfigMap is read again and the save retried, so other keys
    (other routers sharing the ConfigMap) are never overwritten. The kubernetes client is
    blocking, so every call runs in a thread. ``api=None``: in-cluster config, else
    ``KUBECONFIG``.
    """

    max_conflict_retries = 20

    def __init__(
        self,
        namespace: str,
        name: str,
        key: str,
        api: kubernetes.client.CoreV1Api | None = None,
    ) -> None:
        self.namespace = namespace
        self.name = name
        # ConfigMap keys allow [-._a-zA-Z0-9]: an IPv6 host (fd00::10) becomes fd00__10
        self.key = re.sub(r"[^-._a-zA-Z0-9]", "_", key)
        self._api = api

    def describe(self) -> str:
        return f"configmap {self.namespace}/{self.name} key {self.key}"

    def _client(self) -> kubernetes.client.CoreV1Api:
        if self._api is None:
            import kubernetes.client

            from event_router.kubeclient import api_client

            self._api = kubernetes.client.CoreV1Api(api_client())
        return self._api

    async def load(self) -> Checkpoint | None:
        return await asyncio.to_thread(self._load)

    def _load(self) -> Checkpoint | None:
        from kubernetes.client.exceptions import ApiException

        try:
            cm = self._client().read_namespaced_config_map(
                self.name, self.namespace, _request_timeout=REQUEST_TIMEOUT
            )
        except ApiException as e:
            if e.status == 404:
                return None
            raise
        text = (cm.data or {}).get(self.key)
        if text is None:
            return None
        data = json.loads(text)
        if not isinstance(data, dict):
            raise ValueError(
                f"checkpoint {self.describe()}: expected a JSON object, got {type(data).__name__}"
            )
        return data

    async def save(self, checkpoint: Checkpoint) -> None:
        await asyncio.to_thread(self._save, checkpoint)

    def _save(self, checkpoint: Checkpoint) -> None:
        import kubernetes.client
        from kubernetes.client.exceptions import ApiException

        api = self._client()
        text = json.dumps(checkpoint, indent=2)
        for attempt in range(self.max_conflict_retries):
            if attempt:  # jittered backoff, so racing writers fall out of step
                time.sleep(random.uniform(0, 0.02 * min(attempt, 10)))
            try:
                cm = api.read_namespaced_config_map(
                    self.name, self.namespace, _request_timeout=REQUEST_TIMEOUT
                )
            except ApiException as e:
                if e.status != 404:
                    raise
                body = kubernetes.client.V1ConfigMap(
                    metadata=kubernetes.client.V1ObjectMeta(
                        name=self.name,
                        namespace=self.namespace,
                        labels={"app.kubernetes.io/managed-by": "event-router"},
                    ),
                    data={self.key: text},
                )
                try:
                    api.create_namespaced_config_map(
                        self.namespace, body, _request_timeout=REQUEST_TIMEOUT
                    )
                    return
                except ApiException as e2:
                    if e2.status == 409:  # created concurrently: read it and retry
                        continue
                    raise
            cm.data = dict(cm.data or {})
            cm.data[self.key] = text
            try:
                # cm.metadata.resourceVersion is what we read: a concurrent write -> 409
                api.replace_namespaced_config_map(
                    self.name, self.namespace, cm, _request_timeout=REQUEST_TIMEOUT
                )
                return
            except ApiException as e:
                if e.status == 409:
                    log.debug("checkpoint %s: conflict, retrying", self.describe())
                    continue
                raise
        raise RuntimeError(
            f"checkpoint {self.describe()}: {self.max_conflict_retries} conflicting writes in a "
            "row; is another router writing the same key?"
        )


# --- the original router's vCenter checkpoint format -------------------------------------

_GO_TIME = re.compile(
    r"^(\d{4}-\d{2}-\d{2})[Tt ](\d{2}:\d{2}:\d{2})(?:\.(\d+))?(Z|z|[+-]\d{2}:?\d{2})?$"
)


def parse_time(value: str) -> dt.datetime:
    """RFC 3339 as Go writes it (nanoseconds, ``Z`` or an offset) -> aware UTC datetime.

    Fractions beyond microseconds are truncated (never rounded up, so a resume filter
    built from it cannot skip an event created in the same microsecond)."""
    m = _GO_TIME.match(value.strip())
    if not m:
        raise ValueError(f"not an RFC 3339 time: {value!r}")
    date, clock, frac, zone = m.groups()
    micro = (frac or "").ljust(6, "0")[:6]
    zone = zone or "Z"
    if zone in ("Z", "z"):
        zone = "+00:00"
    elif ":" not in zone:
        zone = zone[:3] + ":" + zone[3:]
    parsed = dt.datetime.fromisoformat(f"{date}T{clock}.{micro}{zone}")
    return parsed.astimezone(dt.UTC)


def _int32(value: int) -> int:
    """Keys are int32 in vCenter; wrap anything outside the range the way vCenter does."""
    return (int(value) + 2**31) % 2**32 - 2**31


@dataclass(frozen=True)
class VCenterCheckpoint:
    """The original router's vCenter checkpoint, field for field.

    ``last_event_key`` 0 with an empty type means "no event yet" (a first checkpoint written
    at start); keys are int32 and may be negative after vCenter's counter wrapped.
    """

    vcenter: str
    last_event_key: int
    last_event_type: str
    last_event_time: dt.datetime
    created: dt.datetime

    def to_json(self) -> Checkpoint:
        return {
            "vCenter": self.vcenter,
            "lastEventKey": _int32(self.last_event_key),
            "lastEventType": self.last_event_type,
            "lastEventKeyTimestamp": rfc3339(self.last_event_time),
            "createdTimestamp": rfc3339(self.created),
        }

    @classmethod
    def from_json(cls, data: Checkpoint, *, where: str = "checkpoint") -> VCenterCheckpoint:
        """Parse (ours or the original's); raise ValueError naming the bad field."""

        def field(name: str, kind: type | tuple[type, ...]) -> Any:
            if name not in data:
                raise ValueError(f"{where}: field {name!r} is missing")
            value = data[name]
            if not isinstance(value, kind) or isinstance(value, bool):
                raise ValueError(f"{where}: field {name!r} has the wrong type (got {value!r})")
            return value

        def time_field(name: str) -> dt.datetime:
            raw = field(name, str)
            try:
                return parse_time(raw)
            except ValueError:
                raise ValueError(
                    f"{where}: field {name!r} is not an RFC 3339 time (got {raw!r})"
                ) from None

        return cls(
            vcenter=str(data.get("vCenter", "")),
            last_event_key=_int32(field("lastEventKey", int)),
            last_event_type=str(data.get("lastEventType") or ""),
            last_event_time=time_field("lastEventKeyTimestamp"),
            created=time_field("createdTimestamp")
            if "createdTimestamp" in data
            else time_field("lastEventKeyTimestamp"),
        )
