"""The change feed and incremental catalogs, against a real PostgreSQL."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import asyncpg

from catalogsync.common.tables import Tables
from catalogsync.common.watermark import watermark
from catalogsync.maintainer.main import file_source, object_source
from catalogsync.maintainer.pipeline import Options, maintain
from tests import maintainer_data as data

FEED = "SELECT product_id, kind, fields, old_status, new_status FROM catalogsync_changes"


async def run(dsn: str, path: Path, run_id: str, **options: Any) -> dict[str, Any]:
    opts = Options(
        table="public.products",
        run_id=run_id,
        object_key=f"file://{path}",
        chunk_size=100,
        **options,
    )
    return await maintain(dsn, file_source(path), opts)


async def feed(conn: asyncpg.Connection, run_id: str, dry_run: bool) -> set[tuple[Any, ...]]:
    found = await conn.fetch(f"{FEED} WHERE run_id = $1 AND dry_run = $2", run_id, dry_run)
    return {
        (r["product_id"], r["kind"], tuple(r["fields"]), r["old_status"], r["new_status"])
        for r in found
    }


def catalog(count: int, start: int = 0) -> list[dict[str, Any]]:
    return [data.product(n) for n in range(start, start + count)]


async def test_a_dry_runs_feed_equals_the_changes_the_next_real_run_makes(
    pg_dsn: str, tmp_path: Path
) -> None:
    base = catalog(400)
    await run(pg_dsn, data.write(tmp_path / "v1.ndjson", base), "v1", delete_missing=True)
    v2 = [data.reembed(p, salt=1) for p in base]
    for i in range(10):
        v2[i] = data.product(i, version=1)  # content change
    for i in range(10, 14):
        v2[i] = data.product(i, version=1, status="inactive")  # status change
    v2 = [p for i, p in enumerate(v2) if i not in range(20, 23)] + catalog(5, start=5000)
    path = data.write(tmp_path / "v2.ndjson", v2)
    options: dict[str, Any] = {"delete_missing": True, "max_delete_fraction": 1}
    dry = await run(pg_dsn, path, "v2", dry_run=True, **options)
    real = await run(pg_dsn, path, "v2", **options)
    assert dry["changes"] == real["changes"] == 10 + 4 + 3 + 5
    assert dry["changesFeed"] == real["changesFeed"] == '"public"."catalogsync_changes"'
    conn = await asyncpg.connect(pg_dsn)
    try:
        would, did = await feed(conn, "v2", True), await feed(conn, "v2", False)
        assert would == did
        kinds: dict[str, set[str]] = {}
        for product_id, kind, *_ in did:
            kinds.setdefault(kind, set()).add(product_id)
        assert kinds == {
            "updated": {data.product_id(i) for i in range(10)},
            "status_changed": {data.product_id(i) for i in range(10, 14)},
            "deleted": {data.product_id(i) for i in range(20, 23)},
            "inserted": {data.product_id(i) for i in range(5000, 5005)},
        }
        by_id = {row[0]: row for row in did}
        assert by_id[data.product_id(0)][2] == ("meta", "name")  # embedUrl is not a change
        assert by_id[data.product_id(10)][2:] == (("meta", "name", "status"), "active", "inactive")
        assert by_id[data.product_id(20)][3:] == ("active", "active")
        # a removed product that comes back is restored
        v3 = [*v2, data.product(20, version=2)]
        summary = await run(pg_dsn, data.write(tmp_path / "v3.ndjson", v3), "v3")
        assert summary["changes"] == 1
        assert {row[:2] for row in await feed(conn, "v3", False)} == {
            (data.product_id(20), "restored")
        }
        # a dry run repeated under its name starts its feed afresh: now v2 only loses product 20
        again = await run(pg_dsn, path, "v2", dry_run=True, **options)
        assert again["changes"] == 1
        assert await feed(conn, "v2", True) == {
            (data.product_id(20), "deleted", (), "active", "active")
        }
    finally:
        await conn.close()


async def test_retention_keeps_the_newest_runs_and_days(pg_dsn: str, tmp_path: Path) -> None:
    for version in range(3):
        products = [data.product(n, version=version) for n in range(120)]
        summary = await run(
            pg_dsn, data.write(tmp_path / f"{version}.ndjson", products), f"r{version}",
            changes_keep_runs=2,
        )  # fmt: skip
        assert summary["changes"] == 120
    conn = await asyncpg.connect(pg_dsn)
    try:
        kept = await conn.fetch("SELECT run_id, count(*) FROM catalogsync_changes GROUP BY 1")
        assert {r["run_id"]: r["count"] for r in kept} == {"r1": 120, "r2": 120}
        await conn.execute("UPDATE catalogsync_changes SET changed_at = now() - interval '3 days'")
        products = [data.product(n, version=9) for n in range(120)]
        await run(pg_dsn, data.write(tmp_path / "9.ndjson", products), "r9", changes_keep_days=2)
        assert await conn.fetchval("SELECT count(DISTINCT run_id) FROM catalogsync_changes") == 1
    finally:
        await conn.close()


async def test_an_incremental_catalog_never_deletes_and_sets_the_watermark(
    pg_dsn: str, tmp_path: Path
) -> None:
    conn = await asyncpg.connect(pg_dsn)
    tables = Tables.for_table("public.products")
    try:
        assert await watermark(conn, tables, "medipim-au") is None  # no runs table yet
        full_at = datetime(2026, 12, 1, 2, 0, tzinfo=UTC)
        await run(pg_dsn, data.write(tmp_path / "full.ndjson", catalog(300)), "full",
                  fetched_at=full_at)  # fmt: skip
        assert await watermark(conn, tables, "medipim-au") == full_at
        assert await watermark(conn, tables, "other-catalog") is None
        delta = [data.product(n, version=1, status="inactive") for n in range(5)]
        incremental_at = datetime(2026, 12, 1, 3, 0, tzinfo=UTC)
        summary = await run(
            pg_dsn, data.write(tmp_path / "delta.ndjson", delta), "delta",
            mode="Incremental", fetched_at=incremental_at, delete_missing=True,
        )  # fmt: skip
        assert (summary["updated"], summary["deleted"], summary["mode"]) == (5, 0, "Incremental")
        live = await conn.fetchval("SELECT count(*) FROM products WHERE deleted_at IS NULL")
        assert live == 300
        assert await watermark(conn, tables, "medipim-au") == incremental_at
        # a failed or dry run never moves the watermark
        await run(pg_dsn, data.write(tmp_path / "dry.ndjson", catalog(3)), "dry", dry_run=True,
                  fetched_at=datetime(2026, 12, 2, tzinfo=UTC))  # fmt: skip
        assert await watermark(conn, tables, "medipim-au") == incremental_at
    finally:
        await conn.close()


def test_object_metadata_says_how_and_when_it_was_fetched() -> None:
    assert object_source({"mode": "Incremental", "fetchedAt": "1764554400"}) == (
        "Incremental",
        datetime(2025, 12, 1, 2, 0, tzinfo=UTC),
    )
    assert object_source({}) == ("Full", None)
    assert object_source({"mode": "Full", "fetchedAt": "soon"}) == ("Full", None)
