"""Logging: JSON lines for machines (pods, CI), plain text for a person at a terminal."""

from __future__ import annotations

import functools
import logging
import sys
from typing import Literal

from pythonjsonlogger.json import JsonFormatter
from rich.console import Console
from rich.logging import RichHandler

LogFormat = Literal["auto", "json", "text"]


@functools.cache
def terminal() -> Console:
    """The one console a terminal session writes to, so log lines print above progress bars."""
    return Console(stderr=True)


def wants_json(fmt: LogFormat) -> bool:
    return fmt == "json" or (fmt == "auto" and not sys.stderr.isatty())


def setup_logging(fmt: LogFormat = "auto", level: int = logging.INFO) -> None:
    """Configure the root logger once; a pod's log is JSON so it can be queried, not read."""
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
