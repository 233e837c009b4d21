"""``catalogsync demo``: a full sync on this machine, exactly as the Jobs run it.

The demo starts what a cluster would otherwise provide (a PostgreSQL server, the MediPim simulator
and a local file store) and then runs ``catalogsync fetch`` and ``catalogsync maintain`` as
subprocesses with the same environment contract the operator gives its Jobs. Its state lives in
``--data-dir`` (default ``.demo/``), one subdirectory per profile, so a second run finds the
products already loaded and skips them.

It uses only its embedded servers unless an option names another one (``--medipim-url``,
``--storage-url``, ``--database-url``): variables such as ``DATABASE_URL`` in the shell are
ignored, because a demo that writes simulated products into whatever database a shell happens to
name is a trap. It prints where it reads and writes before it starts.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import fcntl
import os
import shutil
import sys
import tempfile
import time
from collections.abc import AsyncIterator, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import orjson
from rich.console import Console
from rich.table import Table

from catalogsync.common import redact
from catalogsync.common.config import DEFAULT_BUCKET
from catalogsync.common.errors import ExitCode

DEMO_PRODUCTS, DEMO_LINE_BYTES = 50_000, 2_000
"""The default: ~85 MB of active products, a sync in about a minute."""
PROFILES = ("small", "au", "wide")
MARKER = ".catalogsync-demo"
"""Written into a data directory the demo created; ``--reset`` deletes nothing without it."""
CONTRACT_PREFIXES = ("MEDIPIM_", "STORAGE_", "DATABASE_", "FETCHER_", "MAINTAINER_", "SYNC_")
"""The jobs' variables; the shell's are not passed on, only what the demo decides."""


class DemoError(Exception):
    """A reason to stop before anything runs, worded for the person at the terminal."""


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
    p.add_argument(
        "--reset",
        action="store_true",
        help="start this profile from an empty database and store (only in a directory the "
        "demo created)",
    )
    p.add_argument(
        "--dry-run",
        action="store_true",
        help="count what would change: the catalog goes to a temporary store that is deleted "
        "afterwards, and no product, run or stored catalog is written",
    )
    p.add_argument(
        "--medipim-url",
        help="a real MediPim API instead of the simulator (key from MEDIPIM_API_KEY_ID and "
        "MEDIPIM_API_KEY_SECRET)",
    )
    p.add_argument(
        "--storage-url",
        help="real storage instead of the demo's directory (key from STORAGE_SERVICE_ROLE_KEY, "
        "bucket from STORAGE_BUCKET)",
    )
    p.add_argument("--database-url", help="a real PostgreSQL instead of the embedded one")
    return p


PASSED_WITH = {
    "medipim_url": ("MEDIPIM_API_KEY_ID", "MEDIPIM_API_KEY_SECRET", "MEDIPIM_FILTER"),
    "storage_url": ("STORAGE_SERVICE_ROLE_KEY", "STORAGE_BUCKET", "STORAGE_PREFIX"),
    "database_url": ("DATABASE_TABLE",),
}
"""Shell variables passed on only with the option that points at a real service."""


def base_environment(args: argparse.Namespace) -> dict[str, str]:
    """This process's environment without the jobs' variables, plus the few that go with an
    explicit ``--*-url`` option."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(CONTRACT_PREFIXES)}
    for option, names in PASSED_WITH.items():
        if getattr(args, option):
            env.update({name: os.environ[name] for name in names if name in os.environ})
    return env


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
async def medipim(args: argparse.Namespace) -> AsyncIterator[dict[str, str]]:
    if args.medipim_url:
        yield {"MEDIPIM_URL": args.medipim_url}
        return
    from catalogsync.dev.simulator.catalog import Catalog
    from catalogsync.dev.simulator.server import SimulatorServer

    version = args.version
    if args.profile == "small":
        catalog = Catalog(products=args.products, line_bytes=DEMO_LINE_BYTES, version=version)
    else:
        catalog = Catalog.profile(args.profile, version=version)
    print(f"preparing the simulated catalog ({catalog.products:,} products, version {version})...")
    async with SimulatorServer(catalog, rate_limit=None) as server:
        yield server.env()


@contextlib.asynccontextmanager
async def database(args: argparse.Namespace, state: Path) -> AsyncIterator[dict[str, str]]:
    if args.database_url:
        yield {"DATABASE_URL": args.database_url}
        return
    from catalogsync.dev.postgres import LocalPostgres

    server = LocalPostgres(root=state / "postgres")
    await asyncio.to_thread(server.start)
    try:
        yield {"DATABASE_URL": server.dsn}
    finally:
        await asyncio.to_thread(server.stop)


@contextlib.contextmanager
def storage(args: argparse.Namespace, state: Path) -> Iterator[dict[str, str]]:
    """The store to fetch into; a dry run gets a temporary one, deleted afterwards, so neither
    an upload nor a new ``latest.ndjson`` reaches the real store."""
    if args.dry_run:
        with tempfile.TemporaryDirectory(prefix="catalogsync-demo-dry-") as scratch:
            (Path(scratch) / DEFAULT_BUCKET).mkdir()
            yield {"STORAGE_URL": Path(scratch).as_uri(), "STORAGE_BUCKET": DEFAULT_BUCKET}
        return
    if args.storage_url:
        yield {"STORAGE_URL": args.storage_url}
        return
    store = (state / "storage").resolve()
    # file:// storage never creates a bucket; the demo's own store gets the default one.
    (store / DEFAULT_BUCKET).mkdir(parents=True, exist_ok=True)
    yield {"STORAGE_URL": store.as_uri(), "STORAGE_BUCKET": DEFAULT_BUCKET}


