"""Progress reporting shared by both jobs.

A job describes where it is with a :class:`Snapshot` and hands it to a :class:`Reporter`. Which
reporters listen depends on where the job runs: a progress bar at a terminal, JSON log lines
elsewhere, and, inside a pod of a CatalogSync run, throttled patches of the job's own subtree of
the CR's status. At the end the summary goes to the termination-message file, which is how the
operator gets the final counts even when every live patch was lost.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import sys
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import orjson

from catalogsync.common import redact
from catalogsync.common.config import RunSettings
from catalogsync.common.logs import terminal
from catalogsync.common.summaries import MAINTAINER_OUTCOMES

log = logging.getLogger(__name__)

TERMINATION_MESSAGE_LIMIT = 4096
"""The kubelet keeps at most 4 KiB of a termination message."""


@dataclass(frozen=True)
class Snapshot:
    """Where a stage is. ``counts`` uses the CR status field names of that stage."""

    stage: str
    done: int
    total: int | None
    unit: str
    counts: Mapping[str, Any] = field(default_factory=dict)

    @property
    def percent(self) -> int | None:
        if not self.total:
            return None
        return min(100, int(self.done * 100 / self.total))


class Reporter(Protocol):
    async def update(self, snapshot: Snapshot) -> None: ...

    async def finish(self, snapshot: Snapshot, summary: Mapping[str, Any]) -> None: ...


class Throttle:
    """Lets an action through at most once per ``interval`` seconds."""

    def __init__(self, interval: float, clock: Any = time.monotonic) -> None:
        self.interval = interval
        self._clock = clock
        self._last: float | None = None

    def ready(self) -> bool:
        now = self._clock()
        if self._last is not None and now - self._last < self.interval:
            return False
        self._last = now
        return True


class LogReporter:
    """One JSON-friendly log line per interval: what a pod's log needs, nothing more."""

    def __init__(self, interval: float) -> None:
        self._throttle = Throttle(interval)

    async def update(self, snapshot: Snapshot) -> None:
        if self._throttle.ready():
            log.info(
                "%s progress",
                snapshot.stage,
                extra={"percent": snapshot.percent, **snapshot.counts},
            )

    async def finish(self, snapshot: Snapshot, summary: Mapping[str, Any]) -> None:
        log.info("%s finished", snapshot.stage, extra=dict(summary))


class BarReporter:
    """A rich progress bar, for a person watching a terminal."""

    SHOWN = (*MAINTAINER_OUTCOMES, "downloads")
    """Counts worth a glance while a stage runs; the rest are in the summary."""

    def __init__(self, description: str) -> None:
        from rich.progress import (
            BarColumn,
            MofNCompleteColumn,
            Progress,
            TaskProgressColumn,
            TextColumn,
            TimeElapsedColumn,
            TimeRemainingColumn,
        )
        from rich.table import Column

        self._progress = Progress(
            TextColumn("[bold]{task.description}", table_column=Column(no_wrap=True)),
            BarColumn(bar_width=30),
            TaskProgressColumn(),
            MofNCompleteColumn(),
            TimeElapsedColumn(),
            TimeRemainingColumn(),
            TextColumn(
                "{task.fields[detail]}",
                table_column=Column(no_wrap=True, overflow="ellipsis", ratio=1),
            ),
            console=terminal(),
            transient=False,
        )
        self._task = self._progress.add_task(description, total=None, detail="")
        self._progress.start()

    @classmethod
    def detail(cls, snapshot: Snapshot) -> str:
        shown = [f"{k} {v:,}" for k, v in snapshot.counts.items() if k in cls.SHOWN and v]
        if snapshot.unit.startswith("bytes") or "bytes" in snapshot.counts:
            megabytes = int(snapshot.counts.get("bytes", snapshot.done)) / 1e6
            shown.insert(0, f"{megabytes:,.1f} MB")
        return "  ".join(shown)

    async def update(self, snapshot: Snapshot) -> None:
        self._progress.update(
            self._task,
            completed=snapshot.done,
            total=snapshot.total,
            detail=self.detail(snapshot),
            description=f"{snapshot.stage} ({snapshot.unit})",
        )

    async def finish(self, snapshot: Snapshot, summary: Mapping[str, Any]) -> None:
        await self.update(snapshot)
        self._progress.stop()


