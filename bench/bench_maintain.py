"""How fast ``catalogsync maintain`` applies a full catalog, beside three baselines in one run.

Every method loads the same three files into its own database on one throwaway PostgreSQL server
(fsync and synchronous commit on, shared_buffers 1 GB), each in a process of its own so that peak
RSS is that process's alone (``wait4``):

* ``floor``: raw ``COPY (id, jsonb)`` into an empty table with a primary key, one commit per
  5,000 lines: the least any loader must pay to get the documents in (cold load only).
* ``common``: per chunk of 5,000, an ``executemany`` of ``INSERT … ON CONFLICT DO UPDATE``.
* ``original``: the original sync's shape: per batch of 500, a lookup of the stored
  ``metaUpdatedAt``, one bulk insert of the new rows, one ``UPDATE`` per changed row.
* ``maintainer``: ``catalogsync maintain --file``, as the Job runs it.

Phases: ``cold`` (empty table), ``unchanged`` (the same catalog downloaded again: only the
pre-signed embed URLs differ) and ``changed`` (the next version, 1 % of the products changed).
Times are reported as ratios to the floor's cold load; WAL is ``pg_current_wal_insert_lsn``
before and after. Catalogs come from the simulator's generator (cached under ~/.cache).

    nice .venv/bin/python -m bench.bench_maintain                    # both profiles, ~600 MB each
    nice .venv/bin/python -m bench.bench_maintain --profile wide --products 30000
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import re
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import asyncpg
import orjson

from catalogsync.common.tables import Tables
from catalogsync.dev.postgres import LocalPostgres
from catalogsync.maintainer.records import COLUMNS, scan, to_row
from catalogsync.maintainer.schema import migrate

METHODS = ("floor", "common", "original", "maintainer")
PHASES = ("cold", "unchanged", "changed")
CHUNK = 5000
ORIGINAL_BATCH = 500
TABLE = "public.products"
TARGETS = {"cold": 1.3, "unchanged": 0.3}
RSS_TARGET_MB = 250
WRAPPER = re.compile(rb'\{"meta":\{"total":\d+,"index":\d+\},"result":')


# --- catalogs -----------------------------------------------------------------------------------


def write_catalogs(profile: str, overrides: dict[str, int], workdir: Path) -> dict[str, Path]:
    """The three inputs: version 1 twice (re-signed embed URLs) and version 2 (1 % changed)."""
    from catalogsync.dev.simulator.catalog import Catalog
    from catalogsync.dev.simulator.generator import STATUS_CODES
    from catalogsync.dev.simulator.stream import Signer, stream_blocks
    from catalogsync.dev.simulator.versions import Mutation

    mutation = Mutation(changed=0.01, added=0.0, removed=0.0, replaced=0.0)
    first = Catalog.profile(profile, mutation=mutation, **overrides)
    files = {}
    for phase, catalog, ts in (
        ("cold", first, 1_760_000_000),
        ("unchanged", first, 1_760_086_400),
        ("changed", first.at(2), 1_760_172_800),
    ):
        snapshot = catalog.snapshot()
        active = STATUS_CODES["active"]
        positions = [i for i in range(snapshot.count) if snapshot.status[i] == active]
        path = workdir / f"{phase}.ndjson"
        with path.open("wb") as out:
            for block in stream_blocks(
                snapshot, positions, Signer(b"bench", ts), block_size=1 << 20
            ):
                out.write(block)
        files[phase] = path
    return files


def read_lines(path: Path) -> Iterator[bytes]:
    pending = b""
    with path.open("rb") as source:
        while data := source.read(1 << 20):
            parts = (pending + data).split(b"\n")
            pending = parts.pop()
            yield from (p for p in parts if p)
    if pending:
        yield pending


def chunks(path: Path, size: int) -> Iterator[list[bytes]]:
    batch: list[bytes] = []
    for line in read_lines(path):
        batch.append(line)
        if len(batch) == size:
            yield batch
            batch = []
    if batch:
        yield batch


# --- baselines (run in a child process) --------------------------------------------------------


async def floor(dsn: str, path: Path) -> None:
    conn = await asyncpg.connect(dsn)
    await conn.execute("CREATE TABLE IF NOT EXISTS floor (id text PRIMARY KEY, raw jsonb)")
    for batch in chunks(path, CHUNK):
        records = []
        for line in batch:
            scanned = scan(line)
            records.append((scanned.id, bytes(scanned.body).decode()))
        async with conn.transaction():
            await conn.copy_records_to_table("floor", records=records)
    await conn.close()


def _rows(batch: list[bytes]) -> list[tuple[Any, ...]]:
    """Mapped rows without the content hash (not theirs), ``raw`` as text for the text codec."""
    rows = []
    for line in batch:
        row, _ = to_row(scan(line))
        rows.append((*row[:14], bytes(row[14]).decode()))
    return rows


def _quoted(names: tuple[str, ...]) -> str:
    return ", ".join(f'"{n}"' for n in names)


async def common(dsn: str, path: Path) -> None:
    names = COLUMNS[:-1]
    updates = ", ".join(f'"{n}" = EXCLUDED."{n}"' for n in names if n != "id")
    params = ", ".join(f"${i}" for i in range(1, len(names) + 1))
    sql = (
        f"INSERT INTO {TABLE} ({_quoted(names)}, updated_at) VALUES ({params}, now()) "
        f"ON CONFLICT (id) DO UPDATE SET {updates}, updated_at = now()"
    )
    conn = await asyncpg.connect(dsn)
    for batch in chunks(path, CHUNK):
        async with conn.transaction():
            await conn.executemany(sql, _rows(batch))
    await conn.close()


async def original(dsn: str, path: Path) -> None:
    names = COLUMNS[:-1]
    types = [
        "timestamptz" if n in ("createdAt", "metaUpdatedAt") else "jsonb" if n == "raw" else "text"
        for n in names
    ]
    unnest = ", ".join(f"${i}::{t}[]" for i, t in enumerate(types, 1))
    insert = (
        f"INSERT INTO {TABLE} ({_quoted(names)}, updated_at) SELECT *, now() FROM unnest({unnest})"
    )
    update = f"UPDATE {TABLE} SET name = $2, raw = $3, updated_at = now() WHERE id = $1"
    conn = await asyncpg.connect(dsn)
    for batch in chunks(path, ORIGINAL_BATCH):
        rows = _rows(batch)
        stored = {
            r["id"]: r["metaUpdatedAt"]
            for r in await conn.fetch(
                f'SELECT id, "metaUpdatedAt" FROM {TABLE} WHERE id = ANY($1::text[])',
                [r[0] for r in rows],
            )
        }
        new = [r for r in rows if r[0] not in stored]
        if new:
            await conn.execute(insert, *(list(column) for column in zip(*new, strict=True)))
        for r in rows:
            if r[0] in stored and stored[r[0]] != r[13]:
                await conn.execute(update, r[0], r[1], r[14])
    await conn.close()


BASELINES = {"floor": floor, "common": common, "original": original}


# --- measuring ----------------------------------------------------------------------------------


def run_child(method: str, dsn: str, path: Path, phase: str, workdir: Path) -> dict[str, Any]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("MAINTAINER_", "DATABASE_"))}
    if method == "maintainer":
        command = [sys.executable, "-m", "catalogsync", "maintain", "--file", str(path)]
        env |= {
            "DATABASE_URL": dsn,
            "SYNC_RUN_ID": f"bench-{phase}",
            "CATALOGSYNC_LOG_FORMAT": "json",
            "CATALOGSYNC_TERMINATION_MESSAGE_PATH": str(workdir / f"{phase}.term"),
        }
    else:
        command = [sys.executable, "-m", "bench.bench_maintain", "--child", method, dsn, str(path)]
    started = time.perf_counter()
    with (workdir / f"{method}-{phase}.log").open("wb") as log:
        child = subprocess.Popen(command, env=env, stderr=log, stdout=log)
        _, status, usage = os.wait4(child.pid, 0)
    seconds = time.perf_counter() - started
    code = os.waitstatus_to_exitcode(status)
    if code != 0:
        raise RuntimeError(f"{method} {phase} exited {code}; see {workdir}/{method}-{phase}.log")
    result: dict[str, Any] = {"seconds": seconds, "peak_rss_mb": usage.ru_maxrss / 1024}
    if method == "maintainer":
        result["summary"] = orjson.loads((workdir / f"{phase}.term").read_bytes())
    return result


async def measure(
    server: LocalPostgres, method: str, files: dict[str, Path], workdir: Path
) -> dict[str, Any]:
    admin = await asyncpg.connect(server.dsn)
    await admin.execute(f"DROP DATABASE IF EXISTS bench_{method} WITH (FORCE)")
    await admin.execute(f"CREATE DATABASE bench_{method}")
    dsn = server.dsn_for(f"bench_{method}")
    if method in ("common", "original"):
        conn = await asyncpg.connect(dsn)
        await migrate(conn, Tables.for_table(TABLE))
        await conn.close()
    results: dict[str, Any] = {}
    for phase in PHASES if method != "floor" else ("cold",):
        await admin.execute("CHECKPOINT")
        before = await admin.fetchval("SELECT pg_current_wal_insert_lsn()")
        result = await asyncio.to_thread(run_child, method, dsn, files[phase], phase, workdir)
        result["wal_bytes"] = int(
            await admin.fetchval("SELECT pg_current_wal_insert_lsn() - $1::pg_lsn", before)
        )
        results[phase] = result
        print(f"  {method:10s} {phase:9s} {result['seconds']:7.2f} s", file=sys.stderr)
    await admin.execute(f"DROP DATABASE bench_{method} WITH (FORCE)")
    await admin.close()
    return results


async def bench_profile(
    profile: str, overrides: dict[str, int], methods: list[str]
) -> dict[str, Any]:
    with tempfile.TemporaryDirectory(prefix="bench-maintain-") as tmp:
        workdir = Path(tmp)
        began = time.perf_counter()
        # Rendered in a child: a child's peak RSS counts its parent's at fork time, so this
        # process stays small for the measured children it starts.
        command = [sys.executable, "-m", "bench.bench_maintain", "--catalogs", profile]
        await asyncio.to_thread(
            subprocess.run, [*command, str(workdir), json.dumps(overrides)], check=True
        )
        files = {phase: workdir / f"{phase}.ndjson" for phase in PHASES}
        print(f"{profile}: catalogs ready in {time.perf_counter() - began:.0f} s", file=sys.stderr)
        products = sum(1 for _ in read_lines(files["cold"]))
        size = files["cold"].stat().st_size
        settings = {"max_wal_size": "16GB", "checkpoint_timeout": "1h"}
        with LocalPostgres(shared_buffers="1GB", settings=settings) as server:
            measured = {m: await measure(server, m, files, workdir) for m in methods}
    floor_s = measured["floor"]["cold"]["seconds"] if "floor" in measured else None
    table = []
    for method, phases in measured.items():
        for phase, r in phases.items():
            row = {
                "method": method,
                "phase": phase,
                "seconds": round(r["seconds"], 2),
                "products_per_s": round(products / r["seconds"]),
                "ratio_to_floor": round(r["seconds"] / floor_s, 3) if floor_s else None,
                "wal_mb": round(r["wal_bytes"] / 1e6, 1),
                "peak_rss_mb": round(r["peak_rss_mb"], 1),
            }
            if "summary" in r:
                s = r["summary"]
                row["counts"] = {k: s[k] for k in ("inserted", "updated", "skipped")}
            table.append(row)
    return {
        "profile": profile,
        "products": products,
        "bytes": size,
        "overrides": overrides,
        "results": table,
    }


def verdicts(run: dict[str, Any]) -> dict[str, bool]:
    rows = {(r["method"], r["phase"]): r for r in run["results"]}
    ours = {p: rows.get(("maintainer", p)) for p in PHASES}
    out: dict[str, bool] = {}
    for phase, limit in TARGETS.items():
        row = ours[phase]
        if row is not None and row["ratio_to_floor"] is not None:
            out[f"{phase}<= {limit}x floor"] = row["ratio_to_floor"] <= limit
    if ours["unchanged"] and ours["changed"]:
        out["changed within 20% of unchanged"] = (
            ours["changed"]["seconds"] <= 1.2 * ours["unchanged"]["seconds"]
        )
        out["unchanged WAL < 5 MB"] = ours["unchanged"]["wal_mb"] < 5
    out["peak RSS <= 250 MB"] = all(
        r["peak_rss_mb"] <= RSS_TARGET_MB for r in ours.values() if r is not None
    )
    return out


def markdown(run: dict[str, Any]) -> str:
    lines = [
        f"{run['profile']}: {run['products']:,} products, {run['bytes'] / 1e6:.0f} MB",
        "",
        "| method | phase | seconds | products/s | x floor | WAL MB | peak RSS MB |",
        "|---|---|---:|---:|---:|---:|---:|",
    ]
    for r in run["results"]:
        lines.append(
            f"| {r['method']} | {r['phase']} | {r['seconds']} | {r['products_per_s']:,} | "
            f"{r['ratio_to_floor']} | {r['wal_mb']} | {r['peak_rss_mb']} |"
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["--catalogs"]:
        write_catalogs(argv[1], json.loads(argv[3]), Path(argv[2]))
        return 0
    if argv[:1] == ["--child"]:
        method, dsn, path = argv[1:4]
        asyncio.run(BASELINES[method](dsn, Path(path)))
        return 0
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--profile", choices=["au", "wide", "small"], action="append")
    p.add_argument("--products", type=int)
    p.add_argument("--line-bytes", type=int)
    p.add_argument("--method", choices=METHODS, action="append")
    args = p.parse_args(argv)
    overrides = {}
    if args.products:
        overrides["products"] = args.products
    if args.line_bytes:
        overrides["line_bytes"] = args.line_bytes
    methods = args.method or list(METHODS)
    runs = []
    for profile in args.profile or ["au", "wide"]:
        run = asyncio.run(bench_profile(profile, overrides, methods))
        run["verdicts"] = verdicts(run)
        print(markdown(run), file=sys.stderr)
        runs.append(run)
    print(
        json.dumps({"benchmark": "maintain", "cpu_count": os.cpu_count(), "runs": runs}, indent=2)
    )
    return 0 if all(all(r["verdicts"].values()) for r in runs) else 1


if __name__ == "__main__":
    sys.exit(main())
