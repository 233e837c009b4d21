"""What every job does around its real work: logging, exit codes and the termination message."""

from __future__ import annotations

import asyncio
import logging
import os
import signal
from collections.abc import Callable, Coroutine, Mapping
from typing import Any, get_args

from catalogsync.common import redact, stopping
from catalogsync.common.config import RunSettings, env_name, load
from catalogsync.common.errors import ExitCode, SyncError
from catalogsync.common.logs import LogFormat, LogLevel, setup_logging
from catalogsync.common.progress import write_termination_message

log = logging.getLogger(__name__)

JobMain = Callable[[RunSettings], Coroutine[Any, Any, Mapping[str, Any]]]


def _env_choice(field: str, choices: tuple[str, ...], default: str) -> str:
    raw = os.environ.get(env_name(RunSettings, field), default).strip()
    value = raw.upper() if field == "log_level" else raw
    return value if value in choices else default


def early_output() -> tuple[LogFormat, LogLevel, str]:
    """Log format, level and termination-message path, read leniently before anything else.

    They decide where a configuration error is reported, so a bad value among the other run
    settings (``SYNC_RUN_ID``) must not stop them from applying, and a bad value of their own
    falls back to the default (and is then reported like any other).
    """
    fmt: Any = _env_choice("log_format", get_args(LogFormat), "auto")
    level: Any = _env_choice("log_level", get_args(LogLevel), "INFO")
    path = os.environ.get(
        env_name(RunSettings, "termination_message_path"),
        str(RunSettings.model_fields["termination_message_path"].default),
    )
    return fmt, level, path


def failure_message(stage: str, exc: SyncError) -> dict[str, Any]:
    summary = exc.summary if isinstance(exc, stopping.Interrupted) else {}
    return {
        **summary,
        "stage": stage,
        "ok": False,
        "reason": exc.reason,
        "message": str(exc),
        "exitCode": int(exc.exit_code),
    }


async def _supervised(job: JobMain, run: RunSettings, graceful: bool) -> Mapping[str, Any]:
    """Run ``job``; the first SIGTERM asks a graceful job to stop (a second one, or any SIGTERM
    to a job that cannot stop cleanly, cancels it)."""
    loop = asyncio.get_running_loop()
    task = asyncio.current_task()
    if task is None:  # pragma: no cover - always inside asyncio.run
        raise RuntimeError("_supervised runs as a task")

    def on_sigterm() -> None:
        if graceful and not stopping.requested():
            log.warning("SIGTERM received: stopping at the next safe point")
            stopping.request("SIGTERM")
        else:
            log.warning("SIGTERM received: stopping now")
            stopping.request("SIGTERM")
            task.cancel()

    loop.add_signal_handler(signal.SIGTERM, on_sigterm)
    try:
        return await job(run)
    except asyncio.CancelledError:
        if stopping.requested():
            raise stopping.Interrupted(
                f"stopped by {stopping.requested()} before the end; the next attempt starts over"
            ) from None
        raise
    finally:
        loop.remove_signal_handler(signal.SIGTERM)


def run_job(stage: str, job: JobMain, *, graceful: bool = False) -> int:
    """Run ``job`` and map its outcome to the exit-code contract.

    The summary (or the failure) always reaches the termination-message file, so the operator can
    report counts and the real cause without reading logs; configuration errors included. Every
    message passes :mod:`catalogsync.common.redact` first.
    """
    redact.register_environment()
    fmt, level, path = early_output()
    setup_logging(fmt, level)
    try:
        run = load(RunSettings)
    except SyncError as exc:
        log.error("%s failed: %s", stage, exc, extra={"reason": exc.reason})
        write_termination_message(path, failure_message(stage, exc))
        return int(exc.exit_code)
    setup_logging(run.log_format, run.log_level)
    log.debug("%s starting", stage, extra={"settings": run.model_dump(mode="json")})
    try:
        summary = asyncio.run(_supervised(job, run, graceful))
    except SyncError as exc:
        log.error("%s failed: %s", stage, exc, extra={"reason": exc.reason})
        write_termination_message(run.termination_message_path, failure_message(stage, exc))
        return int(exc.exit_code)
    except KeyboardInterrupt:
        log.error("%s interrupted", stage)
        return int(ExitCode.TRANSIENT)
    except Exception as exc:
        log.exception("%s failed unexpectedly", stage)
        write_termination_message(
            run.termination_message_path,
            {
                "stage": stage,
                "ok": False,
                "reason": "Error",
                "message": f"{type(exc).__name__}: {exc}",
                "exitCode": int(ExitCode.TRANSIENT),
            },
        )
        return int(ExitCode.TRANSIENT)
    write_termination_message(run.termination_message_path, {"stage": stage, "ok": True, **summary})
    return int(ExitCode.OK)