class StatusPatchReporter:
    """Patches ``status.<stage>`` of the run's CatalogSync, at most once per interval.

    Only the job's own subtree is written, through the status subresource, so the job needs no more
    than ``patch catalogsyncs/status``. A failed patch is logged and forgotten: live progress is a
    nicety, and the termination message carries the final counts anyway.
    """

    def __init__(self, namespace: str, name: str, interval: float) -> None:
        self.namespace = namespace
        self.name = name
        self._throttle = Throttle(interval)
        self._api: Any = None

    async def _client(self) -> Any:
        if self._api is None:
            from catalogsync.common.kube import custom_objects_api

            self._api = await custom_objects_api()
        return self._api

    async def _patch(self, stage: str, counts: Mapping[str, Any]) -> None:
        from catalogsync.common.kube import GROUP, PLURAL, VERSION

        try:
            api = await self._client()
            await api.patch_namespaced_custom_object_status(
                GROUP,
                VERSION,
                self.namespace,
                PLURAL,
                self.name,
                {"status": {stage: redact.value(counts)}},
                # Without it the client sends a dict as a JSON Patch, which the server rejects.
                _content_type="application/merge-patch+json",
            )
        except Exception as exc:
            log.warning(
                "could not patch %s status of %s/%s: %s", stage, self.namespace, self.name, exc
            )

    async def update(self, snapshot: Snapshot) -> None:
        if self._throttle.ready():
            await self._patch(snapshot.stage, snapshot.counts)

    async def finish(self, snapshot: Snapshot, summary: Mapping[str, Any]) -> None:
        await self._patch(snapshot.stage, snapshot.counts)
        if self._api is not None:
            with contextlib.suppress(Exception):
                await self._api.api_client.close()


class Reporters:
    """Fans one snapshot out to every reporter; the job sees a single reporter."""

    def __init__(self, reporters: Sequence[Reporter]) -> None:
        self.reporters = list(reporters)

    async def update(self, snapshot: Snapshot) -> None:
        for reporter in self.reporters:
            await reporter.update(snapshot)

    async def finish(self, snapshot: Snapshot, summary: Mapping[str, Any]) -> None:
        await asyncio.gather(*(r.finish(snapshot, summary) for r in self.reporters))


def reporters_for(stage: str, run: RunSettings, *, bar: bool | None = None) -> Reporters:
    """The reporters that fit where this process runs."""
    if bar is None:
        bar = sys.stderr.isatty() and run.log_format != "json"
    chosen: list[Reporter] = [BarReporter(stage) if bar else LogReporter(run.progress_interval)]
    if run.cr_namespace and run.cr_name:
        chosen.append(StatusPatchReporter(run.cr_namespace, run.cr_name, run.progress_interval))
    return Reporters(chosen)


def termination_message(summary: Mapping[str, Any]) -> bytes:
    """The summary as compact JSON within the 4 KiB limit, shortening the message if needed."""
    data = orjson.dumps(summary)
    if len(data) <= TERMINATION_MESSAGE_LIMIT:
        return data
    trimmed = dict(summary)
    message = str(trimmed.get("message", ""))
    excess = len(data) - TERMINATION_MESSAGE_LIMIT
    trimmed["message"] = message[: max(0, len(message) - excess - 3)] + "..."
    data = orjson.dumps(trimmed)
    return data[:TERMINATION_MESSAGE_LIMIT]


def write_termination_message(path: str, summary: Mapping[str, Any]) -> None:
    """Best effort: outside a pod the default path usually does not exist, and that is fine.

    The summary is redacted first: the operator copies its message into status and the webhook."""
    target = Path(path)
    if not target.parent.is_dir() or (not target.exists() and path == "/dev/termination-log"):
        return
    try:
        target.write_bytes(termination_message(redact.value(summary)))
    except OSError as exc:
        log.warning("could not write the termination message to %s: %s", path, exc)
