"""The throwaway PostgreSQL server that every database test runs against."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import textwrap
import time

import asyncpg
import psutil
import pytest

from catalogsync.dev.postgres import LocalPostgres, embedded_bindir


async def test_table_round_trip(pg_dsn: str) -> None:
    conn = await asyncpg.connect(pg_dsn)
    try:
        await conn.execute("CREATE TABLE t (id text PRIMARY KEY, doc jsonb)")
        await conn.copy_records_to_table("t", records=[("a", '{"x": 1}'), ("b", '{"x": 2}')])
        rows = await conn.fetch("SELECT id, doc->>'x' AS x FROM t ORDER BY id")
        assert [(r["id"], r["x"]) for r in rows] == [("a", "1"), ("b", "2")]
        assert await conn.fetchval("SHOW max_connections") == "50"
    finally:
        await conn.close()


async def test_each_test_gets_a_fresh_database(pg_dsn: str) -> None:
    conn = await asyncpg.connect(pg_dsn)
    try:
        assert await conn.fetchval("SELECT count(*) FROM pg_tables WHERE tablename = 't'") == 0
    finally:
        await conn.close()


def _postgres_pids(datadir: str) -> list[int]:
    found = []
    for proc in psutil.process_iter(["cmdline"]):
        cmdline = proc.info["cmdline"] or []
        if any(datadir in part for part in cmdline):
            found.append(proc.pid)
    return found


def _gone(datadir: str) -> bool:
    return not _postgres_pids(datadir) and not os.path.exists(datadir)


@pytest.mark.parametrize("bindir", ["system", "embedded"])
async def test_stop_leaves_nothing_running(bindir: str) -> None:
    binaries = embedded_bindir() if bindir == "embedded" else None
    server = LocalPostgres(shared_buffers="32MB", max_connections=10, bindir=binaries)
    with server:
        datadir = str(server.datadir)
        conn = await asyncpg.connect(server.dsn)
        assert await conn.fetchval("SELECT 1") == 1
        await conn.close()
        assert _postgres_pids(datadir)
        if os.geteuid() == 0:
            owner = psutil.Process(server.process.pid).username()  # type: ignore[union-attr]
            assert owner != "root"
    assert _gone(datadir)


@pytest.mark.parametrize("how", [signal.SIGINT, signal.SIGKILL])
def test_server_dies_with_its_owner(how: signal.Signals) -> None:
    """Ctrl-C runs atexit; even a SIGKILLed owner takes its server along (parent-death signal)."""
    script = textwrap.dedent(
        """
        import sys, time
        from catalogsync.dev.postgres import LocalPostgres, embedded_bindir
        server = LocalPostgres(shared_buffers="32MB", max_connections=10).start()
        print(server.datadir, flush=True)
        time.sleep(120)
        """
    )
    owner = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, text=True)
    assert owner.stdout is not None
    datadir = owner.stdout.readline().strip()
    assert datadir
    assert _postgres_pids(datadir)
    owner.send_signal(how)
    owner.wait(60)
    for _ in range(200):
        if not _postgres_pids(datadir):
            break
        time.sleep(0.1)
    assert not _postgres_pids(datadir)
    shutil.rmtree(os.path.dirname(datadir), ignore_errors=True)
