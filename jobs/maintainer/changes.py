"""The change feed: what each run did to the products table, one row per product.

Rows are written by the same transaction as the change they describe (a chunk's, or the final
soft-delete's), so the feed is exactly as durable as the table. A dry run computes its rows with
the same statements against the same table state and writes them marked ``dry_run``, so its feed
is the diff the next real run would apply.

Kinds: ``inserted`` (a new id; ``fields`` empty: everything is new), ``updated`` (the content
hash differs), ``status_changed`` (an update whose ``status`` differs; ``old_status`` and
``new_status`` say how), ``restored`` (a soft-deleted product came back), ``deleted`` (soft-deleted
by ``deleteMissing``). ``fields`` lists the top-level product fields whose values differ, with
``meta.embedUrl`` (re-signed on every download) left out.
"""

from __future__ import annotations

import asyncpg

from catalogsync.common.tables import Tables

_UPSERT = """ON CONFLICT (table_name, run_id, dry_run, product_id) DO UPDATE SET
        kind = CASE WHEN c.kind = 'inserted' THEN 'inserted' ELSE EXCLUDED.kind END,
        fields = ARRAY(SELECT DISTINCT f FROM unnest(c.fields || EXCLUDED.fields) AS f ORDER BY f),
        new_status = EXCLUDED.new_status, changed_at = EXCLUDED.changed_at"""
"""A product that occurs twice in one catalog is changed twice: one row keeps both changes."""


async def feed_exists(conn: asyncpg.Connection, tables: Tables) -> bool:
    """Whether the feed's table is there (a dry run on a never-migrated database has none)."""
    return await conn.fetchval("SELECT to_regclass($1)", tables.changes) is not None


async def record_inserted(
    conn: asyncpg.Connection,
    tables: Tables,
    run_id: str,
    dry_run: bool,
    products: list[tuple[str, str | None]],
) -> None:
    """Feed rows for new products, given as ``(id, status)``."""
    if not products:
        return
    await conn.execute(
        f"""INSERT INTO {tables.changes} AS c
                (table_name, run_id, dry_run, product_id, kind, new_status)
            SELECT $1, $2, $3, n.id, 'inserted', n.status
            FROM unnest($4::text[], $5::text[]) AS n(id, status)
            {_UPSERT}""",
        tables.qualified,
        run_id,
        dry_run,
        [product[0] for product in products],
        [product[1] for product in products],
    )


async def record_staged(
    conn: asyncpg.Connection, tables: Tables, run_id: str, dry_run: bool, stage: str
) -> None:
    """Feed rows for the changed products in the temporary ``stage``, compared with the table
    *before* the update: call after staging, before applying, inside the chunk's transaction."""
    await conn.execute(
        f"""INSERT INTO {tables.changes} AS c
                (table_name, run_id, dry_run, product_id, kind, fields, old_status, new_status)
            SELECT $1, $2, $3, s.id,
                   CASE WHEN t.deleted_at IS NOT NULL THEN 'restored'
                        WHEN t.status IS DISTINCT FROM s.status THEN 'status_changed'
                        ELSE 'updated' END,
                   ARRAY(
                       SELECT coalesce(n.key, o.key)
                       FROM jsonb_each(s.raw #- '{{meta,embedUrl}}') AS n
                       FULL JOIN jsonb_each(t.raw #- '{{meta,embedUrl}}') AS o ON o.key = n.key
                       WHERE n.value IS DISTINCT FROM o.value
                       ORDER BY 1),
                   t.status, s.status
            FROM pg_temp.{stage} AS s JOIN {tables.products} AS t ON t.id = s.id
            {_UPSERT}""",
        tables.qualified,
        run_id,
        dry_run,
    )


async def record_deleted(
    conn: asyncpg.Connection, tables: Tables, run_id: str, dry_run: bool, seen: str
) -> None:
    """Feed rows for the live products absent from the temporary ``seen`` table: call before
    soft-deleting them, in the same transaction."""
    await conn.execute(
        f"""INSERT INTO {tables.changes} AS c
                (table_name, run_id, dry_run, product_id, kind, old_status, new_status)
            SELECT $1, $2, $3, t.id, 'deleted', t.status, t.status
            FROM {tables.products} AS t
            WHERE t.deleted_at IS NULL
              AND NOT EXISTS (SELECT 1 FROM pg_temp.{seen} s WHERE s.id = t.id)
            {_UPSERT}""",
        tables.qualified,
        run_id,
        dry_run,
    )


async def forget_dry_run(conn: asyncpg.Connection, tables: Tables, run_id: str) -> None:
    """A dry run that runs again (a retried pod) starts its feed afresh."""
    await conn.execute(
        f"DELETE FROM {tables.changes} WHERE table_name = $1 AND run_id = $2 AND dry_run",
        tables.qualified,
        run_id,
    )


async def count(conn: asyncpg.Connection, tables: Tables, run_id: str, dry_run: bool) -> int:
    """How many feed rows the run has (a resumed run counts its earlier attempts' too)."""
    found = await conn.fetchval(
        f"""SELECT count(*) FROM {tables.changes}
            WHERE table_name = $1 AND run_id = $2 AND dry_run = $3""",
        tables.qualified,
        run_id,
        dry_run,
    )
    return int(found or 0)


async def prune(
    conn: asyncpg.Connection, tables: Tables, *, keep_days: float, keep_runs: int
) -> int:
    """Apply the retention: drop rows older than ``keep_days`` and, when ``keep_runs`` > 0,
    the rows of every run but the newest ``keep_runs`` (dry runs count as runs).

    Returns the number of rows dropped."""
    status = await conn.execute(
        f"""DELETE FROM {tables.changes} AS c
            WHERE c.table_name = $1
              AND (c.changed_at < now() - make_interval(secs => $2 * 86400)
                   OR ($3 > 0 AND (c.run_id, c.dry_run) NOT IN (
                       SELECT r.run_id, r.dry_run FROM {tables.changes} AS r
                       WHERE r.table_name = $1
                       GROUP BY r.run_id, r.dry_run
                       ORDER BY max(r.changed_at) DESC
                       LIMIT $3)))""",
        tables.qualified,
        float(keep_days),
        keep_runs,
    )
    return _count(status)


def _count(status: str) -> int:
    """Rows affected, from a command tag such as ``INSERT 0 12`` or ``DELETE 3``."""
    return int(status.rsplit(" ", 1)[-1])
