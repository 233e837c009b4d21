"""One maintainer run: stream the catalog, apply it chunk by chunk, then soft-delete what is gone.

Three kinds of work overlap. The producer reads the object and scans each chunk (ids and hashes)
in a worker thread; ``connections`` appliers each take the next scanned chunk, probe the table,
decode and map only what differs (again in a thread) and write it in one transaction. On 2 cores a
single COPY stream is CPU-bound inside PostgreSQL, so two appliers nearly halve a cold load. The
queue between producer and appliers is bounded, so memory holds a few chunks, whatever the size
of the catalog.

Chunks may commit out of order. The only order that matters is between two occurrences of the
same product id (the last one wins), so a chunk that repeats an id of an earlier chunk waits until
every earlier chunk has committed before it is applied.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, cast

import asyncpg

from catalogsync.common import stopping
from catalogsync.common.database import connect
from catalogsync.common.errors import InvalidDataError
from catalogsync.common.progress import Reporter, Snapshot
from catalogsync.common.summaries import MAINTAINER_COUNTS, MaintainerCounts, MaintainerSummary
from catalogsync.common.tables import Tables
from catalogsync.maintainer import changes as feed
from catalogsync.maintainer import loader, runs
from catalogsync.maintainer.chunks import (
    IndexSequence,
    Prepared,
    Reject,
    plan,
    prepare,
    split_chunks,
)
from catalogsync.maintainer.deletes import Feed, delete_missing, withheld_because
from catalogsync.maintainer.records import COLUMNS
from catalogsync.maintainer.schema import has_sync_columns, migrate, table_exists

log = logging.getLogger(__name__)

STAGE = "maintainer"
ID, STATUS = COLUMNS.index("id"), COLUMNS.index("status")


def _column(field: str) -> str:
    """The runs table's column for a status field (``chunksDone`` -> ``chunks_done``)."""
    return "".join(f"_{c.lower()}" if c.isupper() else c for c in field)


@dataclass(frozen=True)
class Options:
    table: str
    run_id: str
    object_key: str
    object_size: int | None = None
    object_identity: str | None = None
    """The object's content identity (``ObjectInfo.identity``); ``None`` when unknown."""
    chunk_size: int = 5000
    dry_run: bool = False
    delete_missing: bool = False
    max_delete_fraction: float = 0.05
    max_invalid_fraction: float = 0.01
    connections: int = 2
    catalog: str = "medipim-au"
    mode: str = "Full"
    """``Incremental`` when the object holds only what changed since a watermark: it never
    soft-deletes what it does not contain."""
    fetched_at: datetime | None = None
    """When the object's stream was requested from MediPim (its metadata ``fetchedAt``)."""
    changes_keep_days: float = 30.0
    changes_keep_runs: int = 0


class TooManyInvalid(InvalidDataError):
    reason = "TooManyInvalidLines"

    def __init__(self, message: str, rejects: list[Reject]) -> None:
        super().__init__(message)
        self.rejects = rejects


@dataclass
class Progress:
    counts: dict[str, int] = field(default_factory=lambda: dict.fromkeys(runs.COUNTS, 0))
    chunks_done: int = 0
    deleted: int = 0
    total: int | None = None
    last_index: int | None = None
    timings: dict[str, float] = field(
        default_factory=lambda: dict.fromkeys(("scan", "probe", "map", "write"), 0.0)
    )

    def status_counts(self) -> MaintainerCounts:
        counts = self.counts
        return {
            "total": self.total if self.total is not None else counts["processed"],
            "processed": counts["processed"],
            "inserted": counts["inserted"],
            "updated": counts["updated"],
            "skipped": counts["skipped"],
            "deleted": self.deleted,
            "invalid": counts["invalid"],
            "chunksDone": self.chunks_done,
        }

    def snapshot(self) -> Snapshot:
        counts = self.status_counts()
        return Snapshot(
            stage=STAGE, done=counts["processed"], total=self.total, unit="products", counts=counts
        )


