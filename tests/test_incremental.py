"""Incremental runs: a Full run, a mutation, then an Incremental run, with the real jobs.

The fetcher and the maintainer run as subprocesses (as the Jobs run them) against the simulator,
``file://`` storage and a real PostgreSQL. The simulator's live mutation stamps every change with
the moment it happened, so the Incremental run must bring exactly those products.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import asyncpg
import pytest

from catalogsync.common.errors import PermanentError
from catalogsync.dev.demo import StageResult, run_stage
from catalogsync.dev.simulator import Catalog, Mutation, SimulatorServer
from catalogsync.fetcher.incremental import incremental_filter
from tests import maintainer_data as data
from tests.plugins.medipim import MedipimFactory

DAY = Mutation(changed=0.01, added=0.003, removed=0.002, replaced=0.002, status_changed=0.004)


def test_the_status_clause_is_lifted_and_updated_since_added() -> None:
    assert incremental_filter({"status": "active"}, 100) == {"updatedSince": 100}
    assert incremental_filter({"status": "active", "brand": [1, 2]}, 5) == {
        "and": [{"brand": [1, 2]}, {"updatedSince": 5}]
    }
    lifted = incremental_filter({"and": [{"status": ["active"]}, {"minimumContent": True}]}, 7)
    assert lifted == {"and": [{"minimumContent": True}, {"updatedSince": 7}]}
    assert incremental_filter({}, 9) == {"updatedSince": 9}
    for nested in (
        {"or": [{"status": "active"}, {"brand": 1}]},
        {"not": {"status": "inactive"}},
        {"and": [{"status": "active", "brand": 1}]},
    ):
        with pytest.raises(PermanentError, match="cannot lift the status"):
            incremental_filter(nested, 1)


async def stage(command: str, env: dict[str, str], **extra: str) -> StageResult:
    result = await run_stage(command, command, env | extra)
    assert result.ok, result.summary
    return result


async def table(dsn: str, name: str) -> dict[str, tuple[Any, ...]]:
    conn = await asyncpg.connect(dsn)
    try:
        rows = await conn.fetch(f"SELECT id, status, content_hash, deleted_at FROM {name}")
    finally:
        await conn.close()
    return {r["id"]: (r["status"], r["content_hash"], r["deleted_at"]) for r in rows}


async def test_full_then_mutation_then_incremental(
    pg_dsn: str, tmp_path: Path, medipim_factory: MedipimFactory, medipim_cache: Path
) -> None:
    catalog = Catalog(seed=11, products=3_000, mutation=DAY, cache_dir=medipim_cache)
    medipim: SimulatorServer = await medipim_factory(catalog, rate_limit=None)
    (tmp_path / "store" / "medipim-raw").mkdir(parents=True)
    env = medipim.env() | {
        "STORAGE_URL": (tmp_path / "store").as_uri(),
        "DATABASE_URL": pg_dsn,
        "FETCHER_SCRATCH_DIR": str(tmp_path),
        "CATALOGSYNC_LOG_FORMAT": "json",
        "SYNC_CATALOG": "medipim-au",
    }
    # An Incremental run with no earlier run of its catalog does a Full one, and says so.
    first = await stage("fetch", env, SYNC_RUN_ID="first", FETCHER_MODE="Incremental")
    assert first.summary["mode"] == "Full"
    assert "no earlier successful run" in first.summary["fullBecause"]
    assert first.summary["published"] is True
    assert first.summary["records"] == len(catalog.ids("active"))
    await stage("maintain", env, SYNC_RUN_ID="first")

    changes = medipim.advance().changes()
    sent = medipim.bytes_sent
    fetched = await stage("fetch", env, SYNC_RUN_ID="second", FETCHER_MODE="Incremental")
    summary = fetched.summary
    assert summary["mode"] == "Incremental"
    assert summary["published"] is False  # latest.ndjson stays the Full run's
    assert summary["records"] == len(changes.touched)
    assert medipim.bytes_sent - sent == summary["bytes"]
    assert summary["since"].endswith("Z")
    maintained = await stage(
        "maintain", env, SYNC_RUN_ID="second", MAINTAINER_DELETE_MISSING="true"
    )
    assert maintained.summary["mode"] == "Incremental"
    assert maintained.summary["deleted"] == 0
    assert maintained.summary["changes"] == len(changes.touched)

    conn = await asyncpg.connect(pg_dsn)
    try:
        feed = await conn.fetch(
            "SELECT product_id, kind FROM catalogsync_changes WHERE run_id = 'second'"
        )
    finally:
        await conn.close()
    kinds = {r["product_id"]: r["kind"] for r in feed}
    expected = data.expected_feed(set(catalog.ids("active")), changes)
    assert kinds == expected

    # The table equals what a Full run of the new version gives, deletions aside: every active
    # product is the same; the other rows are the products no longer active, and the removed
    # ones, which only a Full run with deleteMissing can find.
    await stage("fetch", env, SYNC_RUN_ID="full", DATABASE_TABLE="public.full_products")
    await stage("maintain", env, SYNC_RUN_ID="full", DATABASE_TABLE="public.full_products")
    incremental, full = await table(pg_dsn, "products"), await table(pg_dsn, "full_products")
    assert changes.removed
    assert changes.removed <= set(incremental)
    kept = {i: row for i, row in incremental.items() if i not in changes.removed}
    active = {i: row[1] for i, row in kept.items() if row[0] == "active"}
    assert active == {i: row[1] for i, row in full.items()}
    assert set(kept) - set(full) == {i for i, row in kept.items() if row[0] != "active"}
