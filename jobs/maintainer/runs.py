"""The run's record in the database: the table lock, the run row, and the checkpoint.

The checkpoint is the set of committed chunks: each chunk's transaction inserts its row in
``catalogsync_chunks`` (with its counts) and adds its counts to the run row, so a chunk is either
wholly applied and recorded or not at all. Chunks are numbered from the line numbers
(chunk ``k`` holds lines ``k*size+1 .. (k+1)*size``), which is why a resumed run keeps the chunk
size it started with. ``checkpoint_line`` on the run row is the end of the longest prefix of
committed chunks, kept for people reading the table.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import asyncpg
import orjson

from catalogsync.common.errors import TransientError
from catalogsync.common.summaries import MAINTAINER_TALLY
from catalogsync.common.tables import Tables
from catalogsync.maintainer.schema import LOCK_CLASS

log = logging.getLogger(__name__)

COUNTS = MAINTAINER_TALLY
"""The counters of the runs table, one column each (what a resumed run goes on counting)."""


class TableLocked(TransientError):
    reason = "TableLocked"


async def acquire_table_lock(conn: asyncpg.Connection, tables: Tables) -> None:
    """Hold the table's session advisory lock until ``conn`` closes, or fail at once.

    A second maintainer on the same table is a stale pod of an earlier attempt or a misconfigured
    second run; failing as *transient* lets the Job's back-off retry after the holder is gone.
    """
    got = await conn.fetchval(
        "SELECT pg_try_advisory_lock($1, hashtext($2))", LOCK_CLASS, tables.qualified
    )
    if got:
        return
    holder = await conn.fetchrow(
        """SELECT a.pid, a.application_name, a.client_addr::text AS addr, a.backend_start
           FROM pg_locks l JOIN pg_stat_activity a ON a.pid = l.pid
           WHERE l.locktype = 'advisory' AND l.objsubid = 2 AND l.granted
             AND l.classid = ($1::bigint & 4294967295)::oid
             AND l.objid = (hashtext($2)::bigint & 4294967295)::oid
           LIMIT 1""",
        LOCK_CLASS,
        tables.qualified,
    )
    who = "another session"
    if holder is not None:
        since = f"{holder['backend_start']:%Y-%m-%d %H:%M:%S}"
        who = (
            f"'{holder['application_name'] or 'unknown'}' (backend pid {holder['pid']}, "
            f"from {holder['addr'] or 'local'}, connected {since})"
        )
    raise TableLocked(
        f"another maintainer is writing {tables.qualified}: {who} holds its lock; this attempt "
        "exits and the Job retries later (stop the other run, or wait for it, if this persists)"
    )


@dataclass
class RunState:
    """What the database remembers of this run when it starts (or resumes)."""

    chunk_size: int
    status: str = "running"
    resumed: bool = False
    committed: set[int] = field(default_factory=set)
    counts: dict[str, int] = field(default_factory=dict)
    summary: dict[str, Any] = field(default_factory=dict)


async def begin_run(
    conn: asyncpg.Connection,
    tables: Tables,
    run_id: str,
    *,
    object_key: str,
    object_size: int | None,
    chunk_size: int,
    object_identity: str | None = None,
) -> RunState:
    """Create the run row, or pick up the one an interrupted attempt left on the same object."""
    async with conn.transaction():
        row = await conn.fetchrow(
            f"SELECT * FROM {tables.runs} WHERE table_name = $1 AND run_id = $2 FOR UPDATE",
            tables.qualified,
            run_id,
        )
        if row is not None and _same_object(row, object_key, object_size, object_identity):
            if row["status"] == "succeeded":
                return RunState(chunk_size=row["chunk_size"], status="succeeded", summary=dict(row))
            await conn.execute(
                f"""UPDATE {tables.runs} SET attempts = attempts + 1, status = 'running',
                        message = NULL, updated_at = now()
                    WHERE table_name = $1 AND run_id = $2""",
                tables.qualified,
                run_id,
            )
            chunks = await conn.fetch(
                f"SELECT chunk FROM {tables.chunks} WHERE table_name = $1 AND run_id = $2",
                tables.qualified,
                run_id,
            )
            state = RunState(
                chunk_size=row["chunk_size"],
                resumed=True,
                committed={r["chunk"] for r in chunks},
                counts={name: row[name] for name in COUNTS},
            )
            log.info(
                "resuming run %s: %d chunks already committed",
                run_id,
                len(state.committed),
                extra={"chunksDone": len(state.committed)},
            )
            return state
        if row is not None:
            log.warning(
                "run %s was %s on %s (%s bytes, %s); starting over on %s (%s bytes, %s)",
                run_id,
                "finished" if row["status"] == "succeeded" else "started",
                row["object"],
                row["object_size"],
                row["object_identity"] or "identity unknown",
                object_key,
                object_size,
                object_identity or "identity unknown",
            )
            await conn.execute(
                f"DELETE FROM {tables.runs} WHERE table_name = $1 AND run_id = $2",
                tables.qualified,
                run_id,
            )
        await conn.execute(
            f"""INSERT INTO {tables.runs}
                    (table_name, run_id, object, object_size, chunk_size, object_identity)
                VALUES ($1, $2, $3, $4, $5, $6)""",
            tables.qualified,
            run_id,
            object_key,
            object_size,
            chunk_size,
            object_identity,
        )
    return RunState(chunk_size=chunk_size, counts=dict.fromkeys(COUNTS, 0))


def _same_object(row: asyncpg.Record, key: str, size: int | None, identity: str | None) -> bool:
    """Whether the run row was made for this object: same key, size and identity.

    An object of known identity matches only a row of the same identity; a row that recorded
    none (written before the identity was kept) cannot vouch for its object, so the run starts
    over, which costs time but never mixes two catalogs. Only an object whose identity is unknown
    (a pipe, storage without metadata or ETag) falls back to key and size.
    """
    if row["object"] != key:
        return False
    if size and row["object_size"] and size != row["object_size"]:
        return False
    return identity is None or row["object_identity"] == identity


async def record_chunk(
    conn: asyncpg.Connection,
    tables: Tables,
    run_id: str,
    *,
    chunk: int,
    first_line: int,
    last_line: int,
    counts: dict[str, int],
    seconds: float,
) -> None:
    """The checkpoint: call inside the chunk's transaction."""
    names = ", ".join(COUNTS)
    values = ", ".join(f"${n}" for n in range(6, 6 + len(COUNTS)))
    await conn.execute(
        f"""INSERT INTO {tables.chunks} (table_name, run_id, chunk, first_line, last_line,
                {names}, seconds)
            VALUES ($1, $2, $3, $4, $5, {values}, ${6 + len(COUNTS)})""",
        tables.qualified,
        run_id,
        chunk,
        first_line,
        last_line,
        *(counts[name] for name in COUNTS),
        seconds,
    )
    additions = ", ".join(f"{name} = {name} + ${n}" for n, name in enumerate(COUNTS, start=3))
    await conn.execute(
        f"""UPDATE {tables.runs} SET {additions}, chunks_done = chunks_done + 1, updated_at = now()
            WHERE table_name = $1 AND run_id = $2""",
        tables.qualified,
        run_id,
        *(counts[name] for name in COUNTS),
    )


