"""Logging: JSON lines for machines (pods, CI), plain text for a person at a terminal."""

from __future__ import annotations

import functools
import logging
import sys
from typing import Literal

from pythonjsonlogger.json import JsonFormatter
from rich.console import Console
from rich.logging import RichHandler

from catalogsync.common import redact

LogFormat = Literal["auto", "json", "text"]
LogLevel = Literal["DEBUG", "INFO", "WARNING", "ERROR"]

_RECORD_FIELDS = frozenset(vars(logging.LogRecord("", 0, "", 0, "", None, None))) | {"message"}


class Redacting(logging.Filter):
    """Runs every record through :mod:`catalogsync.common.redact` before any handler sees it:
    the message, its ``extra`` fields and the traceback text."""

    def filter(self, record: logging.LogRecord) -> bool:
        record.msg = redact.text(record.getMessage())
        record.args = None
        if record.exc_info:
            record.exc_text = redact.text(logging.Formatter().formatException(record.exc_info))
            record.exc_info = None
        elif record.exc_text:
            record.exc_text = redact.text(record.exc_text)
        for key, data in list(vars(record).items()):
            if key not in _RECORD_FIELDS:
                setattr(record, key, redact.value(data))
        return True


@functools.cache
def terminal() -> Console:
    """The one console a terminal session writes to, so log lines print above progress bars."""
    return Console(stderr=True)


def wants_json(fmt: LogFormat) -> bool:
    return fmt == "json" or (fmt == "auto" and not sys.stderr.isatty())


def setup_logging(fmt: LogFormat = "auto", level: int | str = logging.INFO) -> None:
    """Configure the root logger once; a pod's log is JSON so it can be queried, not read.

    Every line passes the redaction filter, whichever format is chosen."""
    handler: logging.Handler
    if wants_json(fmt):
        handler = logging.StreamHandler(sys.stderr)
        handler.setFormatter(
            JsonFormatter(
                "%(asctime)s %(levelname)s %(name)s %(message)s",
                rename_fields={"asctime": "time", "levelname": "level", "name": "logger"},
                timestamp=False,
            )
        )
    elif sys.stderr.isatty():
        handler = RichHandler(console=terminal(), show_path=False, log_time_format="%H:%M:%S")
    else:
        handler = logging.StreamHandler(sys.stderr)
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)-7s %(name)s: %(message)s"))
    handler.addFilter(Redacting())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level)
    for noisy in (
        "httpx",
        "httpcore",
        "asyncio",
        "aiohttp.access",
        "kubernetes_asyncio",
        "urllib3",
    ):
        logging.getLogger(noisy).setLevel(logging.WARNING)
