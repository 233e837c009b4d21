"""How the jobs wait between attempts: exponential backoff with jitter, bounded by a count.

One policy object travels from the settings to every place that retries (the MediPim stream, the
storage client, the operator's webhook notices), so tests can shorten every wait with two
environment variables.
"""

from __future__ import annotations

import logging
import random
from collections.abc import Callable
from dataclasses import dataclass

from tenacity import (
    AsyncRetrying,
    RetryCallState,
    retry_if_exception_type,
    stop_after_attempt,
)

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class RetryPolicy:
    attempts: int = 5
    """Tries in all, the first one included."""
    initial: float = 1.0
    """Seconds before the second try; doubled (plus up to ``initial`` of jitter) each time."""
    maximum: float = 60.0
    """No single wait is longer than this."""

    def delay(self, failures: int) -> float:
        """Seconds to wait after the ``failures``-th failure in a row (1-based), with jitter."""
        base = self.initial * 2.0 ** max(0, failures - 1)
        return min(self.maximum, base + random.uniform(0, self.initial))

    def retrying(
        self,
        retry_on: type[BaseException] | tuple[type[BaseException], ...],
        what: str,
        *,
        retry_after: Callable[[BaseException], float] | None = None,
    ) -> AsyncRetrying:
        """A tenacity loop that re-raises the last error once the attempts are spent.

        ``retry_after`` reads the wait a failure asks for (a server's ``Retry-After``, seconds,
        0 for none); the loop then waits at least that long, even beyond ``maximum``.
        """

        def wait(state: RetryCallState) -> float:
            delay = self.delay(state.attempt_number)
            error = state.outcome.exception() if state.outcome is not None else None
            if retry_after is None or error is None:
                return delay
            return max(delay, retry_after(error))

        def before_sleep(state: RetryCallState) -> None:
            outcome = state.outcome
            error = outcome.exception() if outcome is not None else None
            wait = state.next_action.sleep if state.next_action is not None else 0.0
            log.warning(
                "%s failed (attempt %d of %d), retrying in %.1fs: %s",
                what,
                state.attempt_number,
                self.attempts,
                wait,
                error,
            )

        return AsyncRetrying(
            stop=stop_after_attempt(self.attempts),
            wait=wait,
            retry=retry_if_exception_type(retry_on),
            before_sleep=before_sleep,
            reraise=True,
        )
