"""Pure helpers for what a CatalogSync's status shows: times, durations, percentages, conditions."""

from __future__ import annotations

import copy
import datetime as dt
from collections.abc import Mapping, Sequence
from typing import Any

RUNNING_PHASES = ("Pending", "Fetching", "Maintaining")
TERMINAL_PHASES = ("Succeeded", "Failed", "Cancelled", "Skipped")

MESSAGE_LIMIT = 300
"""``status.message`` is one line that fits a wide terminal; the details live in ``failure``."""


def format_time(moment: dt.datetime) -> str:
    """RFC 3339 in UTC with second precision, the way Kubernetes writes ``metav1.Time``."""
    return moment.astimezone(dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def parse_time(value: Any) -> dt.datetime | None:
    if not isinstance(value, str) or not value:
        return None
    try:
        return dt.datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        return None


def format_duration(seconds: float) -> str:
    """``4m12s``, ``1h0m5s``, ``0s``: what ``kubectl`` prints, and as short."""
    total = max(0, int(seconds))
    hours, rest = divmod(total, 3600)
    minutes, secs = divmod(rest, 60)
    if hours:
        return f"{hours}h{minutes}m{secs}s"
    if minutes:
        return f"{minutes}m{secs}s"
    return f"{secs}s"


def percent(done: Any, total: Any) -> str | None:
    """``"37%"`` of ``done`` over ``total``, floored and capped; None when there is no total."""
    if not isinstance(done, int | float) or not isinstance(total, int | float) or total <= 0:
        return None
    return f"{min(100, int(done * 100 // total))}%"


def one_line(text: str, limit: int = MESSAGE_LIMIT) -> str:
    """Collapse whitespace and cut to ``limit`` characters so a message stays one line."""
    flat = " ".join(text.split())
    return flat if len(flat) <= limit else flat[: limit - 3] + "..."


def condition(
    type_: str,
    status: str,
    reason: str,
    message: str,
    *,
    now: dt.datetime,
    generation: int | None,
    previous: Sequence[Mapping[str, Any]] = (),
) -> dict[str, Any]:
    """A ``metav1.Condition``; ``lastTransitionTime`` moves only when ``status`` changes."""
    before = next((c for c in previous if c.get("type") == type_), None)
    since = format_time(now)
    if before is not None and before.get("status") == status:
        since = str(before.get("lastTransitionTime") or since)
    result: dict[str, Any] = {
        "type": type_,
        "status": status,
        "reason": reason,
        "message": one_line(message),
        "lastTransitionTime": since,
    }
    if generation is not None:
        result["observedGeneration"] = generation
    return result


def merge_conditions(
    previous: Sequence[Mapping[str, Any]], updates: Sequence[Mapping[str, Any]]
) -> list[dict[str, Any]]:
    """``previous`` with ``updates`` replacing conditions of the same type, order kept."""
    by_type = {str(u["type"]): dict(u) for u in updates}
    merged = [by_type.pop(str(c.get("type")), dict(c)) for c in previous]
    merged.extend(by_type.values())
    return merged


def changed(current: Mapping[str, Any], patch: Mapping[str, Any]) -> dict[str, Any]:
    """The part of a merge ``patch`` that would change ``current`` (empty: nothing to write)."""
    result: dict[str, Any] = {}
    for key, value in patch.items():
        old = current.get(key)
        if isinstance(value, Mapping) and isinstance(old, Mapping):
            sub = changed(old, value)
            if sub:
                result[key] = sub
        elif value is None:
            if key in current:
                result[key] = None
        elif old != value:
            result[key] = value
    return result


def merge_patch(target: Mapping[str, Any], patch: Mapping[str, Any]) -> dict[str, Any]:
    """RFC 7386 JSON merge patch, as the API server applies ``merge-patch+json``."""
    merged = dict(target)
    for key, value in patch.items():
        if value is None:
            merged.pop(key, None)
        elif isinstance(value, Mapping) and isinstance(merged.get(key), Mapping):
            merged[key] = merge_patch(merged[key], value)
        else:
            merged[key] = copy.deepcopy(value)
    return merged
