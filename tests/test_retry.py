"""The one retry policy: backoff, a bounded count, and the wait a server asks for."""

from __future__ import annotations

import time

import pytest

from catalogsync.common.retry import RetryPolicy


class Busy(Exception):
    def __init__(self, retry_after: float) -> None:
        super().__init__(f"busy, retry after {retry_after}s")
        self.retry_after = retry_after


async def attempts_until_success(policy: RetryPolicy, hint: float, failures: int) -> float:
    started = time.monotonic()
    calls = 0
    retrying = policy.retrying(
        Busy, "a test call", retry_after=lambda e: e.retry_after if isinstance(e, Busy) else 0.0
    )
    async for attempt in retrying:
        with attempt:
            calls += 1
            if calls <= failures:
                raise Busy(hint)
    return time.monotonic() - started


async def test_a_retry_after_hint_lengthens_the_wait_beyond_the_backoff() -> None:
    policy = RetryPolicy(attempts=3, initial=0.0, maximum=0.0)
    assert await attempts_until_success(policy, 0.15, 2) >= 0.3


async def test_the_last_error_is_raised_once_the_attempts_are_spent() -> None:
    with pytest.raises(Busy):
        await attempts_until_success(RetryPolicy(attempts=2, initial=0.0, maximum=0.0), 0.0, 5)
