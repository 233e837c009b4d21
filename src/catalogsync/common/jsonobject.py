"""Decoding JSON that must be an object: a configured filter, a stream line, a catalog line."""

from __future__ import annotations

from typing import Any

import orjson


def load_object(data: bytes | bytearray | memoryview | str) -> dict[str, Any]:
    """``data`` decoded; a ``ValueError`` that says what it is instead, for the caller to place.

    The message reads after "is": ``not JSON (...)`` or ``not a JSON object (list)``.
    """
    try:
        parsed = orjson.loads(data)
    except orjson.JSONDecodeError as exc:
        raise ValueError(f"not JSON ({exc})") from None
    if not isinstance(parsed, dict):
        raise ValueError(f"not a JSON object ({type(parsed).__name__})")
    return parsed
