"""The exit-code contract between the jobs and the operator.

The operator's Jobs carry a ``podFailurePolicy`` that fails the Job at once on the permanent codes,
so the code a job exits with decides whether Kubernetes retries it. Raise one of these exceptions
instead of calling ``sys.exit`` deep inside the code: the CLI maps them to codes in one place.
"""

from __future__ import annotations

from enum import IntEnum


class ExitCode(IntEnum):
    OK = 0
    TRANSIENT = 1
    PERMANENT = 2
    INVALID_DATA = 3


PERMANENT_EXIT_CODES: tuple[int, ...] = (ExitCode.PERMANENT, ExitCode.INVALID_DATA)


class SyncError(Exception):
    """A failure with a message meant for the person reading ``kubectl get``.

    ``reason`` is the CamelCase cause the operator copies into ``status.failure.reason``.
    """

    exit_code: ExitCode = ExitCode.TRANSIENT
    reason: str = "Error"

    def __init__(self, message: str, *, reason: str | None = None) -> None:
        super().__init__(message)
        if reason is not None:
            self.reason = reason


class TransientError(SyncError):
    """Worth retrying: the network, a 5xx, a dropped stream."""


class PermanentError(SyncError):
    """Retrying cannot help: bad configuration or rejected credentials."""

    exit_code = ExitCode.PERMANENT
    reason = "InvalidConfiguration"


class InvalidDataError(SyncError):
    """The data is beyond the configured tolerance; a human has to look at it."""

    exit_code = ExitCode.INVALID_DATA
    reason = "InvalidData"
