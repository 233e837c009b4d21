"""The maintainer against a real PostgreSQL: loads, re-syncs, bad data, resume, deletes, locks."""

from __future__ import annotations

import asyncio
import contextlib
import os
import random
import signal
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import AsyncIterator, Mapping
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import asyncpg
import orjson
import pytest

from catalogsync.common.errors import ExitCode, InvalidDataError, PermanentError, TransientError
from catalogsync.common.lines import MAX_LINE_BYTES
from catalogsync.common.progress import Snapshot
from catalogsync.common.tables import Tables
from catalogsync.maintainer.chunks import REJECT_RAW_LIMIT
from catalogsync.maintainer.deletes import TooManyDeletes
from catalogsync.maintainer.main import file_source
from catalogsync.maintainer.pipeline import Options, TooManyInvalid, maintain
from catalogsync.maintainer.runs import TableLocked, acquire_table_lock
from catalogsync.maintainer.schema import migrate, migration_files
from tests import maintainer_data as data

ALL_MIGRATIONS = [number for number, _, _ in migration_files()]
MAPPED = (
    'id, name, status, organization, brand, "eanGtin13", "eanGtin14", "artgId", pbs, '
    '"snomedMpp", "snomedTpp", "gs1Category", "createdAt", "metaUpdatedAt", raw'
)


async def run(
    dsn: str, path: Path, run_id: str, table: str = "public.products", **options: Any
) -> dict[str, Any]:
    key = f"file://{path}"  # as the CLI names a local file (tmp_path is absolute)
    opts = Options(table=table, run_id=run_id, object_key=key, chunk_size=100, **options)
    return await maintain(dsn, file_source(path), opts)


async def rows(dsn: str, table: str = "public.products") -> dict[str, dict[str, Any]]:
    conn = await asyncpg.connect(dsn)
    try:
        found = await conn.fetch(
            f"SELECT {MAPPED}, content_hash, deleted_at, xmin::text AS xmin FROM {table}"
        )
    finally:
        await conn.close()
    result = {}
    for row in found:
        values = dict(row)
        values["raw"] = orjson.loads(values["raw"])
        result[row["id"]] = values
    return result


def without_embed_url(values: dict[str, Any]) -> dict[str, Any]:
    """Mapped values with the volatile pre-signed URL left out of ``raw``."""
    raw = values["raw"]
    meta = {k: v for k, v in raw["meta"].items() if k != "embedUrl"}
    return {**values, "raw": {**raw, "meta": meta}}


def mapped(row: dict[str, Any]) -> dict[str, Any]:
    kept = {k: v for k, v in row.items() if k not in ("content_hash", "deleted_at", "xmin")}
    return without_embed_url(kept)


def expected(record: dict[str, Any]) -> dict[str, Any]:
    return without_embed_url(data.expected_row(record))


def catalog(count: int, start: int = 0) -> list[dict[str, Any]]:
    return [data.product(n) for n in range(start, start + count)]


async def test_cold_load_fills_every_mapped_column(pg_dsn: str, tmp_path: Path) -> None:
    products = catalog(350)
    summary = await run(pg_dsn, data.write(tmp_path / "c.ndjson", products), "cold")
    assert summary["inserted"] == 350
    assert summary["processed"] == summary["total"] == 350
    assert (summary["updated"], summary["skipped"], summary["invalid"]) == (0, 0, 0)
    assert summary["chunksDone"] == 4
    stored = await rows(pg_dsn)
    assert set(stored) == {p["id"] for p in products}
    for record in products:
        assert mapped(stored[record["id"]]) == expected(record)
        assert len(stored[record["id"]]["content_hash"]) == 16
    conn = await asyncpg.connect(pg_dsn)
    try:
        run_row = await conn.fetchrow("SELECT * FROM catalogsync_runs WHERE run_id = 'cold'")
        assert run_row is not None
        assert run_row["status"] == "succeeded"
        assert (run_row["inserted"], run_row["chunks_done"], run_row["checkpoint_line"]) == (
            350,
            4,
            350,
        )
        compression = await conn.fetchval(
            "SELECT attcompression::text FROM pg_attribute "
            "WHERE attrelid = 'public.products'::regclass AND attname = 'raw'"
        )
        assert compression == "l"
    finally:
        await conn.close()


async def test_unchanged_resync_rewrites_no_row(pg_dsn: str, tmp_path: Path) -> None:
    products = catalog(250)
    await run(pg_dsn, data.write(tmp_path / "a.ndjson", products), "first")
    before = await rows(pg_dsn)
    again = [data.reembed(p, salt=i + 1) for i, p in enumerate(products)]
    summary = await run(pg_dsn, data.write(tmp_path / "b.ndjson", again), "second")
    assert (summary["skipped"], summary["inserted"], summary["updated"]) == (250, 0, 0)
    after = await rows(pg_dsn)
    assert {k: v["xmin"] for k, v in after.items()} == {k: v["xmin"] for k, v in before.items()}