async def record_rejects(
    conn: asyncpg.Connection, tables: Tables, run_id: str, rejects: list[tuple[int, str, str]]
) -> None:
    if rejects:
        await conn.executemany(
            f"""INSERT INTO {tables.rejects} (table_name, run_id, line, error, raw)
                VALUES ($1, $2, $3, $4, $5) ON CONFLICT DO NOTHING""",
            [(tables.qualified, run_id, *reject) for reject in rejects],
        )


async def finish_run(
    conn: asyncpg.Connection,
    tables: Tables,
    run_id: str,
    *,
    status: str,
    message: str | None = None,
    total: int | None = None,
    deleted: int = 0,
    complete: bool | None = None,
    timings: dict[str, float] | None = None,
) -> None:
    await conn.execute(
        f"""UPDATE {tables.runs} AS r SET status = $3, message = $4, total = coalesce($5, total),
                deleted = $6, complete = $7, timings = $8::jsonb, finished_at = now(),
                updated_at = now(),
                checkpoint_line = coalesce((
                    SELECT max(c.last_line) FROM {tables.chunks} c
                    WHERE c.table_name = r.table_name AND c.run_id = r.run_id
                      AND c.chunk < coalesce((
                          SELECT min(g.n) FROM generate_series(0, r.chunks_done) AS g(n)
                          WHERE NOT EXISTS (
                              SELECT 1 FROM {tables.chunks} c2
                              WHERE c2.table_name = r.table_name AND c2.run_id = r.run_id
                                AND c2.chunk = g.n)), 0)), 0)
            WHERE table_name = $1 AND run_id = $2""",
        tables.qualified,
        run_id,
        status,
        message,
        total,
        deleted,
        complete,
        _json(timings),
    )


def _json(value: Any) -> str | None:
    if value is None:
        return None
    return orjson.dumps(value).decode()


async def record_source(
    conn: asyncpg.Connection,
    tables: Tables,
    run_id: str,
    *,
    catalog: str,
    mode: str,
    fetched_at: datetime | None,
) -> None:
    """Which catalog the run applied, how it was fetched and when its stream was requested:
    what the next Incremental run of the catalog reads as its watermark."""
    await conn.execute(
        f"""UPDATE {tables.runs} SET catalog = $3, mode = $4, fetched_at = $5
            WHERE table_name = $1 AND run_id = $2""",
        tables.qualified,
        run_id,
        catalog,
        mode,
        fetched_at,
    )
