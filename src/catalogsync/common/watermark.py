"""The watermark of incremental runs: when the last successful run of a catalog into a table
requested its stream. The maintainer writes it on its run row (``catalogsync_runs.fetched_at``);
the fetcher of an Incremental run reads it here, so the two stages share the query, not code of
each other's.
"""

from __future__ import annotations

from datetime import datetime

import asyncpg

from catalogsync.common.tables import Tables


async def watermark(conn: asyncpg.Connection, tables: Tables, catalog: str) -> datetime | None:
    """When the stream of the last successful, complete run of ``catalog`` into the table was
    requested (Full or Incremental), or None when there is no such run (nor a runs table)."""
    if await conn.fetchval("SELECT to_regclass($1)", tables.runs) is None:
        return None
    has_column = await conn.fetchval(
        """SELECT true FROM pg_attribute
           WHERE attrelid = $1::regclass AND attname = 'fetched_at' AND NOT attisdropped""",
        tables.runs,
    )
    if not has_column:
        return None
    found: datetime | None = await conn.fetchval(
        f"""SELECT max(fetched_at) FROM {tables.runs}
            WHERE table_name = $1 AND catalog = $2 AND status = 'succeeded'
              AND complete IS NOT FALSE AND fetched_at IS NOT NULL""",
        tables.qualified,
        catalog,
    )
    return found
