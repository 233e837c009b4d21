"""What every job does around its real work: logging, exit codes and the termination message."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Coroutine, Mapping
from typing import Any

from catalogsync.common.config import RunSettings, load
from catalogsync.common.errors import ExitCode, SyncError
from catalogsync.common.logs import setup_logging
from catalogsync.common.progress import write_termination_message

log = logging.getLogger(__name__)

JobMain = Callable[[RunSettings], Coroutine[Any, Any, Mapping[str, Any]]]


def run_job(stage: str, job: JobMain) -> int:
    """Run ``job`` and map its outcome to the exit-code contract.

    The summary (or the failure) always reaches the termination-message file, so the operator can
    report counts and the real cause without reading logs.
    """
    try:
        run = load(RunSettings)
    except SyncError as exc:
        setup_logging()
        log.error("%s", exc)
        return int(exc.exit_code)
    setup_logging(run.log_format)
    try:
        summary = asyncio.run(job(run))
    except SyncError as exc:
        log.error("%s failed: %s", stage, exc, extra={"reason": exc.reason})
        write_termination_message(
            run.termination_message_path,
            {
                "stage": stage,
                "ok": False,
                "reason": exc.reason,
                "message": str(exc),
                "exitCode": int(exc.exit_code),
            },
        )
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
