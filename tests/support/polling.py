"""Waiting in async tests for a condition that other tasks or processes make true."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable


async def wait_until(
    cond: Callable[[], object],
    timeout: float = 10.0,  # noqa: ASYNC109
    what: str | Callable[[], str] = "the condition",
) -> None:
    """Check ``cond`` every 20 ms until it is true; AssertionError after ``timeout`` s.

    ``what`` names what was awaited in the error (a callable is called only then, so it
    can describe the state at the time out).
    """
    deadline = time.monotonic() + timeout
    while not cond():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what() if callable(what) else what}")
        await asyncio.sleep(0.02)
