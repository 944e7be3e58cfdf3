"""An asyncio event loop in a thread, for synchronous tests (hypothesis, parametrized vector
runs) that talk over HTTP to routers and sinks running on that loop."""

from __future__ import annotations

import asyncio
import threading
from typing import Any


class Background:
    """An event loop in a thread: the routers and sinks run there, the test posts over HTTP."""

    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.thread.start()

    def run(self, coro: Any, timeout: float = 15) -> Any:
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout)

    def close(self) -> None:
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(5)
        self.loop.close()
