"""The one redaction step in front of every message that leaves a process.

Logs, the termination message, status patches, events and the webhook all pass through
:func:`text` (or :func:`value` for JSON-shaped data). It removes every registered secret value and
the password of any URL that carries one (``scheme://user:password@host``), whatever produced the
message: our own wording, a library's exception, a traceback. Our messages never quote a secret on
purpose; this step is what keeps a library's wording from doing it by accident.
"""

from __future__ import annotations

import os
import re
import threading
from collections.abc import Mapping
from typing import Any
from urllib.parse import quote, unquote

MASK = "***"

SECRET_VARIABLES = (
    "MEDIPIM_API_KEY_SECRET",
    "STORAGE_SERVICE_ROLE_KEY",
    "DATABASE_URL",
    "PGPASSWORD",
    "CATALOGSYNC_WEBHOOK_URL",
)
"""Environment variables whose values are secret wherever they are set."""

MIN_SECRET = 4
"""Shorter values are not masked: masking "ab" would garble every message and hide nothing."""

URL_PASSWORD = re.compile(r"(?P<head>[A-Za-z][A-Za-z0-9+.-]*://[^\s:/?#@'\"]*:)(?P<secret>\S*)@")
"""``scheme://user:password@``; greedy up to the last ``@`` of the word, so an unencoded ``@``
or ``#`` in the password is masked too."""

_PIECES = re.compile(r"[#?/@:\[\]%\s]+")


class _Registry:
    """The secrets of this process and one compiled pattern that finds any of them."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.secrets: set[str] = set()
        self.pattern: re.Pattern[str] | None = None

    def add(self, values: set[str]) -> None:
        with self.lock:
            if values - self.secrets:
                self.secrets.update(values)
                ordered = sorted(self.secrets, key=len, reverse=True)
                self.pattern = re.compile("|".join(map(re.escape, ordered)))


_registry = _Registry()


def _variants(value: str, *, pieces: bool = False) -> set[str]:
    """A secret, its percent-decoded form, and (for a password) the pieces a URL parser may cut
    it into: ``S3cr#tPass`` unencoded in a URL reaches a parser as ``S3cr`` and ``tPass``."""
    found = {value, unquote(value), quote(unquote(value), safe="")}
    if pieces:
        for candidate in list(found):
            found.update(_PIECES.split(candidate))
    return {v for v in found if len(v) >= MIN_SECRET}


def url_passwords(text: str) -> list[str]:
    """The passwords of the URLs in ``text``, as written."""
    return [match.group("secret") for match in URL_PASSWORD.finditer(text)]


def register(*values: str | None) -> None:
    """Mask these values (and their URL passwords) in every later message."""
    added: set[str] = set()
    for value in values:
        if not value:
            continue
        added |= _variants(value)
        for password in url_passwords(value):
            added |= _variants(password, pieces=True)
    _registry.add(added)


def register_environment(environ: Mapping[str, str] | None = None) -> None:
    """Mask the values of :data:`SECRET_VARIABLES` found in ``environ`` (default: this process)."""
    source = os.environ if environ is None else environ
    register(*(source.get(name) for name in SECRET_VARIABLES))


def text(message: str) -> str:
    """``message`` without any registered secret or URL password."""
    message = URL_PASSWORD.sub(lambda m: f"{m.group('head')}{MASK}@", message)
    pattern = _registry.pattern
    return pattern.sub(MASK, message) if pattern is not None else message


def value(data: Any) -> Any:
    """``data`` (JSON-shaped) with :func:`text` applied to every string in it, keys included."""
    if isinstance(data, str):
        return text(data)
    if isinstance(data, Mapping):
        return {value(k): value(v) for k, v in data.items()}
    if isinstance(data, list | tuple):
        return [value(item) for item in data]
    return data
