"""A run resumes, or returns its stored summary, only on the very object it started on.

Key and size are not enough: a catalog republished under the same key with two prices changed has
the same size. The run row records the object's identity (its ``sha256`` metadata and ETag) and a
run that meets another identity starts over.
"""

from __future__ import annotations

import asyncio
import hashlib
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import asyncpg
import orjson
import pytest

from catalogsync.common.errors import TransientError
from catalogsync.common.storage import FileStorage
from catalogsync.maintainer.pipeline import Options, maintain
from tests import maintainer_data as data
from tests.test_maintainer import _cli, rows

PRODUCTS = 600
CHANGED = (50, 550)
"""One product before the checkpoint the interrupted run leaves, one after it."""


def catalogs() -> tuple[bytes, bytes]:
    """Two catalogs of the same size: the second renames the products in ``CHANGED``."""
    first = b"".join(
        line + b"\n" for line in data.lines([data.product(n) for n in range(PRODUCTS)])
    )
    second = first
    for n in CHANGED:
        second = second.replace(b'"Product %d v0"' % n, b'"Product %d v9"' % n)
    assert second != first
    assert len(second) == len(first)
    return first, second


async def cut_after(content: bytes, lines: int) -> AsyncIterator[bytes]:
    """The object's first ``lines`` lines, then a dropped connection."""
    head = b"".join(line + b"\n" for line in content.split(b"\n")[:lines])
    yield head
    raise TransientError("connection dropped", reason="StorageUnavailable")


async def whole(content: bytes) -> AsyncIterator[bytes]:
    yield content


def options(identity: str, size: int) -> Options:
    return Options(
        table="products",
        run_id="mo1",
        object_key="latest.ndjson",
        object_size=size,
        object_identity=identity,
        chunk_size=100,
        connections=1,
    )


def names(stored: dict[str, dict[str, Any]]) -> dict[int, str]:
    return {n: stored[data.product_id(n)]["name"] for n in CHANGED}


async def test_an_interrupted_run_starts_over_on_a_changed_object(pg_dsn: str) -> None:
    first, second = catalogs()
    with pytest.raises(TransientError):
        await maintain(pg_dsn, cut_after(first, 320), options("sha256:aaa", len(first)))
    conn = await asyncpg.connect(pg_dsn)
    try:
        committed = await conn.fetchval("SELECT count(*) FROM catalogsync_chunks")
        assert committed >= 1  # chunk 0 (product 50) was applied before the cut
    finally:
        await conn.close()

    summary = await maintain(pg_dsn, whole(second), options("sha256:bbb", len(second)))
    assert summary["resumed"] is False
    assert names(await rows(pg_dsn)) == {50: "Product 50 v9", 550: "Product 550 v9"}
    assert summary["processed"] == PRODUCTS
    conn = await asyncpg.connect(pg_dsn)
    try:
        identity = await conn.fetchval("SELECT object_identity FROM catalogsync_runs")
    finally:
        await conn.close()
    assert identity == "sha256:bbb"


async def test_an_interrupted_run_resumes_on_the_same_object(pg_dsn: str) -> None:
    first, _ = catalogs()
    with pytest.raises(TransientError):
        await maintain(pg_dsn, cut_after(first, 320), options("sha256:aaa", len(first)))
    summary = await maintain(pg_dsn, whole(first), options("sha256:aaa", len(first)))
    assert summary["resumed"] is True
    assert summary["processed"] == PRODUCTS


def publish(root: Path, content: bytes) -> None:
    """``latest.ndjson`` as the fetcher leaves it in file:// storage: bytes plus sha256 metadata."""
    bucket = root / "medipim-raw"
    bucket.mkdir(parents=True, exist_ok=True)
    (bucket / "latest.ndjson").write_bytes(content)
    metadata = {"sha256": hashlib.sha256(content).hexdigest(), "records": str(PRODUCTS)}
    (bucket / "latest.ndjson.meta.json").write_bytes(orjson.dumps(metadata))


async def test_a_succeeded_run_does_not_answer_for_changed_content(
    pg_dsn: str, tmp_path: Path
) -> None:
    """``MAINTAINER_OBJECT=latest.ndjson SYNC_RUN_ID=mo1 catalogsync maintain``, twice, with the
    catalog republished in between: the second run applies it instead of its stored summary."""
    first, second = catalogs()
    root = tmp_path / "storage"
    env = {"STORAGE_URL": f"file://{root}", "MAINTAINER_OBJECT": "latest.ndjson"}

    async def maintain_cli() -> dict[str, Any]:
        process = _cli(pg_dsn, tmp_path, "mo1", Path("-"), **env)
        _, stderr = await asyncio.to_thread(process.communicate, timeout=120)
        assert process.returncode == 0, stderr.decode()[-2000:]
        message: dict[str, Any] = orjson.loads((tmp_path / "mo1.term").read_bytes())
        return message

    publish(root, first)
    assert (await maintain_cli())["inserted"] == PRODUCTS
    again = await maintain_cli()
    assert (again["resumed"], again["inserted"]) == (True, PRODUCTS)  # the stored summary

    publish(root, second)
    info = await FileStorage(root, "medipim-raw").info("latest.ndjson")
    assert info is not None
    assert info.size == len(first)
    changed = await maintain_cli()
    assert (changed["resumed"], changed["updated"], changed["inserted"]) == (False, 2, 0)
    assert names(await rows(pg_dsn)) == {50: "Product 50 v9", 550: "Product 550 v9"}
