"""Fault injection: the ways a real MediPim stream has failed, or plausibly could, on demand.

A fault is armed for the next ``times`` requests to an endpoint (``None``: until cleared). Every
request takes all armed faults at once, so "stall, then cut" is two faults armed together. The
wire form (admin endpoint, CLI) is the camelCase JSON of ``Fault`` plus ``times``/``endpoint``.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass, field
from typing import Any, Literal

FaultKind = Literal["cut", "truncate", "malformed", "error_line", "status", "stall"]
KINDS: tuple[FaultKind, ...] = ("cut", "truncate", "malformed", "error_line", "status", "stall")
STREAM = "products/stream"


@dataclass(frozen=True)
class Fault:
    kind: FaultKind
    after_bytes: int = 0
    """cut / stall: how many body bytes go out first."""
    at_index: int = 0
    """malformed / error_line: the stream line (``meta.index``) affected."""
    status: int = 503
    """status: the HTTP status answered before the first byte; error_line: ``error.status``."""
    seconds: float = 0.0
    """stall: how long the stream goes quiet."""
    code: str | None = None
    """status / error_line: ``error.code`` (default from the status)."""

    @classmethod
    def cut(cls, after_bytes: int) -> Fault:
        """Drop the TCP connection after ``after_bytes`` body bytes (a "socket hang up")."""
        return cls("cut", after_bytes=after_bytes)

    @classmethod
    def truncate(cls) -> Fault:
        """End the response cleanly in the middle of its last line: no error, just short."""
        return cls("truncate")

    @classmethod
    def malformed(cls, at_index: int) -> Fault:
        """Send line ``at_index`` as invalid JSON (an unterminated string), then carry on."""
        return cls("malformed", at_index=at_index)

    @classmethod
    def error_line(cls, at_index: int, status: int = 500, code: str | None = None) -> Fault:
        """Send ``{"error": {...}}`` in place of line ``at_index`` and end the (200) response."""
        return cls("error_line", at_index=at_index, status=status, code=code)

    @classmethod
    def http_status(cls, status: int = 503, code: str | None = None) -> Fault:
        """Answer with ``status`` and an error body before any stream byte (5xx, 429, ...)."""
        return cls("status", status=status, code=code)

    @classmethod
    def stall(cls, after_bytes: int, seconds: float) -> Fault:
        """Go silent for ``seconds`` after ``after_bytes`` body bytes, then continue."""
        return cls("stall", after_bytes=after_bytes, seconds=seconds)

    @property
    def error_code(self) -> str:
        if self.code:
            return self.code
        return {429: "too_many_requests", 503: "service_unavailable"}.get(
            self.status, "internal_error" if self.status >= 500 else "bad_request"
        )

    def to_json(self) -> dict[str, Any]:
        return {
            "kind": self.kind,
            "afterBytes": self.after_bytes,
            "atIndex": self.at_index,
            "status": self.status,
            "seconds": self.seconds,
            "code": self.code,
        }

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Fault:
        kind = data.get("kind")
        if kind not in KINDS:
            raise ValueError(f"fault kind must be one of {KINDS}, not {kind!r}")
        return cls(
            kind=kind,
            after_bytes=int(data.get("afterBytes", 0)),
            at_index=int(data.get("atIndex", 0)),
            status=int(data.get("status", 503)),
            seconds=float(data.get("seconds", 0.0)),
            code=data.get("code"),
        )


@dataclass
class _Armed:
    fault: Fault
    endpoint: str
    remaining: int | None


@dataclass
class Faults:
    """The armed faults of one server; safe to drive from tests, admin requests and threads."""

    _armed: list[_Armed] = field(default_factory=list)
    _lock: threading.Lock = field(default_factory=threading.Lock)
    fired: list[tuple[str, Fault]] = field(default_factory=list)
    """(endpoint, fault) of every fault handed to a request, oldest first."""

    def inject(self, *faults: Fault, times: int | None = 1, endpoint: str = STREAM) -> None:
        """Arm ``faults`` for the next ``times`` requests to ``endpoint`` (None: every request)."""
        if times is not None and times < 1:
            raise ValueError(f"times must be >= 1 or None, not {times}")
        with self._lock:
            self._armed.extend(_Armed(f, endpoint, times) for f in faults)

    def clear(self) -> None:
        with self._lock:
            self._armed.clear()

    @property
    def pending(self) -> list[tuple[Fault, str, int | None]]:
        with self._lock:
            return [(a.fault, a.endpoint, a.remaining) for a in self._armed]

    def take(self, endpoint: str) -> list[Fault]:
        """The faults for one request to ``endpoint``, counting it against their ``times``."""
        with self._lock:
            taken = [a for a in self._armed if a.endpoint in (endpoint, "*")]
            for armed in taken:
                if armed.remaining is not None:
                    armed.remaining -= 1
            self._armed = [a for a in self._armed if a.remaining is None or a.remaining > 0]
            self.fired.extend((endpoint, a.fault) for a in taken)
            return [a.fault for a in taken]