async def test_changed_added_removed_and_replaced(pg_dsn: str, tmp_path: Path) -> None:
    base = catalog(1000)
    await run(pg_dsn, data.write(tmp_path / "v1.ndjson", base), "v1", delete_missing=True)
    before = await rows(pg_dsn)
    rng = random.Random(7)
    indexes = rng.sample(range(1000), 28)
    changed, removed, replaced = indexes[:10], set(indexes[10:15]), indexes[15:18]
    inactive = indexes[18:20]
    v2 = [data.reembed(p, salt=1) for p in base]
    for i in changed:
        v2[i] = data.product(i, version=1)
    for i in replaced:
        v2[i] = data.product(i, version=1, status="replaced")
    for i in inactive:
        v2[i] = data.product(i, version=1, status="inactive")
    v2 = [p for i, p in enumerate(v2) if i not in removed] + catalog(5, start=5000)
    summary = await run(pg_dsn, data.write(tmp_path / "v2.ndjson", v2), "v2", delete_missing=True)
    assert summary["inserted"] == 5
    assert summary["updated"] == 15
    assert summary["skipped"] == 1000 - 5 - 15
    assert summary["deleted"] == 5
    after = await rows(pg_dsn)
    assert len(after) == 1005
    for record in v2:
        assert mapped(after[record["id"]]) == expected(record)
        assert after[record["id"]]["deleted_at"] is None
    for i in removed:
        assert after[data.product_id(i)]["deleted_at"] is not None
    touched = {data.product_id(i) for i in [*changed, *replaced, *inactive, *removed]}
    for product_id, row in before.items():
        if product_id not in touched:
            assert after[product_id]["xmin"] == row["xmin"]
    assert after[data.product_id(replaced[0])]["status"] == "replaced"
    assert after[data.product_id(replaced[0])]["eanGtin13"] is None

    # A removed product that comes back is undeleted (and its row made current).
    v3 = [*v2, data.product(min(removed), version=2)]
    summary = await run(pg_dsn, data.write(tmp_path / "v3.ndjson", v3), "v3", delete_missing=True)
    assert (summary["updated"], summary["undeleted"], summary["deleted"]) == (1, 1, 0)
    back = (await rows(pg_dsn))[data.product_id(min(removed))]
    assert back["deleted_at"] is None
    assert back["name"] == f"Product {min(removed)} v2"


async def test_malformed_lines_and_duplicate_ids(pg_dsn: str, tmp_path: Path) -> None:
    good = catalog(300)
    lines = data.lines(good)
    twin_early = data.product(5, version=9)  # same id as line 6, in the same chunk
    twin_late = data.product(10, version=9)  # same id as line 11, two chunks later
    bad = {
        20: b"{not json",
        40: b'{"meta": {"total": 300, "index": 39}, "result": {"name": "no id"}}',
        60: b'{"meta": {"total": 300, "index": 59}, "result": {"id": 12345}}',
        80: b'{"meta": {"total": 300, "index": 79}, "result": ["not", "an", "object"]}',
    }
    lines.insert(50, orjson.dumps({"meta": {"total": 300, "index": 5}, "result": twin_early}))
    lines.append(orjson.dumps({"meta": {"total": 300, "index": 10}, "result": twin_late}))
    lines.insert(120, b"   ")  # blank lines are not products, not errors
    for line_no, text in bad.items():
        lines.insert(line_no - 1, text)
    path = data.write(tmp_path / "bad.ndjson", lines)
    summary = await run(pg_dsn, path, "bad", max_invalid_fraction=0.05)
    assert summary["invalid"] == 4
    assert summary["duplicates"] == 2
    assert summary["processed"] == 306
    assert summary["inserted"] + summary["updated"] + summary["skipped"] == 300
    stored = await rows(pg_dsn)
    assert len(stored) == 300
    assert stored[data.product_id(5)]["name"] == "Product 5 v9"
    assert stored[data.product_id(10)]["name"] == "Product 10 v9"
    conn = await asyncpg.connect(pg_dsn)
    try:
        rejects = await conn.fetch(
            "SELECT line, error, raw FROM catalogsync_rejects WHERE run_id = 'bad' ORDER BY line"
        )
    finally:
        await conn.close()
    assert [r["line"] for r in rejects] == sorted(bad)
    assert [r["raw"].encode() for r in rejects] == [bad[n] for n in sorted(bad)]
    assert "not JSON" in rejects[0]["error"]
    assert "result.id" in rejects[1]["error"]
    assert "result.id" in rejects[2]["error"]
    assert "result" in rejects[3]["error"]


