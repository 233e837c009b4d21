"""Waiting for the cluster in kube tests, without blocking the event loop the test servers use."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from typing import TypeVar

T = TypeVar("T")


async def until(
    probe: Callable[[], T | None], message: str, within: float = 90.0, interval: float = 0.5
) -> T:
    """Poll a blocking ``probe`` in a thread until it returns something truthy, and return that.

    The MediPim simulator and the storage server run on the test's own loop, so a probe that
    shells out to kubectl must not hold that loop while it waits.
    """
    deadline = time.monotonic() + within
    while True:
        value = await asyncio.to_thread(probe)
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {within:g}s waiting for {message}")
        await asyncio.sleep(interval)
