"""A Publisher for running a provider alone in a test: it records every CloudEvent it is
handed and settles its ticket at once with ``deliver(event)`` (True = delivered, False = not,
to check that checkpoints never pass an undelivered event)."""

from __future__ import annotations

import asyncio
from collections.abc import Callable

from cloudevents.http import CloudEvent


class CollectingPublisher:
    """Records events in ``events``; ``deliver(event) -> bool`` decides each ticket
    (default: delivered). ``changed`` is set after every event."""

    def __init__(self, deliver: Callable[[CloudEvent], bool] | None = None) -> None:
        self.events: list[CloudEvent] = []
        self.deliver = deliver or (lambda _e: True)
        self.changed = asyncio.Event()

    async def publish(self, event: CloudEvent) -> asyncio.Future[bool]:
        self.events.append(event)
        ticket: asyncio.Future[bool] = asyncio.get_running_loop().create_future()
        ticket.set_result(self.deliver(event))
        self.changed.set()
        return ticket
