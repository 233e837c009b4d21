"""Full versus Incremental runs on a realistic day, against MediPim's real pace (1 MB/s).

Two tables hold the same catalog (version 1, loaded by one Full run and, for the second table, a
MaintainOnly pass over the same object). The simulator then lives through a realistic day (1 %
of the products changed, 0.1 % switched between active and inactive, every change stamped with
the moment it happened), and each table is brought up to date: the first by a Full run with
``deleteMissing`` (what a nightly run does without incremental mode), the second by an
Incremental run. Both run ``catalogsync fetch`` and ``catalogsync maintain`` as the Jobs do
(subprocesses), against the simulator throttled to 1 MB/s, ``file://`` storage and a local
PostgreSQL, one after the other in the same process, so the ratios compare like with like.
Reported: wall time of fetch + maintain and stream bytes received, Full over Incremental
(targets: at least 20x less time, 50x fewer bytes), and whether the two tables agree (every
active product the same, the Incremental table's other rows being the ones the Full run
soft-deleted because they are no longer active).

``--scale`` shrinks the ``au`` profile (127,000 products at ~5.6 KB per line): a Full run's
time and bytes grow with the catalog, an Incremental run's with the day's changes plus a fixed
cost of two process starts, so the ratios grow with the scale; run two scales to see it.

    nice .venv/bin/python -m bench.bench_incremental --scale 0.1 --scale 1
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
import tempfile
from pathlib import Path
from typing import Any

import asyncpg

from catalogsync.dev.demo import StageResult, run_stage
from catalogsync.dev.postgres import LocalPostgres
from catalogsync.dev.simulator import PROFILES, Catalog, Mutation, SimulatorServer

RATE = 1e6
"""Bytes per second: MediPim AU delivers 0.7-1 MB/s."""
DAY = Mutation(changed=0.01, status_changed=0.001, added=0.0, removed=0.0, replaced=0.0)
TARGETS = {"wall": 20.0, "bytes": 50.0}
ENV_PREFIXES = ("MEDIPIM_", "STORAGE_", "FETCHER_", "SYNC_", "CATALOGSYNC_", "DATABASE_")


async def stage(command: str, env: dict[str, str], **extra: str) -> StageResult:
    result = await run_stage(command, command, env | extra)
    if not result.ok:
        raise RuntimeError(f"{command} {extra} failed ({result.exit_code}): {result.summary}")
    return result


async def sync(
    medipim: SimulatorServer, env: dict[str, str], run_id: str, **extra: str
) -> dict[str, Any]:
    """One fetch + maintain; its wall time and the stream bytes it received."""
    before = medipim.bytes_sent
    fetched = await stage("fetch", env, SYNC_RUN_ID=run_id, **extra)
    maintained = await stage("maintain", env, SYNC_RUN_ID=run_id, **extra)
    return {
        "seconds": round(fetched.seconds + maintained.seconds, 2),
        "fetch_seconds": round(fetched.seconds, 2),
        "maintain_seconds": round(maintained.seconds, 2),
        "bytes": medipim.bytes_sent - before,
        "records": fetched.summary["records"],
        "mode": fetched.summary["mode"],
        "inserted": maintained.summary["inserted"],
        "updated": maintained.summary["updated"],
        "skipped": maintained.summary["skipped"],
        "deleted": maintained.summary["deleted"],
        "changes": maintained.summary["changes"],
    }


async def tables_agree(dsn: str) -> bool:
    conn = await asyncpg.connect(dsn)
    try:
        full = await conn.fetch("SELECT id, status, content_hash, deleted_at FROM full_products")
        incremental = await conn.fetch("SELECT id, status, content_hash FROM products")
    finally:
        await conn.close()
    live = {r["id"]: r["content_hash"] for r in full if r["deleted_at"] is None}
    active = {r["id"]: r["content_hash"] for r in incremental if r["status"] == "active"}
    others = {r["id"] for r in incremental if r["status"] != "active"}
    # Products no longer active: soft-deleted by the Full run, or never in its table (changed
    # while inactive); the Incremental run keeps them with their status.
    return live == active and not others & set(live)


async def bench_scale(scale: float, workdir: Path) -> dict[str, Any]:
    au = PROFILES["au"]
    catalog = Catalog(products=round(au.products * scale), line_bytes=au.line_bytes, mutation=DAY)
    store = workdir / "store"
    (store / "medipim-raw").mkdir(parents=True)
    with LocalPostgres(root=workdir / "postgres") as pg:
        async with SimulatorServer(catalog, throughput=RATE, rate_limit=None) as medipim:
            env = {k: v for k, v in os.environ.items() if not k.startswith(ENV_PREFIXES)}
            env |= medipim.env() | {
                "STORAGE_URL": store.as_uri(),
                "DATABASE_URL": pg.dsn,
                "FETCHER_SCRATCH_DIR": str(workdir),
                "CATALOGSYNC_LOG_FORMAT": "json",
                "MAINTAINER_CONNECTIONS": "1",  # the machine is shared: one core for PostgreSQL
            }
            full_table = {"DATABASE_TABLE": "public.full_products"}
            initial = await sync(medipim, env, "day-0", **full_table)
            await stage("maintain", env, SYNC_RUN_ID="day-0", MAINTAINER_OBJECT="runs/day-0.ndjson")
            changes = (await asyncio.to_thread(medipim.advance)).changes()
            full = await sync(medipim, env, "day-1-full", MAINTAINER_DELETE_MISSING="true",
                              MAINTAINER_MAX_DELETE_FRACTION="1", **full_table)  # fmt: skip
            incremental = await sync(medipim, env, "day-1-incremental", FETCHER_MODE="Incremental")
            agree = await tables_agree(pg.dsn)
    ratios = {
        "wall": round(full["seconds"] / incremental["seconds"], 1),
        "bytes": round(full["bytes"] / max(incremental["bytes"], 1), 1),
    }
    return {
        "scale": scale,
        "products": catalog.products,
        "day": {"changed": len(changes.changed), "status_changed": len(changes.status_changed)},
        "initial_full": initial,
        "full": full,
        "incremental": incremental,
        "ratios": ratios,
        "targets_met": {k: ratios[k] >= v for k, v in TARGETS.items()},
        "tables_agree": agree,
    }


async def amain(scales: list[float]) -> list[dict[str, Any]]:
    results = []
    for scale in scales:
        with tempfile.TemporaryDirectory(prefix="bench-incremental-") as tmp:
            results.append(await bench_scale(scale, Path(tmp)))
    return results


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--scale", type=float, action="append", help="share of the au profile")
    args = p.parse_args(argv)
    results = asyncio.run(amain(args.scale or [0.1]))
    report = {"benchmark": "incremental", "rate_mb_per_s": RATE / 1e6, "runs": results}
    print(json.dumps(report, indent=2))
    return 0 if all(r["tables_agree"] for r in results) else 1


if __name__ == "__main__":
    sys.exit(main())
