"""A container run as a process: its reported state, termination messages, signals.

A process cannot write the container's ``terminationMessagePath``, so it gets ``TERMINATION_ENV``
naming a file in the pod's directory; after exit that file (at most 4096 bytes), or the log tail
under ``FallbackToLogsOnError``, becomes ``state.terminated.message``.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
from dataclasses import dataclass, field
from pathlib import Path

from catalogsync.dev.kubelet.api import Obj, now

TERMINATION_ENV = "CATALOGSYNC_TERMINATION_MESSAGE_PATH"
TERMINATION_MESSAGE_LIMIT = 4096
FALLBACK_LOG_LINES = 80
FALLBACK_LOG_BYTES = 2048
OOM_EXIT_CODE = 137


@dataclass
class ContainerRun:
    """What the harness knows about one container of a pod."""

    spec: Obj
    init: bool = False
    restart_count: int = 0
    state: Obj = field(default_factory=lambda: {"waiting": {"reason": "ContainerCreating"}})
    last_state: Obj = field(default_factory=dict)
    process: asyncio.subprocess.Process | None = None
    oom_killed: bool = False
    ready: bool = False

    @property
    def name(self) -> str:
        return str(self.spec["name"])

    def status(self) -> Obj:
        running = "running" in self.state
        state = {"waiting": None, "running": None, "terminated": None, **self.state}
        image = self.spec.get("image", "")
        result: Obj = {
            "name": self.name,
            "image": image,
            "imageID": image if not self.state.get("waiting") else "",
            "ready": self.ready and running,
            "restartCount": self.restart_count,
            "started": running,
            "state": state,
            "lastState": self.last_state or {},
        }
        if self.process is not None:
            result["containerID"] = f"process://{self.process.pid}"
        return result

    @property
    def terminated(self) -> Obj | None:
        value = self.state.get("terminated")
        return value if isinstance(value, dict) else None


def terminated_state(
    run: ContainerRun, exit_code: int, started: str, termination_file: Path, log_file: Path
) -> Obj:
    """``state.terminated`` of a process that exited (OOM kills reported as the kernel's)."""
    if run.oom_killed:
        exit_code, reason = OOM_EXIT_CODE, "OOMKilled"
    else:
        reason = "Completed" if exit_code == 0 else "Error"
    message = read_limited(termination_file)
    policy = run.spec.get("terminationMessagePolicy", "File")
    if not message and exit_code != 0 and policy == "FallbackToLogsOnError":
        message = log_tail(log_file)
    terminated: Obj = {
        "exitCode": exit_code,
        "reason": reason,
        "startedAt": started,
        "finishedAt": now(),
    }
    if message:
        terminated["message"] = message
    return terminated


def killpg(pid: int, sig: signal.Signals) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pid, sig)


def read_limited(path: Path) -> str:
    try:
        with path.open("rb") as handle:
            return handle.read(TERMINATION_MESSAGE_LIMIT).decode(errors="replace")
    except OSError:
        return ""


def log_tail(path: Path) -> str:
    try:
        data = path.read_bytes()
    except OSError:
        return ""
    lines = data.splitlines()[-FALLBACK_LOG_LINES:]
    return b"\n".join(lines)[-FALLBACK_LOG_BYTES:].decode(errors="replace")
