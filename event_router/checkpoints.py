"""Checkpoint stores and the tracker that advances a checkpoint only over delivered events.

A checkpoint is a small JSON object whose fields belong to the provider (vCenter: the
original router's ``vCenter``, ``lastEventKey``, ...; Horizon: last event time and ids).
Stores: :class:`FileStore` (standalone) and ``ConfigMapStore`` (under the operator).
"""

from __future__ import annotations

import asyncio
import json
import os
import tempfile
from collections import deque
from pathlib import Path
from typing import Any, Generic, Protocol, TypeVar

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
        data = json.loads(text)
        if not isinstance(data, dict):
            raise ValueError(f"checkpoint {self.path}: expected a JSON object, got {type(data).__name__}")
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
    checkpoint there: it never passes an event that was not delivered.
    """

    def __init__(self) -> None:
        self._pending: deque[tuple[P, asyncio.Future[bool]]] = deque()
        self.blocked_by: P | None = None

    def add(self, position: P, ticket: asyncio.Future[bool]) -> None:
        self._pending.append((position, ticket))

    def __len__(self) -> int:
        return len(self._pending)

    def advance(self) -> P | None:
        last: P | None = None
        self.blocked_by = None
        while self._pending:
            position, ticket = self._pending[0]
            if not ticket.done():
                break
            if ticket.cancelled() or ticket.exception() is not None or not ticket.result():
                self.blocked_by = position
                break
            self._pending.popleft()
            last = position
        return last
