"""A polite stop: SIGTERM asks a job to finish what it holds, record where it got, and report.

Kubernetes sends SIGTERM before SIGKILL (pod deletion, eviction, node drain). A job that can stop
at a clean boundary (the maintainer, between chunks) checks :func:`requested` and raises
:class:`Interrupted`; a job that cannot is cancelled, and its ``finally`` blocks clean up.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Mapping
from typing import Any, TypeVar

from catalogsync.common.errors import TransientError
from catalogsync.common.reasons import Reason

T = TypeVar("T")

_requested: list[str] = []
_waiters: set[asyncio.Future[None]] = set()


class StopRequested(Exception):
    """Raised by :func:`unless_stopped` when a stop was requested while it waited."""


class Interrupted(TransientError):
    """Stopped on request before the end; a later attempt resumes (exit code 1)."""

    reason = Reason.Interrupted

    def __init__(self, message: str, *, summary: Mapping[str, Any] | None = None) -> None:
        super().__init__(message)
        self.summary: Mapping[str, Any] = summary or {}


def request(signal_name: str) -> None:
    """Ask the job to stop; call from the event loop (a signal handler installed on it)."""
    if not _requested:
        _requested.append(signal_name)
    for waiter in list(_waiters):
        if not waiter.done():
            waiter.set_result(None)


def requested() -> str | None:
    """The name of the signal that asked this process to stop, or None."""
    return _requested[0] if _requested else None


def reset() -> None:
    _requested.clear()


async def unless_stopped(awaitable: Awaitable[T]) -> T:
    """``await awaitable``, unless a stop is requested first (then it is cancelled).

    A read that waits on a slow source must not keep a stop request waiting with it.
    """
    if _requested:
        raise StopRequested
    task = asyncio.ensure_future(awaitable)
    waiter = asyncio.get_running_loop().create_future()
    _waiters.add(waiter)
    try:
        await asyncio.wait({task, waiter}, return_when=asyncio.FIRST_COMPLETED)
    finally:
        _waiters.discard(waiter)
        waiter.cancel()
        if not task.done():
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)
    if task.cancelled():
        raise StopRequested
    return task.result()