def prepare_data_dir(data_dir: Path, profile: str, *, reset: bool) -> Path:
    """The profile's state directory inside ``data_dir``, created (and marked) if need be.

    ``--reset`` deletes the profile's state only inside a directory that carries the demo's
    marker: a mistyped ``--data-dir ~`` must never delete a home directory.
    """
    marked = (data_dir / MARKER).is_file()
    if data_dir.exists() and not marked and any(data_dir.iterdir()):
        raise DemoError(
            f"{data_dir} exists, is not empty and was not made by the demo (no {MARKER} file): "
            "choose another --data-dir; the demo does not write into, or reset, other directories"
        )
    state = data_dir / profile
    if reset and state.exists():
        from catalogsync.dev.postgres import LocalPostgres

        # The cluster may live outside (a folder its unprivileged server user can reach).
        shutil.rmtree(LocalPostgres(root=state / "postgres").cluster_dir(), ignore_errors=True)
        shutil.rmtree(state)
    state.mkdir(parents=True, exist_ok=True)
    (data_dir / MARKER).write_text("created by catalogsync demo; --reset may delete this tree\n")
    return state


@contextlib.contextmanager
def exclusive(state: Path) -> Iterator[None]:
    """One demo per state directory: a second one would fight over the same PostgreSQL."""
    with (state / ".lock").open("a+") as lock:
        try:
            fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            lock.seek(0)
            holder = lock.read().strip() or "another process"
            raise DemoError(
                f"another demo ({holder}) is running on {state}: wait for it to finish, or "
                "give this one another --data-dir"
            ) from None
        lock.seek(0)
        lock.truncate()
        lock.write(f"pid {os.getpid()}")
        lock.flush()
        yield


def where(env: Mapping[str, str], args: argparse.Namespace, state: Path) -> list[str]:
    """One line per service: what the demo reads from and writes to, credentials masked."""
    simulated = "the MediPim simulator" if not args.medipim_url else "MediPim"
    embedded = "embedded PostgreSQL" if not args.database_url else "PostgreSQL"
    if args.dry_run:
        stored = "a temporary store, deleted afterwards (dry run)"
    elif args.storage_url:
        stored = "storage"
    else:
        stored = "the demo's store"
    lines = [
        f"reading products from {simulated} at {env.get('MEDIPIM_URL')}",
        f"storing the catalog in {stored} at {env.get('STORAGE_URL')}",
        f"{'counting changes against' if args.dry_run else 'writing products to'} {embedded} "
        f"at {env.get('DATABASE_URL')}",
        f"state: {state}",
    ]
    return [redact.text(line) for line in lines]


async def run_stage(name: str, command: str, env: Mapping[str, str]) -> StageResult:
    """One job as a subprocess; its termination message is the summary we report."""
    with tempfile.NamedTemporaryFile(prefix=f"catalogsync-{name}-", suffix=".json") as summary:
        started = time.monotonic()
        process = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "catalogsync",
            command,
            env={**env, "CATALOGSYNC_TERMINATION_MESSAGE_PATH": summary.name},
        )
        try:
            code = await process.wait()
        except asyncio.CancelledError:
            # Ctrl-C reached the job too (same process group); let it end and clean up.
            with contextlib.suppress(ProcessLookupError):
                process.terminate()
            await asyncio.shield(process.wait())
            raise
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
    state = await asyncio.to_thread(prepare_data_dir, data_dir, args.profile, reset=args.reset)
    run_id = time.strftime("demo-%Y%m%d-%H%M%S")
    console = Console()
    with exclusive(state), storage(args, state) as storage_env:
        async with medipim(args) as medipim_env, database(args, state) as db_env:
            env = {
                **base_environment(args),
                **medipim_env,
                **db_env,
                **storage_env,
                "SYNC_RUN_ID": run_id,
                "CATALOGSYNC_LOG_FORMAT": os.environ.get("CATALOGSYNC_LOG_FORMAT", "text"),
            }
            if args.version > 1:
                env["MAINTAINER_DELETE_MISSING"] = "true"
            if args.dry_run:
                env["MAINTAINER_DRY_RUN"] = "true"
            for line in where(env, args, state):
                console.print(line)
            fetch = await run_stage("fetcher", "fetch", env)
            if not fetch.ok:
                message = fetch.summary.get("message")
                console.print(f"[red]fetch failed ({fetch.exit_code}): {message}")
                return fetch.exit_code
            maintain = await run_stage("maintainer", "maintain", env)
            console.print(summary_table(fetch, maintain))
            if not maintain.ok:
                message = maintain.summary.get("message")
                console.print(f"[red]maintain failed ({maintain.exit_code}): {message}")
                return maintain.exit_code
    if args.dry_run:
        console.print("dry run: nothing was stored and no product was written.")
    else:
        console.print(f"state kept in {state}/: run again and unchanged products are skipped.")
    return int(ExitCode.OK)


def main(argv: list[str]) -> int:
    args = parser().parse_args(argv)
    try:
        return asyncio.run(demo(args))
    except DemoError as exc:
        print(f"catalogsync demo: {exc}", file=sys.stderr)
        return int(ExitCode.PERMANENT)
    except KeyboardInterrupt:
        print("\ncatalogsync demo: interrupted; the state is kept as it was.", file=sys.stderr)
        return 130
