"""Soft-deleting the products a complete catalog no longer has, within a safety limit.

Only a run that read the whole catalog may delete: a truncated object would otherwise look like a
catalog that lost its tail. The limit exists because an empty or filtered feed (a wrong API key
scope, a changed filter) is far more likely than MediPim dropping 5 % of its products overnight.
Rows are never removed: ``deleted_at`` is set, and a product that comes back is undeleted.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime

import asyncpg

from catalogsync.common.errors import InvalidDataError
from catalogsync.maintainer import changes
from catalogsync.maintainer.schema import Tables

SEEN = "catalogsync_seen"


@dataclass(frozen=True)
class Feed:
    """Where the deletions are recorded in the change feed."""

    run_id: str


class TooManyDeletes(InvalidDataError):
    reason = "TooManyDeletes"


def withheld_because(incomplete: str | None, invalid: int) -> str:
    """Why this run must not delete anything, or ``""`` when it may.

    ``incomplete`` is why the object is not a whole catalog (see ``IndexSequence``). A product is
    missing only if the whole catalog was read and every line was understood: the product on an
    invalid line is in the catalog, but its id is unknown, so it would look gone.
    """
    if incomplete:
        return f"the catalog is incomplete: {incomplete}"
    if invalid:
        return (
            f"{invalid} line(s) were invalid and the products on them would look missing "
            "(they are in the rejects table)"
        )
    return ""


def check_fraction(missing: int, live: int, max_fraction: float) -> None:
    """Refuse when the products to delete exceed ``max_fraction`` of the live ones."""
    if live and missing > max_fraction * live:
        raise TooManyDeletes(
            f"refusing to soft-delete {missing} of {live} live products "
            f"({missing / live:.1%} > maxDeleteFraction {max_fraction:.1%}): the catalog may be "
            "incomplete or filtered; check the fetched object, or raise "
            "spec.maintainer.maxDeleteFraction (MAINTAINER_MAX_DELETE_FRACTION) if this is real"
        )


async def delete_missing(
    conn: asyncpg.Connection,
    tables: Tables,
    seen: Iterable[str],
    *,
    max_fraction: float,
    dry_run: bool,
    now: datetime,
    upgraded: bool = True,
    feed: Feed | None = None,
) -> int:
    """Soft-delete the live products not in ``seen``; call inside a transaction.

    Returns how many were (or, in a dry run, would be) deleted. A table not ``upgraded`` yet
    (only a dry run sees one) has no ``deleted_at``: all its rows are live.
    """
    is_live = "t.deleted_at IS NULL" if upgraded else "true"
    await conn.execute(f"CREATE TEMP TABLE {SEEN} (id text PRIMARY KEY) ON COMMIT DROP")
    await conn.copy_records_to_table(SEEN, records=((product_id,) for product_id in seen))
    await conn.execute(f"ANALYZE {SEEN}")
    counts = await conn.fetchrow(
        f"""SELECT count(*) AS live,
                   count(*) FILTER (WHERE NOT EXISTS (
                       SELECT 1 FROM pg_temp.{SEEN} s WHERE s.id = t.id)) AS missing
            FROM {tables.products} t WHERE {is_live}"""
    )
    assert counts is not None
    missing, live = int(counts["missing"]), int(counts["live"])
    check_fraction(missing, live, max_fraction)
    if missing and feed is not None:
        await changes.record_deleted(conn, tables, feed.run_id, dry_run, SEEN)
    if missing and not dry_run:
        await conn.execute(
            f"""UPDATE {tables.products} AS t SET deleted_at = $1, updated_at = $1
                WHERE t.deleted_at IS NULL
                  AND NOT EXISTS (SELECT 1 FROM pg_temp.{SEEN} s WHERE s.id = t.id)""",
            now,
        )
    return missing