async def test_nul_characters_are_replaced_and_counted_literal_text_is_kept(
    pg_dsn: str, tmp_path: Path
) -> None:
    products = catalog(120)
    products[5] = {**products[5], "name": "bad\x00name", "note": ["\x00"]}
    products[110] = {**products[110], "name": "type \\u0000 to match"}
    summary = await run(pg_dsn, data.write(tmp_path / "c.ndjson", products), "nul")
    assert (summary["inserted"], summary["invalid"], summary["nulReplaced"]) == (120, 0, 1)
    stored = await rows(pg_dsn)
    nul, literal = stored[products[5]["id"]], stored[products[110]["id"]]
    assert nul["name"] == "bad\ufffdname"
    assert (nul["raw"]["name"], nul["raw"]["note"]) == ("bad\ufffdname", ["\ufffd"])
    assert literal["name"] == literal["raw"]["name"] == "type \\u0000 to match"
    assert mapped(literal) == expected(products[110])
    conn = await asyncpg.connect(pg_dsn)
    try:
        counted = await conn.fetchval(
            "SELECT nul_replaced FROM catalogsync_runs WHERE run_id = 'nul'"
        )
    finally:
        await conn.close()
    assert counted == 1
    again = await run(pg_dsn, data.write(tmp_path / "c.ndjson", products), "nul-again")
    assert (again["skipped"], again["nulReplaced"]) == (120, 0)


async def test_too_many_invalid_lines_fail_and_stop_committing(pg_dsn: str, tmp_path: Path) -> None:
    lines = data.lines(catalog(500))
    for line_no in range(250, 261):
        lines[line_no - 1] = b"garbage"
    path = data.write(tmp_path / "bad.ndjson", lines)
    with pytest.raises(TooManyInvalid) as caught:
        await run(pg_dsn, path, "bad", max_invalid_fraction=0.01, connections=1)
    assert caught.value.exit_code == ExitCode.INVALID_DATA
    assert "11 invalid lines of 500" in str(caught.value)
    stored = await rows(pg_dsn)
    assert len(stored) == 200  # chunks 0 and 1; nothing from the failing chunk on
    conn = await asyncpg.connect(pg_dsn)
    try:
        run_row = await conn.fetchrow("SELECT status, message FROM catalogsync_runs")
        rejected = await conn.fetchval("SELECT count(*) FROM catalogsync_rejects")
    finally:
        await conn.close()
    assert run_row is not None
    assert run_row["status"] == "failed"
    assert "maxInvalidFraction" in run_row["message"]
    assert rejected == 11


