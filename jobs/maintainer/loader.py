"""Writing one chunk's differences: probe, then COPY only what is new or changed.

Unchanged products are filtered out *before* any write: ``INSERT … ON CONFLICT DO UPDATE … WHERE``
would still lock and WAL-log every row it skips (the whole table on each re-sync). So a chunk
first reads the stored ``(id, content_hash)`` of its ids, then

* new products are COPYed straight into the table (the table lock guarantees nobody else adds
  them meanwhile, so no conflict handling is needed),
* changed ones are COPYed into a temporary stage, ``ANALYZE``d (a stage without statistics makes
  the planner scan the whole table per chunk) and applied with one ``UPDATE … FROM`` that rewrites
  every mapped column,
* unchanged ones are not touched at all: same tuple, same ``xmin``, no WAL.
"""

from __future__ import annotations

import contextlib
from collections.abc import Sequence
from datetime import datetime
from typing import Any

import asyncpg

from catalogsync.common.tables import Tables, quote_ident
from catalogsync.maintainer.records import COLUMNS

STAGE = "catalogsync_stage"
STAMPS = ("first_seen_at", "last_seen_at", "updated_at")
Stored = dict[str, tuple[bytes | None, bool]]
"""id -> (content hash, deleted) of the products a chunk already has in the table."""


def _columns(names: Sequence[str]) -> str:
    return ", ".join(quote_ident(name) if name.islower() else f'"{name}"' for name in names)


def encode_jsonb(value: bytes | memoryview | str) -> bytes:
    """jsonb's binary wire format: a version byte, then the JSON text, passed through as is."""
    if isinstance(value, str):
        value = value.encode()
    return b"\x01" + value


def decode_jsonb(data: bytes) -> str:
    return data[1:].decode()


async def prepare_connection(conn: asyncpg.Connection, tables: Tables) -> None:
    """Per-connection setup: raw JSON bytes for jsonb, lz4 for TOAST, the temporary stage.

    The binary codec sends each document's bytes as received: no ``str`` copy of a 5,000-line
    chunk (twice its size in memory when a single character is outside Latin-1).
    """
    await conn.set_type_codec(
        "jsonb",
        schema="pg_catalog",
        encoder=encode_jsonb,
        decoder=decode_jsonb,
        format="binary",
    )
    with contextlib.suppress(asyncpg.PostgresError):
        await conn.execute("SET default_toast_compression = 'lz4'")
    await conn.execute(
        f"CREATE TEMP TABLE IF NOT EXISTS {STAGE} ON COMMIT DELETE ROWS AS "
        f"SELECT {_columns(COLUMNS)} FROM {tables.products} WITH NO DATA"
    )


async def analyze_if_grown(conn: asyncpg.Connection, tables: Tables, written: int) -> None:
    """Refresh the table's statistics after a run that wrote a large share of it.

    Autovacuum would get there too, but only after the next run had planned its probes on the
    statistics of an empty table.
    """
    estimate = await conn.fetchval(
        "SELECT greatest(reltuples, 0)::bigint FROM pg_class WHERE oid = $1::regclass",
        tables.products,
    )
    if written and written >= 0.1 * max(int(estimate or 0), 1):
        await conn.execute(f"ANALYZE {tables.products}")


async def probe(
    conn: asyncpg.Connection, tables: Tables, ids: list[str], *, upgraded: bool = True
) -> Stored:
    """The stored state of ``ids``; in a table not ``upgraded`` yet every row counts as changed.

    That is what the first real run does with such rows: it rewrites each of them once.
    """
    state = (
        "content_hash, deleted_at IS NOT NULL AS deleted"
        if upgraded
        else "NULL::bytea AS content_hash, false AS deleted"
    )
    rows = await conn.fetch(
        f"SELECT id, {state} FROM {tables.products} WHERE id = ANY($1::text[])", ids
    )
    return {row["id"]: (row["content_hash"], row["deleted"]) for row in rows}


async def insert_new(
    conn: asyncpg.Connection, tables: Tables, rows: list[tuple[Any, ...]], now: datetime
) -> None:
    if rows:
        stamps = (now, now, now)
        await conn.copy_records_to_table(
            tables.name,
            schema_name=tables.schema,
            columns=[*COLUMNS, *STAMPS],
            records=[row + stamps for row in rows],
        )


async def update_changed(
    conn: asyncpg.Connection, tables: Tables, rows: list[tuple[Any, ...]], now: datetime
) -> None:
    """Rewrite every mapped column of ``rows`` (and undelete them); call inside a transaction."""
    if rows:
        await stage_changed(conn, rows)
        await apply_staged(conn, tables, now)


async def stage_changed(conn: asyncpg.Connection, rows: list[tuple[Any, ...]]) -> None:
    """COPY ``rows`` into the connection's temporary stage (emptied at commit)."""
    await conn.copy_records_to_table(STAGE, columns=list(COLUMNS), records=rows)
    await conn.execute(f"ANALYZE {STAGE}")


async def apply_staged(conn: asyncpg.Connection, tables: Tables, now: datetime) -> None:
    """The one ``UPDATE … FROM`` that writes the staged rows into the table."""
    # The stage holds at most one chunk, so one index probe per staged row is the right plan,
    # whatever the (possibly missing) statistics of a freshly loaded table suggest.
    await conn.execute("SET LOCAL enable_hashjoin = off; SET LOCAL enable_mergejoin = off")
    assignments = ", ".join(f"{_columns([c])} = s.{_columns([c])}" for c in COLUMNS if c != "id")
    await conn.execute(
        f"""UPDATE {tables.products} AS t SET {assignments},
                updated_at = $1, last_seen_at = $1, first_seen_at = coalesce(t.first_seen_at, $1),
                deleted_at = NULL
            FROM pg_temp.{STAGE} AS s WHERE t.id = s.id""",
        now,
    )
