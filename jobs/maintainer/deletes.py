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
from catalogsync.common.tables import Tables
from catalogsync.maintainer import changes

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


WINDOW_DAYS = 7
"""How far back the deletion window reaches: a week of nightly runs."""


def check_window(missing: int, live: int, baseline: int | None, max_fraction: float) -> None:
    """Refuse when, after this run, fewer than ``1 - max_fraction`` of ``baseline`` would be left.

    ``baseline`` is the largest live count the recent runs left (see :func:`window_baseline`):
    two runs of 4.9 % each would otherwise delete 9.6 % under a 5 % limit.
    """
    left = live - missing
    if missing and baseline and baseline - left > max_fraction * baseline:
        raise TooManyDeletes(
            f"refusing to soft-delete {missing} of {live} live products: {left} of the {baseline} "
            f"that a run of the last {WINDOW_DAYS} days left would remain "
            f"({(baseline - left) / baseline:.1%} gone > maxDeleteFraction {max_fraction:.1%} "
            "over the window); check the fetched object, or raise "
            "spec.maintainer.maxDeleteFraction (MAINTAINER_MAX_DELETE_FRACTION) for one run if "
            "this is real (later runs then measure from it)"
        )


async def window_baseline(
    conn: asyncpg.Connection, tables: Tables, max_fraction: float
) -> int | None:
    """The largest live count that a succeeded deleting run of the last ``WINDOW_DAYS`` left.

    Runs before the latest one that was allowed a larger fraction do not count: that run's
    deletion was deliberate, and what it left is the new measure. A dry run may meet a runs table
    that has not had migration 007 yet: no window then.
    """
    recorded = await conn.fetchval(
        """SELECT true FROM pg_attribute
           WHERE attrelid = to_regclass($1) AND attname = 'live_after' AND NOT attisdropped""",
        tables.runs,
    )
    if not recorded:
        return None
    found: int | None = await conn.fetchval(
        f"""SELECT max(r.live_after) FROM {tables.runs} r
            WHERE r.table_name = $1 AND r.status = 'succeeded' AND r.live_after IS NOT NULL
              AND r.finished_at > now() - make_interval(days => $2)
              AND r.finished_at >= coalesce((
                  SELECT max(o.finished_at) FROM {tables.runs} o
                  WHERE o.table_name = $1 AND o.status = 'succeeded'
                    AND o.max_delete_fraction > $3), '-infinity')""",
        tables.qualified,
        WINDOW_DAYS,
        max_fraction,
    )
    return found


async def record_live(
    conn: asyncpg.Connection, tables: Tables, run_id: str, live_after: int, max_fraction: float
) -> None:
    """What this run left, for the window of the runs after it; call in the run's last step."""
    await conn.execute(
        f"""UPDATE {tables.runs} SET live_after = $3, max_delete_fraction = $4
            WHERE table_name = $1 AND run_id = $2""",
        tables.qualified,
        run_id,
        live_after,
        max_fraction,
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
    run_id: str | None = None,
) -> int:
    """Soft-delete the live products not in ``seen``; call inside a transaction.

    Returns how many were (or, in a dry run, would be) deleted. A table not ``upgraded`` yet
    (only a dry run sees one) has no ``deleted_at``: all its rows are live. Both limits apply:
    ``max_fraction`` of the live products, and of the window's baseline (:func:`check_window`);
    a run that deletes records what it left on the row of ``run_id``.
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
    if upgraded:
        check_window(missing, live, await window_baseline(conn, tables, max_fraction), max_fraction)
    if run_id is not None and not dry_run:
        await record_live(conn, tables, run_id, live - missing, max_fraction)
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