class NullReporter:
    async def update(self, snapshot: Snapshot) -> None:
        return None

    async def finish(self, snapshot: Snapshot, summary: Mapping[str, Any]) -> None:
        return None


class Run:
    def __init__(
        self,
        dsn: str,
        source: AsyncIterator[bytes],
        options: Options,
        reporter: Reporter | None = None,
    ) -> None:
        self.dsn = dsn
        self.source = source
        self.options = options
        self.reporter: Reporter = reporter or NullReporter()
        self.tables = Tables.for_table(options.table)
        self.progress = Progress()
        self.sequence = IndexSequence()
        """Whether the object is a whole catalog: deletions depend on it."""
        self.seen: set[str] = set()
        self.pending: dict[int, asyncio.Event] = {}
        self.table_exists = True
        self.upgraded = True
        """Whether the table has the project's columns; only a dry run can find it without."""
        self.chunk_size = options.chunk_size
        self.resumed = False
        self.feed = False
        """Whether this run writes the change feed (a dry run only where its table exists)."""
        self.changes = 0
        self.stopped = False
        """Whether a stop request ended the run at a chunk boundary before the catalog's end."""
        self.slots = asyncio.Semaphore(1)

    async def _connect(self, role: str) -> asyncpg.Connection:
        return await connect(self.dsn, f"catalogsync-maintainer {role}")

    async def execute(self) -> MaintainerSummary:
        started = time.monotonic()
        control = await self._connect(f"{self.options.run_id} control")
        try:
            await runs.acquire_table_lock(control, self.tables)
            state = await self._begin(control)
            if state.status == "succeeded":
                log.info("run %s already succeeded; nothing to do", self.options.run_id)
                return self._stored_summary(state.summary)
            try:
                await self._apply_all(state.committed)
                if self.stopped:
                    await self._interrupted(control)
                complete = self._complete()
                self._check_invalid(self.progress.counts["processed"], [])
                await self._finish(control, complete, started)
            except InvalidDataError as exc:
                if not self.options.dry_run:
                    await self._record_failure(control, exc)
                raise
        except BaseException:
            # The counts so far still reach the status (and a progress bar is closed).
            with contextlib.suppress(Exception):
                await self.reporter.finish(self.progress.snapshot(), self.summary(False))
            raise
        finally:
            await control.close()
        summary = self.summary(complete)
        await self.reporter.finish(self.progress.snapshot(), summary)
        return summary

    async def _begin(self, control: asyncpg.Connection) -> runs.RunState:
        """Migrate and open (or resume) the run row; a dry run only looks at the table."""
        opts = self.options
        if opts.dry_run:
            self.table_exists = await table_exists(control, self.tables)
            self.upgraded = self.table_exists and await has_sync_columns(control, self.tables)
            self.feed = self.upgraded and await feed.feed_exists(control, self.tables)
            if self.feed:
                await feed.forget_dry_run(control, self.tables, opts.run_id)
            else:
                log.info(
                    "dry run: %s has no change feed yet (a real run creates it); counting only",
                    self.tables.qualified,
                )
            return runs.RunState(chunk_size=opts.chunk_size)
        await migrate(control, self.tables)
        self.feed = True
        state = await runs.begin_run(
            control,
            self.tables,
            opts.run_id,
            object_key=opts.object_key,
            object_size=opts.object_size,
            object_identity=opts.object_identity,
            chunk_size=opts.chunk_size,
        )
        self.progress.counts.update(state.counts)
        self.progress.chunks_done = len(state.committed)
        self.chunk_size = state.chunk_size
        self.resumed = state.resumed
        return state

    async def _finish(self, control: asyncpg.Connection, complete: bool, started: float) -> None:
        """Soft-delete what the catalog lost and close the run row, in one transaction."""
        opts = self.options
        withheld = withheld_because(
            self.sequence.incomplete_because(), self.progress.counts["invalid"]
        )
        if opts.mode == "Incremental":
            withheld = "the catalog is incremental: it holds only the products that changed"
        async with control.transaction():
            if opts.delete_missing and withheld:
                log.warning("not deleting missing products: %s", withheld)
            elif opts.delete_missing and self.table_exists:
                self.progress.deleted = await delete_missing(
                    control,
                    self.tables,
                    self.seen,
                    max_fraction=opts.max_delete_fraction,
                    dry_run=opts.dry_run,
                    now=datetime.now(UTC),
                    upgraded=self.upgraded,
                    feed=Feed(opts.run_id) if self.feed else None,
                    run_id=opts.run_id,
                )
            if self.feed:
                await feed.prune(
                    control,
                    self.tables,
                    keep_days=opts.changes_keep_days,
                    keep_runs=opts.changes_keep_runs,
                )
                self.changes = await feed.count(control, self.tables, opts.run_id, opts.dry_run)
            self.progress.timings["total"] = time.monotonic() - started
            if not opts.dry_run:
                await runs.record_source(
                    control,
                    self.tables,
                    opts.run_id,
                    catalog=opts.catalog,
                    mode=opts.mode,
                    fetched_at=opts.fetched_at,
                )
                await runs.finish_run(
                    control,
                    self.tables,
                    opts.run_id,
                    status="succeeded",
                    total=self._total(),
                    deleted=self.progress.deleted,
                    complete=complete,
                    timings=self.progress.timings,
                )
        if not opts.dry_run:
            counts = self.progress.counts
            written = counts["inserted"] + counts["updated"] + self.progress.deleted
            await loader.analyze_if_grown(control, self.tables, written)

    async def _interrupted(self, control: asyncpg.Connection) -> None:
        """Every chunk handed out has committed: record that and raise with the counts so far."""
        if not self.options.dry_run:
            await runs.finish_run(
                control,
                self.tables,
                self.options.run_id,
                status="interrupted",
                message=f"stopped by {stopping.requested()} at a chunk boundary",
                total=self._total(),
                timings=self.progress.timings,
            )
        chunks = self.progress.chunks_done
        log.warning("run %s interrupted after %d committed chunks", self.options.run_id, chunks)
        raise stopping.Interrupted(
            f"stopped by {stopping.requested()} after {chunks} committed chunks "
            f"({self.progress.counts['processed']} products); the next attempt resumes there",
            summary=self.summary(False),
        )

    async def _record_failure(self, control: asyncpg.Connection, exc: InvalidDataError) -> None:
        with contextlib.suppress(asyncpg.PostgresError, OSError):
            async with control.transaction():
                if isinstance(exc, TooManyInvalid):
                    await runs.record_rejects(
                        control, self.tables, self.options.run_id, exc.rejects
                    )
                await runs.finish_run(
                    control,
                    self.tables,
                    self.options.run_id,
                    status="failed",
                    message=str(exc),
                    total=self._total(),
                    timings=self.progress.timings,
                )

    def _complete(self) -> bool:
        return self.sequence.incomplete_because() is None

    def _total(self) -> int:
        total = self.progress.total
        return total if total is not None else self.progress.counts["processed"]

    def summary(self, complete: bool) -> MaintainerSummary:
        tally = self.progress.counts
        summary = self._summary(
            self.progress.status_counts(),
            object_key=self.options.object_key,
            dry_run=self.options.dry_run,
            resumed=self.resumed,
            complete=complete,
            duplicates=tally["duplicates"],
            undeleted=tally["undeleted"],
            nul_replaced=tally["nul_replaced"],
        )
        summary["mode"] = self.options.mode
        summary["changes"] = self.changes
        summary["changesFeed"] = self.tables.changes if self.feed else None
        summary["seconds"] = round(self.progress.timings.get("total", 0.0), 3)
        summary["timings"] = {k: round(v, 3) for k, v in self.progress.timings.items()}
        return summary

    def _stored_summary(self, row: Mapping[str, Any]) -> MaintainerSummary:
        """The summary of a run that had already succeeded, from its row in the runs table."""
        columns = {name: row[_column(name)] for name in MAINTAINER_COUNTS}
        return self._summary(
            cast(MaintainerCounts, columns),
            object_key=row["object"],
            dry_run=False,
            resumed=True,
            complete=row["complete"],
            duplicates=row["duplicates"],
            undeleted=row["undeleted"],
            nul_replaced=row["nul_replaced"],
        )

    def _summary(
        self,
        counts: MaintainerCounts,
        *,
        object_key: str,
        dry_run: bool,
        resumed: bool,
        complete: bool,
        duplicates: int,
        undeleted: int,
        nul_replaced: int,
    ) -> MaintainerSummary:
        summary = {
            "runId": self.options.run_id,
            "table": self.tables.qualified,
            "object": object_key,
            "dryRun": dry_run,
            "resumed": resumed,
            "complete": complete,
            **counts,
            "duplicates": duplicates,
            "undeleted": undeleted,
            "nulReplaced": nul_replaced,
        }
        # Every key but the optional timings; mypy does not follow the unpacked counts.
        return cast(MaintainerSummary, summary)

    async def _apply_all(self, committed: set[int]) -> None:
        workers = 1 if self.options.dry_run else max(1, self.options.connections)
        writes = not self.options.dry_run or self.feed
        # At most one scanned chunk waits while each connection applies one: memory is a few
        # chunks, whatever the size of the catalog.
        self.slots = asyncio.Semaphore(workers + 1)
        queue: asyncio.Queue[Prepared | None] = asyncio.Queue()
        connections = [await self._connect(f"{self.options.run_id} {i}") for i in range(workers)]
        try:
            if writes:  # a dry run without a feed writes nothing: no codec, no stage
                for conn in connections:
                    await loader.prepare_connection(conn, self.tables)
            tasks = [asyncio.create_task(self._produce(queue, committed, workers))]
            tasks += [asyncio.create_task(self._work(conn, queue)) for conn in connections]
            try:
                done, _ = await asyncio.wait(tasks, return_when=asyncio.FIRST_EXCEPTION)
                for task in done:
                    task.result()
            finally:
                for task in tasks:
                    task.cancel()
                await asyncio.gather(*tasks, return_exceptions=True)
        finally:
            for conn in connections:
                with contextlib.suppress(Exception):
                    await asyncio.wait_for(conn.close(), 10)

    async def _produce(
        self, queue: asyncio.Queue[Prepared | None], committed: set[int], workers: int
    ) -> None:
        chunks = split_chunks(self.source, self.chunk_size)
        while True:
            await self.slots.acquire()  # before reading: a chunk in hand is a chunk in memory
            try:
                raw = await stopping.unless_stopped(anext(chunks, None))
            except stopping.StopRequested:  # a chunk boundary: what was handed out still commits
                self.stopped = True
                self.slots.release()
                break
            if raw is None:
                self.slots.release()
                break
            began = time.monotonic()
            prepared = await asyncio.to_thread(prepare, raw)
            del raw
            self.progress.timings["scan"] += time.monotonic() - began
            if prepared.total is not None:
                self.progress.total = prepared.total
            if prepared.last_index is not None:
                self.progress.last_index = max(self.progress.last_index or 0, prepared.last_index)
            for position in prepared.positions:
                self.sequence.feed(*position)
            ids = prepared.records.keys()
            if prepared.number in committed:
                self.seen.update(ids)
                self.slots.release()
                continue
            prepared.earlier = {product_id for product_id in ids if product_id in self.seen}
            self.seen.update(ids)
            self.pending[prepared.number] = asyncio.Event()
            queue.put_nowait(prepared)
            del prepared
        for _ in range(workers):
            queue.put_nowait(None)

    async def _work(self, conn: asyncpg.Connection, queue: asyncio.Queue[Prepared | None]) -> None:
        while (prepared := await queue.get()) is not None:
            try:
                if prepared.earlier:
                    for number, event in list(self.pending.items()):
                        if number < prepared.number:
                            await event.wait()
                await self._apply(conn, prepared)
            finally:
                self.pending.pop(prepared.number).set()
                self.slots.release()
            del prepared

    def _check_invalid(self, reach: int, rejects: list[Reject], extra: int = 0) -> None:
        invalid = self.progress.counts["invalid"] + extra
        denominator = max(self.progress.total or 0, reach)
        limit = self.options.max_invalid_fraction
        if invalid and invalid > limit * denominator:
            raise TooManyInvalid(
                f"{invalid} invalid lines of {denominator} ({invalid / denominator:.2%}) exceed "
                f"maxInvalidFraction {limit:.2%}; the lines are in "
                f"{self.tables.bookkeeping('catalogsync_rejects')} for run {self.options.run_id}",
                rejects,
            )

    async def _apply(self, conn: asyncpg.Connection, prepared: Prepared) -> None:
        began = time.monotonic()
        timings = self.progress.timings
        ids = list(prepared.records)
        stored = (
            await loader.probe(conn, self.tables, ids, upgraded=self.upgraded)
            if self.table_exists and ids
            else {}
        )
        probed = time.monotonic()
        timings["probe"] += probed - began
        changes = await asyncio.to_thread(plan, prepared, stored)
        mapped = time.monotonic()
        timings["map"] += mapped - probed
        counts = changes.counts
        self._check_invalid(prepared.last_line, changes.rejects, counts["invalid"])
        if counts["nul_replaced"]:
            log.warning(
                "lines %d-%d: %d product(s) had U+0000 in a string, which PostgreSQL cannot "
                "store; it was stored as U+FFFD (nulReplaced in the summary)",
                prepared.first_line,
                prepared.last_line,
                counts["nul_replaced"],
            )
        dry_run, run_id = self.options.dry_run, self.options.run_id
        if self.feed and dry_run:
            async with conn.transaction():
                await self._record_changes(conn, changes.new_rows, changes.changed_rows)
        elif not dry_run:
            now = datetime.now(UTC)
            async with conn.transaction():
                await self._record_changes(conn, changes.new_rows, changes.changed_rows)
                await loader.insert_new(conn, self.tables, changes.new_rows, now)
                if changes.changed_rows:
                    await loader.apply_staged(conn, self.tables, now)
                await runs.record_rejects(conn, self.tables, run_id, changes.rejects)
                await runs.record_chunk(
                    conn,
                    self.tables,
                    self.options.run_id,
                    chunk=prepared.number,
                    first_line=prepared.first_line,
                    last_line=prepared.last_line,
                    counts=counts,
                    seconds=time.monotonic() - began,
                )
        timings["write"] += time.monotonic() - mapped
        for name, value in counts.items():
            self.progress.counts[name] += value
        self.progress.chunks_done += 1
        await self.reporter.update(self.progress.snapshot())

    async def _record_changes(
        self, conn: asyncpg.Connection, new_rows: list[Any], changed_rows: list[Any]
    ) -> None:
        """The chunk's feed rows, computed against the table before it changes; leaves the
        changed rows in the stage for the update. A dry run runs exactly this, then stops."""
        opts = self.options
        await feed.record_inserted(
            conn, self.tables, opts.run_id, opts.dry_run, [(r[ID], r[STATUS]) for r in new_rows]
        )
        if changed_rows:
            await loader.stage_changed(conn, changed_rows)
            await feed.record_staged(conn, self.tables, opts.run_id, opts.dry_run, loader.STAGE)


async def maintain(
    dsn: str,
    source: AsyncIterator[bytes],
    options: Options,
    reporter: Reporter | None = None,
) -> dict[str, Any]:
    """Apply the catalog in ``source`` to ``options.table``; returns the run's summary."""
    summary = await Run(dsn, source, options, reporter).execute()
    return cast(dict[str, Any], summary)