async def test_a_line_over_the_limit_is_rejected_and_truncated(pg_dsn: str) -> None:
    """An object the fetcher never checked (MaintainOnly) may hold a runaway line: it is an
    invalid line like any other, stored as its first REJECT_RAW_LIMIT bytes."""
    lines = data.lines(catalog(150))
    head = b'{"meta": {"total": 150, "index": 149}, "result": {"id": "MFFFFFFFFF", "name": "'
    tail = b'"}}'
    block = b"x" * (1 << 20)
    fill = MAX_LINE_BYTES + 1 - len(head) - len(tail)

    async def source() -> AsyncIterator[bytes]:
        """The object as storage hands it over; one 1 MiB block reused, so nothing piles up."""
        yield b"".join(line + b"\n" for line in lines[:119])
        yield head
        for _ in range(fill // len(block)):
            yield block
        yield block[: fill % len(block)] + tail + b"\n"
        yield b"".join(line + b"\n" for line in lines[119:])

    opts = Options(table="public.products", run_id="long", object_key="long", chunk_size=100)
    summary = await maintain(pg_dsn, source(), opts)
    assert (summary["processed"], summary["invalid"], summary["inserted"]) == (151, 1, 150)
    assert "MFFFFFFFFF" not in await rows(pg_dsn)
    conn = await asyncpg.connect(pg_dsn)
    try:
        (reject,) = await conn.fetch("SELECT line, error, raw FROM catalogsync_rejects")
    finally:
        await conn.close()
    assert reject["line"] == 120
    assert (
        f"is {MAX_LINE_BYTES + 1} bytes, over the line limit of {MAX_LINE_BYTES}"
        in (reject["error"])
    )
    assert len(reject["raw"]) == REJECT_RAW_LIMIT
    assert reject["raw"].encode() == (head + block)[:REJECT_RAW_LIMIT]


@pytest.mark.parametrize("damage", ["lines missing, indexes kept", "no meta", "repeated index"])
async def test_delete_missing_needs_the_whole_index_sequence(
    pg_dsn: str, tmp_path: Path, damage: str
) -> None:
    """The last line's ``meta.index + 1 == meta.total`` is not proof: every index from 0 to
    ``meta.total - 1`` must be there, in order, and a file without ``meta`` is never complete."""
    products = catalog(1000)
    await run(pg_dsn, data.write(tmp_path / "full.ndjson", products), "full")
    lines = data.lines(products)
    if damage == "lines missing, indexes kept":
        damaged = lines[:600] + lines[630:]  # 3 % gone, the last line still says 999 of 1000
    elif damage == "no meta":
        damaged = [orjson.dumps({"result": p}) for p in products[:970]]
    else:
        damaged = [*lines[:600], lines[599], *lines[630:]]
    summary = await run(
        pg_dsn, data.write(tmp_path / "damaged.ndjson", damaged), "damaged", delete_missing=True
    )
    assert (summary["deleted"], summary["complete"]) == (0, False)
    assert all(row["deleted_at"] is None for row in (await rows(pg_dsn)).values())


async def test_deletions_are_bounded_over_recent_runs_too(pg_dsn: str, tmp_path: Path) -> None:
    """Two runs of 4.9 % each must not delete 9.6 %: the limit also holds against the largest
    live count of the recent complete runs, until a run is allowed a larger fraction."""
    products = catalog(1000)

    async def sync(run_id: str, count: int, **options: Any) -> dict[str, Any]:
        path = data.write(tmp_path / f"{run_id}.ndjson", products[:count])
        return await run(pg_dsn, path, run_id, delete_missing=True, **options)

    assert (await sync("day0", 1000))["deleted"] == 0
    assert (await sync("day1", 951))["deleted"] == 49  # 4.9 %
    with pytest.raises(TooManyDeletes) as caught:
        await sync("day2", 904)  # 4.9 % of 951, but 9.6 % of the 1000 of day 0
    message = str(caught.value)
    assert "1000" in message
    assert "904" in message
    live = [row for row in (await rows(pg_dsn)).values() if row["deleted_at"] is None]
    assert len(live) == 951
    assert (await sync("day2-allowed", 904, max_delete_fraction=0.1))["deleted"] == 47
    assert (await sync("day3", 880))["deleted"] == 24  # measured from the allowed run on


async def test_delete_missing_refuses_beyond_threshold(pg_dsn: str, tmp_path: Path) -> None:
    products = catalog(400)
    await run(pg_dsn, data.write(tmp_path / "full.ndjson", products), "full")
    shrunk = data.write(tmp_path / "shrunk.ndjson", products[:360])  # 10 % gone
    with pytest.raises(TooManyDeletes) as caught:
        await run(pg_dsn, shrunk, "shrunk", delete_missing=True, max_delete_fraction=0.05)
    assert caught.value.exit_code == ExitCode.INVALID_DATA
    assert "40 of 400" in str(caught.value)
    assert all(row["deleted_at"] is None for row in (await rows(pg_dsn)).values())
    summary = await run(pg_dsn, shrunk, "allowed", delete_missing=True, max_delete_fraction=0.2)
    assert summary["deleted"] == 40
    deleted = [k for k, row in (await rows(pg_dsn)).items() if row["deleted_at"] is not None]
    assert sorted(deleted) == sorted(p["id"] for p in products[360:])


async def test_delete_missing_skipped_on_incomplete_catalog(pg_dsn: str, tmp_path: Path) -> None:
    products = catalog(300)
    await run(pg_dsn, data.write(tmp_path / "full.ndjson", products), "full")
    truncated = data.write(tmp_path / "cut.ndjson", data.lines(products)[:290])
    summary = await run(pg_dsn, truncated, "cut", delete_missing=True, max_delete_fraction=1)
    assert summary["complete"] is False
    assert summary["deleted"] == 0
    assert all(row["deleted_at"] is None for row in (await rows(pg_dsn)).values())


async def test_delete_missing_skipped_when_lines_were_invalid(pg_dsn: str, tmp_path: Path) -> None:
    products = catalog(300)
    await run(pg_dsn, data.write(tmp_path / "full.ndjson", products), "full")
    lines = data.lines(products)
    lines[41] = lines[41][:-30]  # product 41's line is cut: invalid, but the product is there
    path = data.write(tmp_path / "cut.ndjson", lines)
    summary = await run(
        pg_dsn, path, "cut", delete_missing=True, max_delete_fraction=1, max_invalid_fraction=0.01
    )
    assert (summary["complete"], summary["invalid"], summary["deleted"]) == (True, 1, 0)
    assert all(row["deleted_at"] is None for row in (await rows(pg_dsn)).values())


async def test_dry_run_writes_nothing(pg_dsn: str, tmp_path: Path) -> None:
    products = catalog(300)
    path = data.write(tmp_path / "c.ndjson", products)
    summary = await run(pg_dsn, path, "dry", dry_run=True)
    assert summary["inserted"] == 300
    conn = await asyncpg.connect(pg_dsn)
    try:
        tables = await conn.fetchval(
            "SELECT count(*) FROM pg_tables WHERE schemaname NOT IN ('pg_catalog', "
            "'information_schema')"
        )
        assert tables == 0
        await run(pg_dsn, path, "real")
        before = await rows(pg_dsn)
        lsn = await conn.fetchval("SELECT pg_current_wal_insert_lsn()")
        runs_before = await conn.fetchval("SELECT count(*) FROM catalogsync_runs")
        v2 = [data.product(n, version=1) for n in range(150)] + catalog(100, start=900)
        summary = await run(
            pg_dsn,
            data.write(tmp_path / "v2.ndjson", v2),
            "dry2",
            dry_run=True,
            delete_missing=True,
            max_delete_fraction=1,
        )
        assert (summary["updated"], summary["inserted"], summary["deleted"]) == (150, 100, 150)
        assert await rows(pg_dsn) == before
        assert await conn.fetchval("SELECT count(*) FROM catalogsync_runs") == runs_before
        # what it wrote is its change feed: one row per product it would change
        assert summary["changes"] == 400
        feed = await conn.fetchval(
            "SELECT count(*) FROM catalogsync_changes WHERE run_id = 'dry2' AND dry_run"
        )
        assert feed == 400
        wal = await conn.fetchval("SELECT pg_current_wal_insert_lsn() - $1::pg_lsn", lsn)
        assert wal < 1024 * 1024  # the feed's 400 rows, no product or run row
    finally:
        await conn.close()


@pytest.mark.parametrize(
    "name",
    [
        'products"; DROP TABLE x; --',
        "public.products.extra",
        "Products",
        "public.",
        "pro ducts",
        "1products",
        "a" * 64,
    ],
)
async def test_hostile_table_names_are_rejected(pg_dsn: str, tmp_path: Path, name: str) -> None:
    with pytest.raises(PermanentError):
        Tables.for_table(name)
    with pytest.raises(PermanentError):
        await run(pg_dsn, data.write(tmp_path / "c.ndjson", catalog(1)), "x", table=name)


async def test_custom_table_name_and_schema(pg_dsn: str, tmp_path: Path) -> None:
    path = data.write(tmp_path / "c.ndjson", catalog(120))
    summary = await run(pg_dsn, path, "s", table="catalog.items")
    assert summary["inserted"] == 120
    assert len(await rows(pg_dsn, '"catalog"."items"')) == 120


@pytest.mark.parametrize("grant", ["owned-schema", "granted-public"])
async def test_migrations_run_without_create_on_the_database(
    pg_dsn: str, tmp_path: Path, grant: str
) -> None:
    """A least-privilege user whose schema an administrator made: it owns the schema, or has
    USAGE and CREATE on ``public``, and has no CREATE on the database."""
    role = f"least_{uuid.uuid4().hex[:12]}"
    schema = "catalog" if grant == "owned-schema" else "public"
    admin = await asyncpg.connect(pg_dsn)
    try:
        await admin.execute(f'CREATE ROLE "{role}" LOGIN')
        database = await admin.fetchval("SELECT current_database()")
        await admin.execute(f'REVOKE CREATE ON DATABASE "{database}" FROM PUBLIC')
        if schema == "public":
            await admin.execute(f'GRANT USAGE, CREATE ON SCHEMA public TO "{role}"')
        else:
            await admin.execute(f'CREATE SCHEMA {schema} AUTHORIZATION "{role}"')
        parts = urlsplit(pg_dsn)
        dsn = parts._replace(netloc=f"{role}@{parts.hostname}:{parts.port}").geturl()
        conn = await asyncpg.connect(dsn)
        try:
            assert not await conn.fetchval(
                "SELECT has_database_privilege(current_database(), 'CREATE')"
            )
            # Why the schema is looked up first: the privilege is checked before existence.
            with pytest.raises(asyncpg.InsufficientPrivilegeError):
                await conn.execute(f"CREATE SCHEMA IF NOT EXISTS {schema}")
            assert await migrate(conn, Tables.for_table(f"{schema}.products")) == ALL_MIGRATIONS
            assert await migrate(conn, Tables.for_table(f"{schema}.products")) == []
        finally:
            await conn.close()
        path = data.write(tmp_path / "c.ndjson", catalog(50))
        summary = await run(dsn, path, "least", table=f"{schema}.products")
        assert summary["inserted"] == 50
        assert len(await rows(pg_dsn, f"{schema}.products")) == 50
    finally:
        await admin.execute(f'DROP OWNED BY "{role}"')
        await admin.execute(f'DROP ROLE "{role}"')
        await admin.close()


ORIGINAL_TABLE = """
CREATE TABLE public.products (
    id text PRIMARY KEY, name text, status text, organization text, brand text,
    "eanGtin13" text, "eanGtin14" text, "artgId" text, pbs text, "snomedMpp" text,
    "snomedTpp" text, "gs1Category" text, "createdAt" timestamptz, "metaUpdatedAt" timestamptz,
    updated_at timestamptz DEFAULT now(), raw jsonb);
CREATE INDEX idx_products_status ON public.products (status);
CREATE INDEX idx_products_ean ON public.products ("eanGtin13");
"""


async def test_original_table_is_upgraded_in_place(pg_dsn: str, tmp_path: Path) -> None:
    conn = await asyncpg.connect(pg_dsn)
    try:
        await conn.execute(ORIGINAL_TABLE)
        await conn.execute(
            """INSERT INTO public.products (id, name, status, brand, raw)
               SELECT 'M' || lpad(upper(to_hex(n)), 9, '0'), 'stale ' || n, 'active', 'old', '{}'
               FROM generate_series(0, 199) n"""
        )
        await conn.execute(
            "INSERT INTO public.products (id, name, raw) VALUES ('LEGACY', 'kept', '{}')"
        )
        products = catalog(150)
        summary = await run(pg_dsn, data.write(tmp_path / "c.ndjson", products), "up")
        assert (summary["updated"], summary["inserted"]) == (150, 0)
        stored = await rows(pg_dsn)
        assert len(stored) == 201
        for record in products:
            assert mapped(stored[record["id"]]) == expected(record)
        assert stored["LEGACY"]["name"] == "kept"
        assert stored[data.product_id(199)]["name"] == "stale 199"
        indexes = await conn.fetch(
            "SELECT indexdef FROM pg_indexes WHERE tablename = 'products' AND indexdef LIKE $1",
            "%(status)%",
        )
        assert len(indexes) == 1
        columns = {
            r["attname"]
            for r in await conn.fetch(
                "SELECT attname FROM pg_attribute WHERE attrelid = 'public.products'::regclass"
            )
        }
        assert {"content_hash", "first_seen_at", "last_seen_at", "deleted_at"} <= columns
        assert await migrate(conn, Tables.for_table("products")) == []
    finally:
        await conn.close()


async def test_dry_run_on_the_original_table_counts_and_changes_nothing(
    pg_dsn: str, tmp_path: Path
) -> None:
    conn = await asyncpg.connect(pg_dsn)
    try:
        await conn.execute(ORIGINAL_TABLE)
        await conn.execute(
            """INSERT INTO public.products (id, name, raw)
               SELECT 'M' || lpad(upper(to_hex(n)), 9, '0'), 'stale ' || n, '{}'
               FROM generate_series(0, 119) n"""
        )
        before = await conn.fetch("SELECT *, xmin::text AS x FROM public.products ORDER BY id")
        path = data.write(tmp_path / "c.ndjson", catalog(150, start=10))
        summary = await run(
            pg_dsn, path, "dry", dry_run=True, delete_missing=True, max_delete_fraction=1
        )
        # Stored rows have no content hash yet: the first real run rewrites each of them once.
        assert (summary["updated"], summary["inserted"], summary["deleted"]) == (110, 40, 10)
        after = await conn.fetch("SELECT *, xmin::text AS x FROM public.products ORDER BY id")
        assert after == before
        assert await conn.fetchval("SELECT to_regclass('public.catalogsync_runs')") is None
    finally:
        await conn.close()


async def test_row_level_security_only_on_supabase(pg_dsn: str) -> None:
    tables = Tables.for_table("public.products")
    conn = await asyncpg.connect(pg_dsn)
    try:
        assert await migrate(conn, tables) == ALL_MIGRATIONS
        assert not await conn.fetchval(
            "SELECT relrowsecurity FROM pg_class WHERE oid = 'public.products'::regclass"
        )
        await conn.execute("CREATE ROLE service_role BYPASSRLS; CREATE ROLE authenticated")
        try:
            assert await migrate(conn, tables) == []
            for table in (
                "products",
                "catalogsync_runs",
                "catalogsync_rejects",
                "catalogsync_changes",
            ):
                assert await conn.fetchval(
                    "SELECT relrowsecurity FROM pg_class WHERE oid = $1::regclass", table
                )
                policies = await conn.fetch(
                    "SELECT policyname, roles::text[] AS roles FROM pg_policies "
                    "WHERE tablename = $1",
                    table,
                )
                assert [(p["policyname"], p["roles"]) for p in policies] == [
                    ("catalogsync_service_role_all", ["service_role"])
                ]
            await migrate(conn, tables)  # idempotent: still one policy
            assert await conn.fetchval("SELECT count(*) FROM pg_policies") == 5
        finally:
            await conn.execute("DROP OWNED BY service_role, authenticated")
            await conn.execute("DROP ROLE service_role; DROP ROLE authenticated")
    finally:
        await conn.close()


async def test_advisory_lock_keeps_a_second_maintainer_out(pg_dsn: str, tmp_path: Path) -> None:
    path = data.write(tmp_path / "c.ndjson", catalog(100))
    holder = await asyncpg.connect(
        pg_dsn, server_settings={"application_name": "catalogsync-maintainer other-run"}
    )
    try:
        await acquire_table_lock(holder, Tables.for_table("products"))
        with pytest.raises(TableLocked) as caught:
            await run(pg_dsn, path, "second")
        assert isinstance(caught.value, TransientError)
        assert caught.value.exit_code == ExitCode.TRANSIENT
        assert "other-run" in str(caught.value)
        # Another table is not blocked.
        assert (await run(pg_dsn, path, "other", table="products_b"))["inserted"] == 100
    finally:
        await holder.close()
    assert (await run(pg_dsn, path, "after"))["inserted"] == 100


def _cli(dsn: str, tmp_path: Path, run_id: str, path: Path, **env: str) -> subprocess.Popen[bytes]:
    environment = {
        **os.environ,
        "DATABASE_URL": dsn,
        "SYNC_RUN_ID": run_id,
        "MAINTAINER_CHUNK_SIZE": "100",
        "CATALOGSYNC_TERMINATION_MESSAGE_PATH": str(tmp_path / f"{run_id}.term"),
        "CATALOGSYNC_LOG_FORMAT": "json",
        **env,
    }
    source = [] if str(path) == "-" else ["--file", str(path)]
    return subprocess.Popen(
        [sys.executable, "-m", "catalogsync", "maintain", *source],
        env=environment,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )


async def test_cli_writes_the_summary_to_the_termination_message(
    pg_dsn: str, tmp_path: Path
) -> None:
    path = data.write(tmp_path / "c.ndjson", catalog(250))
    process = _cli(pg_dsn, tmp_path, "cli", path)
    _, stderr = await asyncio.to_thread(process.communicate, timeout=120)
    assert process.returncode == 0, stderr.decode()
    message = orjson.loads((tmp_path / "cli.term").read_bytes())
    assert message["ok"] is True
    assert (message["inserted"], message["processed"], message["chunksDone"]) == (250, 250, 3)

    bad = data.write(tmp_path / "bad.ndjson", [b"nonsense"] * 10)
    process = _cli(pg_dsn, tmp_path, "bad", bad)
    await asyncio.to_thread(process.communicate, timeout=120)
    assert process.returncode == ExitCode.INVALID_DATA
    message = orjson.loads((tmp_path / "bad.term").read_bytes())
    assert message["reason"] == "TooManyInvalidLines"


async def _committed_chunks(conn: asyncpg.Connection, run_id: str) -> set[int]:
    try:
        found = await conn.fetch(
            "SELECT chunk FROM catalogsync_chunks "
            "WHERE run_id = $1 AND table_name = 'public.products'",
            run_id,
        )
    except asyncpg.UndefinedTableError:
        return set()
    return {row["chunk"] for row in found}


async def _blocked_by(conn: asyncpg.Connection, holder: asyncpg.Connection) -> int:
    """How many sessions wait for a lock that ``holder`` holds."""
    found = await conn.fetchval(
        "SELECT count(*) FROM pg_stat_activity WHERE $1 = ANY(pg_blocking_pids(pid))",
        holder.get_server_pid(),
    )
    return int(found)


async def _maintainer_sessions(conn: asyncpg.Connection, run_id: str) -> int:
    found = await conn.fetchval(
        "SELECT count(*) FROM pg_stat_activity WHERE application_name LIKE $1",
        f"catalogsync-maintainer {run_id} %",
    )
    return int(found)


def _interleaved_catalog() -> list[dict[str, Any]]:
    """600 products over 600 earlier ones: every 100-line chunk of the first six has 50 stored
    products (two thirds changed) and 50 new ones; then 400 new ones, and product 4 once more
    (line 701, chunk 7) so that a duplicate spans chunks."""
    stored, new = range(0, 600, 2), range(600, 1200, 2)
    v2 = [data.product(n, version=n % 3) for pair in zip(stored, new, strict=True) for n in pair]
    v2 += catalog(400, start=2000)
    v2.insert(700, data.product(4, version=5))
    return v2


async def test_killed_maintainer_resumes_to_the_same_table(pg_dsn: str, tmp_path: Path) -> None:
    """``kill -9`` with chunk ``k`` mid-transaction and chunk ``k + 1`` already committed.

    No timing is involved: the maintainer reads the catalog from a pipe that holds only chunks
    0 to ``k + 1`` (and one line more, so that chunk ``k + 1`` is complete), and a row that chunk
    ``k`` rewrites is locked by the test. The run therefore stops in a known state, with chunk
    ``k``'s inserts done but uncommitted, and is killed there; the rerun must end with the table
    and the counts of an uninterrupted run.
    """
    base, v2 = catalog(600), _interleaved_catalog()
    lines = data.lines(v2)
    reference_path = data.write(tmp_path / "ref.ndjson", lines)
    seed_path = data.write(tmp_path / "base.ndjson", base)
    for table in ("products", "reference"):
        await run(pg_dsn, seed_path, f"seed-{table}", table=table)
    reference = await run(pg_dsn, reference_path, "ref", table="reference", connections=2)

    k = random.Random().randint(1, 5)
    stored_in_k = range(k * 100, (k + 1) * 100, 2)  # lines k*100+1.. hold products n, 600 + n
    locked = data.product_id(next(n for n in stored_in_k if n % 3))  # changed (version n % 3)
    new_in_k = [data.product_id(600 + n) for n in stored_in_k]
    sent = b"".join(line + b"\n" for line in lines[: (k + 2) * 100 + 1])

    blocker = await asyncpg.connect(pg_dsn)
    watcher = await asyncpg.connect(pg_dsn)
    lock = blocker.transaction()
    await lock.start()
    await blocker.execute("SELECT 1 FROM public.products WHERE id = $1 FOR UPDATE", locked)
    fifo = tmp_path / "v2.ndjson"
    os.mkfifo(fifo)
    process = _cli(pg_dsn, tmp_path, "v2", fifo, MAINTAINER_CONNECTIONS="2")
    killed = threading.Event()

    def feed() -> None:
        # The pipe stays open until the kill, so the maintainer waits for more lines, not EOF.
        with contextlib.suppress(BrokenPipeError), fifo.open("wb") as pipe:
            pipe.write(sent)
            pipe.flush()
            killed.wait(180)

    writer = threading.Thread(target=feed, daemon=True)
    writer.start()
    try:
        expected_chunks = {*range(k), k + 1}
        deadline = time.monotonic() + 120
        while (
            await _committed_chunks(watcher, "v2") != expected_chunks
            or await _blocked_by(watcher, blocker) == 0
        ):
            assert process.poll() is None, process.communicate()[1].decode()[-2000:]
            assert time.monotonic() < deadline, await _committed_chunks(watcher, "v2")
            await asyncio.sleep(0.02)
        process.send_signal(signal.SIGKILL)
        await asyncio.to_thread(process.wait, 30)
        killed.set()
        await asyncio.to_thread(writer.join, 30)
        await lock.rollback()
        while await _maintainer_sessions(watcher, "v2"):
            assert time.monotonic() < deadline, "the killed maintainer's sessions linger"
            await asyncio.sleep(0.02)
        assert await _committed_chunks(watcher, "v2") == expected_chunks
        present = await watcher.fetchval(
            "SELECT count(*) FROM public.products WHERE id = ANY($1::text[])", new_in_k
        )
        assert present == 0, "chunk k's uncommitted inserts survived the kill"
    finally:
        killed.set()
        await blocker.close()
        await watcher.close()
    assert process.returncode == -signal.SIGKILL

    fifo.unlink()
    fifo.write_bytes(b"".join(line + b"\n" for line in lines))
    resumed = await run(pg_dsn, fifo, "v2", connections=2)
    assert resumed["resumed"] is True
    for key in ("processed", "inserted", "updated", "skipped", "duplicates", "chunksDone"):
        assert resumed[key] == reference[key], (key, k)

    def comparable(table_rows: dict[str, dict[str, Any]]) -> dict[str, Any]:
        return {k: (mapped(v), v["content_hash"], v["deleted_at"]) for k, v in table_rows.items()}

    assert comparable(await rows(pg_dsn)) == comparable(await rows(pg_dsn, "reference"))
    assert (await rows(pg_dsn))[data.product_id(4)]["name"] == "Product 4 v5"


async def test_rerun_of_a_finished_run_changes_nothing(pg_dsn: str, tmp_path: Path) -> None:
    path = data.write(tmp_path / "c.ndjson", catalog(150))
    first = await run(pg_dsn, path, "same")
    before = await rows(pg_dsn)
    again = await run(pg_dsn, path, "same")
    assert again["inserted"] == first["inserted"] == 150
    assert await rows(pg_dsn) == before


async def test_invalid_data_error_is_the_exit_code_3_kind() -> None:
    assert issubclass(TooManyInvalid, InvalidDataError)
    assert issubclass(TooManyDeletes, InvalidDataError)


async def test_cli_reads_the_run_object_from_storage(pg_dsn: str, tmp_path: Path) -> None:
    objects = tmp_path / "storage" / "medipim-raw" / "au" / "runs"
    objects.mkdir(parents=True)
    data.write(objects / "nightly.ndjson", catalog(120))
    storage = {"STORAGE_URL": f"file://{tmp_path / 'storage'}", "STORAGE_PREFIX": "au/"}
    process = _cli(pg_dsn, tmp_path, "nightly", Path("-"), **storage)
    _, stderr = await asyncio.to_thread(process.communicate, timeout=120)
    assert process.returncode == 0, stderr.decode()
    message = orjson.loads((tmp_path / "nightly.term").read_bytes())
    assert (message["inserted"], message["object"]) == (120, "au/runs/nightly.ndjson")

    missing = _cli(pg_dsn, tmp_path, "absent", Path("-"), **storage)
    _, stderr = await asyncio.to_thread(missing.communicate, timeout=120)
    assert missing.returncode == ExitCode.PERMANENT
    assert b"absent.ndjson" in stderr


class Recorder:
    def __init__(self) -> None:
        self.updates: list[Snapshot] = []
        self.finished: list[tuple[Snapshot, Mapping[str, Any]]] = []

    async def update(self, snapshot: Snapshot) -> None:
        self.updates.append(snapshot)

    async def finish(self, snapshot: Snapshot, summary: Mapping[str, Any]) -> None:
        self.finished.append((snapshot, summary))


async def test_progress_uses_the_status_field_names(pg_dsn: str, tmp_path: Path) -> None:
    path = data.write(tmp_path / "c.ndjson", catalog(450))
    opts = Options(table="products", run_id="p", object_key="c", chunk_size=100, connections=1)
    recorder = Recorder()
    await maintain(pg_dsn, file_source(path), opts, recorder)
    names = {"total", "processed", "inserted", "updated", "skipped", "deleted", "invalid"}
    assert [s.counts["chunksDone"] for s in recorder.updates] == [1, 2, 3, 4, 5]
    assert all(set(s.counts) == {*names, "chunksDone"} for s in recorder.updates)
    assert [s.done for s in recorder.updates] == [100, 200, 300, 400, 450]
    assert {(s.stage, s.total, s.unit) for s in recorder.updates} == {
        ("maintainer", 450, "products")
    }
    [(last, summary)] = recorder.finished
    assert last.counts["inserted"] == summary["inserted"] == 450


def test_migrations_are_numbered_once_each_in_sequence() -> None:
    """A second file with a taken number would be recorded as applied without ever running."""
    assert list(range(1, len(ALL_MIGRATIONS) + 1)) == ALL_MIGRATIONS
