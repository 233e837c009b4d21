"""What an Incremental run asks MediPim for: every product updated since the watermark.

The watermark is the moment the stream of the last successful run of the same catalog into the
same table was requested (Full or Incremental), read from the maintainer's run table in the
database. It lives there, not in the cluster, so it survives pruned CatalogSyncs and a reinstalled
operator, and it only moves when a run has really been applied. The stream asks from
``watermark - overlap``: MediPim does not say whether ``updatedSince`` is inclusive, and clocks
drift; products fetched twice cost nothing, since the maintainer skips unchanged content.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from catalogsync.common.config import DatabaseSettings, FetcherSettings, RunSettings, load
from catalogsync.common.database import connect
from catalogsync.common.errors import PermanentError
from catalogsync.common.tables import Tables
from catalogsync.common.watermark import watermark

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Window:
    """How this run fetches: ``mode`` is what it does, which may differ from what was asked."""

    mode: str
    since: datetime | None = None
    """``updatedSince`` of the request (watermark - overlap); None for a Full fetch."""
    watermark: datetime | None = None
    why_full: str | None = None
    """Why an Incremental run fetches the full catalog instead."""


def incremental_filter(user_filter: Mapping[str, Any], since: int) -> dict[str, Any]:
    """The user's filter without its status clause, and-ed with ``updatedSince``.

    Every status is included so deactivations and replacements arrive. The status clause can be
    lifted only where it is a plain conjunct: a key of the filter object or of its top-level
    ``and``. Inside ``or``/``not`` it would change the meaning of the rest, so that is refused.
    """
    clauses: list[Any] = []
    for key, value in user_filter.items():
        if key == "status":
            continue
        if key == "and":
            items = value if isinstance(value, list) else [value]
            for item in items:
                if isinstance(item, Mapping) and set(item) == {"status"}:
                    continue
                _refuse_nested_status(item)
                clauses.append(item)
        else:
            _refuse_nested_status({key: value})
            clauses.append({key: value})
    clauses.append({"updatedSince": since})
    return clauses[0] if len(clauses) == 1 else {"and": clauses}


def _refuse_nested_status(value: Any) -> None:
    if _mentions_status(value):
        raise PermanentError(
            "an Incremental run cannot lift the status condition out of this filter: it is "
            "inside an 'or' or 'not' (or nested 'and'). Put status at the top level of "
            "spec.source.filter (or in its top-level 'and'), or use mode Full",
            reason="InvalidConfiguration",
        )


def _mentions_status(value: Any) -> bool:
    if isinstance(value, Mapping):
        return "status" in value or any(_mentions_status(v) for v in value.values())
    if isinstance(value, list):
        return any(_mentions_status(v) for v in value)
    return False


async def plan_window(run: RunSettings, fetcher: FetcherSettings) -> Window:
    """Full, or Incremental from the database's watermark; a first run falls back to Full."""
    if fetcher.mode != "Incremental":
        return Window("Full")
    database = load(DatabaseSettings)
    tables = Tables.for_table(database.table)
    conn = await connect(database.url, f"catalogsync-fetcher {run.run_id}")
    try:
        found = await watermark(conn, tables, run.catalog)
    finally:
        await conn.close()
    if found is None:
        why = (
            f"no earlier successful run of catalog {run.catalog!r} into {tables.qualified}: "
            "this Incremental run fetches the full catalog"
        )
        log.warning(why)
        return Window("Full", why_full=why)
    since = found - timedelta(seconds=fetcher.incremental_overlap)
    log.info(
        "incremental: products updated since %s (watermark %s minus %ss overlap)",
        since.isoformat(),
        found.isoformat(),
        fetcher.incremental_overlap,
    )
    return Window("Incremental", since=since, watermark=found)


def rfc3339(moment: datetime) -> str:
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
