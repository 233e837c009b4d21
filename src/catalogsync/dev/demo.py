"""``catalogsync demo``: a full sync on this machine, exactly as the Jobs run it.

The demo starts what a cluster would otherwise provide (a PostgreSQL server, the MediPim simulator
and a local file store) and then runs ``catalogsync fetch`` and ``catalogsync maintain`` as
subprocesses with the same environment contract the operator gives its Jobs. Its state lives in
``--data-dir`` (default ``.demo/``), so a second run finds the products already loaded and skips
them. Any of ``MEDIPIM_URL``, ``STORAGE_URL`` or ``DATABASE_URL`` set in the environment replaces
the embedded server of that kind, which is how the same command talks to real services.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import shutil
import sys
import tempfile
import time
from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import orjson
from rich.console import Console
from rich.table import Table

from catalogsync.common.config import DEFAULT_BUCKET
from catalogsync.common.errors import ExitCode

DEMO_PRODUCTS, DEMO_LINE_BYTES = 50_000, 2_000
"""The default: ~85 MB of active products, a sync in about a minute."""
PROFILES = ("small", "au", "wide")


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="catalogsync demo",
        description="Run a full sync locally: embedded PostgreSQL, MediPim simulator, file store.",
    )
    p.add_argument(
        "--profile",
        choices=PROFILES,
        default="small",
        help="catalog size: small (~85 MB, about a minute), au or wide (~600 MB)",
    )
    p.add_argument(
        "--version",
        type=int,
        default=1,
        help="catalog version to serve; 2 and later change, add, remove and replace "
        "products, and the demo then soft-deletes what disappeared",
    )
    p.add_argument(
        "--data-dir",
        type=Path,
        default=Path(".demo"),
        help="where the database and the stored catalogs live between runs",
    )
    p.add_argument(
        "--products",
        type=int,
        default=DEMO_PRODUCTS,
        help="products in the small profile's catalog (default %(default)s)",
    )
    p.add_argument("--reset", action="store_true", help="start from an empty database and store")
    p.add_argument("--dry-run", action="store_true", help="count what would change, write nothing")
    return p


@dataclass
class StageResult:
    name: str
    exit_code: int
    seconds: float
    summary: dict[str, Any] = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        return self.exit_code == 0


@contextlib.asynccontextmanager
async def medipim(profile: str, version: int, products: int) -> AsyncIterator[dict[str, str]]:
    if os.environ.get("MEDIPIM_URL"):
        yield {}
        return
    from catalogsync.dev.simulator.catalog import Catalog
    from catalogsync.dev.simulator.server import SimulatorServer

    if profile == "small":
        catalog = Catalog(products=products, line_bytes=DEMO_LINE_BYTES, version=version)
    else:
        catalog = Catalog.profile(profile, version=version)
    print(f"preparing the simulated catalog ({catalog.products:,} products, version {version})...")
    async with SimulatorServer(catalog, rate_limit=None) as server:
        yield server.env()


@contextlib.asynccontextmanager
async def database(data_dir: Path) -> AsyncIterator[dict[str, str]]:
    if os.environ.get("DATABASE_URL"):
        yield {}
        return
    from catalogsync.dev.postgres import LocalPostgres

    server = LocalPostgres(root=data_dir / "postgres")
    await asyncio.to_thread(server.start)
    try:
        yield {"DATABASE_URL": server.dsn}
    finally:
        await asyncio.to_thread(server.stop)


def storage(data_dir: Path) -> dict[str, str]:
    if os.environ.get("STORAGE_URL"):
        return {}
    store = (data_dir / "storage").resolve()
    # file:// storage never creates a bucket; the demo's own store gets the default one.
    (store / os.environ.get("STORAGE_BUCKET", DEFAULT_BUCKET)).mkdir(parents=True, exist_ok=True)
    return {"STORAGE_URL": store.as_uri()}


async def run_stage(name: str, command: str, env: Mapping[str, str]) -> StageResult:
    """One job as a subprocess; its termination message is the summary we report."""
    with tempfile.NamedTemporaryFile(prefix=f"catalogsync-{name}-", suffix=".json") as summary:
        started = time.monotonic()
        process = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "catalogsync",
            command,
            env={**os.environ, **env, "CATALOGSYNC_TERMINATION_MESSAGE_PATH": summary.name},
        )
        code = await process.wait()
        seconds = time.monotonic() - started
        text = await asyncio.to_thread(Path(summary.name).read_bytes)
    return StageResult(name, code, seconds, orjson.loads(text) if text else {})


def summary_table(fetch: StageResult, maintain: StageResult | None) -> Table:
    table = Table(title="catalogsync demo")
    table.add_column("")
    table.add_column("value", justify="right")
    f = fetch.summary
    mb = f.get("bytes", 0) / 1e6
    table.add_row("products fetched", f"{f.get('records', 0):,}")
    table.add_row("bytes fetched", f"{mb:,.1f} MB")
    table.add_row("fetch time", f"{fetch.seconds:.1f} s ({mb / max(fetch.seconds, 1e-9):.1f} MB/s)")
    if maintain is not None:
        m = maintain.summary
        for key in ("inserted", "updated", "skipped", "deleted", "invalid"):
            table.add_row(key, f"{m.get(key, 0):,}")
        processed = m.get("processed", m.get("total", 0))
        rate = processed / max(maintain.seconds, 1e-9)
        table.add_row("maintain time", f"{maintain.seconds:.1f} s ({rate:,.0f} products/s)")
    return table


async def demo(args: argparse.Namespace) -> int:
    data_dir: Path = args.data_dir
    if args.reset:
        from catalogsync.dev.postgres import LocalPostgres

        cluster = LocalPostgres(root=data_dir / "postgres").cluster_dir()
        for path in (cluster, data_dir):
            await asyncio.to_thread(shutil.rmtree, path, ignore_errors=True)
    await asyncio.to_thread(data_dir.mkdir, parents=True, exist_ok=True)
    run_id = time.strftime("demo-%Y%m%d-%H%M%S")
    console = Console()
    async with (
        medipim(args.profile, args.version, args.products) as medipim_env,
        database(data_dir) as db_env,
    ):
        env = {
            **medipim_env,
            **db_env,
            **storage(data_dir),
            "SYNC_RUN_ID": run_id,
            "CATALOGSYNC_LOG_FORMAT": os.environ.get("CATALOGSYNC_LOG_FORMAT", "text"),
        }
        if args.version > 1:
            env["MAINTAINER_DELETE_MISSING"] = "true"
        if args.dry_run:
            env["MAINTAINER_DRY_RUN"] = "true"
        fetch = await run_stage("fetcher", "fetch", env)
        if not fetch.ok:
            console.print(f"[red]fetch failed ({fetch.exit_code}): {fetch.summary.get('message')}")
            return fetch.exit_code
        maintain = await run_stage("maintainer", "maintain", env)
        console.print(summary_table(fetch, maintain))
        if not maintain.ok:
            message = maintain.summary.get("message")
            console.print(f"[red]maintain failed ({maintain.exit_code}): {message}")
            return maintain.exit_code
    console.print(f"state kept in {data_dir}/: run again and unchanged products are skipped.")
    return int(ExitCode.OK)


def main(argv: list[str]) -> int:
    args = parser().parse_args(argv)
    try:
        return asyncio.run(demo(args))
    except KeyboardInterrupt:
        return int(ExitCode.TRANSIENT)
