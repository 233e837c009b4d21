"""Every way a job ends leaves a summary: early configuration errors, SIGTERM, SIGKILL leftovers."""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import asyncpg
import orjson

from catalogsync.common.errors import ExitCode
from tests import maintainer_data as data
from tests.plugins.medipim import MedipimFactory

CLOSED = "127.0.0.1:1"
PREFIXES = ("MEDIPIM_", "STORAGE_", "FETCHER_", "SYNC_", "CATALOGSYNC_", "DATABASE_", "MAINTAINER_")


def environment(tmp_path: Path, **env: str) -> dict[str, str]:
    base = {k: v for k, v in os.environ.items() if not k.startswith(PREFIXES)}
    return base | {
        "SYNC_RUN_ID": "life-1",
        "CATALOGSYNC_TERMINATION_MESSAGE_PATH": str(tmp_path / "termination-log"),
        "CATALOGSYNC_LOG_FORMAT": "json",
        "MEDIPIM_URL": f"http://{CLOSED}",
        "MEDIPIM_API_KEY_ID": "1",
        "MEDIPIM_API_KEY_SECRET": "secret-value",
        "STORAGE_URL": f"http://{CLOSED}/storage/v1",
        "STORAGE_SERVICE_ROLE_KEY": "service-key",
        "FETCHER_SCRATCH_DIR": str(tmp_path),
        "FETCHER_MAX_ATTEMPTS": "1",
        **env,
    }


def start(args: list[str], env: dict[str, str]) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        [sys.executable, "-m", "catalogsync", *args],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )


async def finish(process: subprocess.Popen[bytes], seconds: float = 120) -> str:
    _, stderr = await asyncio.to_thread(process.communicate, timeout=seconds)
    return stderr.decode(errors="replace")


def message(tmp_path: Path) -> dict[str, Any]:
    path = tmp_path / "termination-log"
    assert path.exists(), "no termination message was written"
    result: dict[str, Any] = orjson.loads(path.read_bytes())
    return result


async def test_an_invalid_run_id_writes_the_termination_message_in_the_asked_format(
    tmp_path: Path,
) -> None:
    env = environment(tmp_path, SYNC_RUN_ID="Not_A_Valid_ID", CATALOGSYNC_LOG_FORMAT="text")
    process = start(["fetch"], env)
    stderr = await finish(process)
    assert process.returncode == ExitCode.PERMANENT, stderr
    summary = message(tmp_path)
    assert summary["reason"] == "InvalidConfiguration"
    assert "SYNC_RUN_ID" in summary["message"]
    assert summary["stage"] == "fetcher"
    assert not stderr.lstrip().startswith("{"), f"asked for text, got JSON: {stderr}"
    assert "SYNC_RUN_ID" in stderr


async def test_an_invalid_log_format_is_reported_in_the_termination_message(
    tmp_path: Path,
) -> None:
    process = start(["maintain"], environment(tmp_path, CATALOGSYNC_LOG_FORMAT="xml"))
    stderr = await finish(process)
    assert process.returncode == ExitCode.PERMANENT, stderr
    summary = message(tmp_path)
    assert "CATALOGSYNC_LOG_FORMAT" in summary["message"]
    assert summary["stage"] == "maintainer"


async def test_log_level_is_configurable(tmp_path: Path) -> None:
    debug = start(["fetch"], environment(tmp_path, CATALOGSYNC_LOG_LEVEL="debug"))
    lines = [orjson.loads(line) for line in (await finish(debug)).splitlines() if line]
    assert any(line["level"] == "DEBUG" for line in lines), lines
    quiet = start(["fetch"], environment(tmp_path, CATALOGSYNC_LOG_LEVEL="ERROR"))
    lines = [orjson.loads(line) for line in (await finish(quiet)).splitlines() if line]
    assert lines
    assert {line["level"] for line in lines} == {"ERROR"}, lines
    bogus = start(["fetch"], environment(tmp_path, CATALOGSYNC_LOG_LEVEL="chatty"))
    stderr = await finish(bogus)
    assert bogus.returncode == ExitCode.PERMANENT
    assert "CATALOGSYNC_LOG_LEVEL" in message(tmp_path)["message"], stderr


async def test_sigterm_stops_maintain_at_a_chunk_boundary(pg_dsn: str, tmp_path: Path) -> None:
    """The catalog arrives through a pipe that holds four whole chunks and half of a fifth; the
    maintainer waits for more lines when SIGTERM comes, so it must stop there, say so in its log
    and its termination message, and leave the run row ``interrupted`` for the rerun to resume."""
    products = [data.product(n) for n in range(800)]
    lines = data.lines(products)
    fifo = tmp_path / "catalog.ndjson"
    os.mkfifo(fifo)
    env = environment(tmp_path, DATABASE_URL=pg_dsn, MAINTAINER_CHUNK_SIZE="100")
    process = start(["maintain", "--file", str(fifo)], env)
    sent = threading.Event()
    release = threading.Event()

    def feed() -> None:
        with contextlib.suppress(BrokenPipeError), fifo.open("wb") as pipe:
            pipe.write(b"".join(line + b"\n" for line in lines[:450]))
            pipe.flush()
            sent.set()
            release.wait(120)
            pipe.write(b"".join(line + b"\n" for line in lines[450:]))

    writer = threading.Thread(target=feed, daemon=True)
    writer.start()
    watcher = await asyncpg.connect(pg_dsn)
    try:
        deadline = time.monotonic() + 120
        while await _chunks_done(watcher) < 4:
            assert process.poll() is None, process.communicate()[1].decode()[-2000:]
            assert time.monotonic() < deadline
            await asyncio.sleep(0.05)
        process.send_signal(signal.SIGTERM)
        await asyncio.sleep(1.0)
        release.set()  # lines after the stop must not be applied
        stderr = await finish(process, 60)
        status = await watcher.fetchval(
            "SELECT status FROM catalogsync_runs WHERE run_id = $1", "life-1"
        )
    finally:
        release.set()
        await watcher.close()
    writer.join(30)
    assert process.returncode == ExitCode.TRANSIENT, stderr
    assert "interrupted" in stderr
    summary = message(tmp_path)
    assert summary["reason"] == "Interrupted", stderr
    assert (summary["processed"], summary["chunksDone"]) == (400, 4), summary
    assert status == "interrupted"

    # The rerun reads a pipe too: a pipe has no identity, so the run resumes on key and size
    # (a regular file would carry one the interrupted run did not record, and start over).
    again = start(["maintain", "--file", str(fifo)], env)
    rest = threading.Thread(target=_send, args=(fifo, lines), daemon=True)
    rest.start()
    stderr = await finish(again)
    rest.join(30)
    assert again.returncode == 0, stderr
    summary = message(tmp_path)
    assert summary["resumed"] is True
    assert (summary["processed"], summary["inserted"]) == (800, 800)


def _send(fifo: Path, lines: list[bytes]) -> None:
    with fifo.open("wb") as pipe:
        pipe.write(b"".join(line + b"\n" for line in lines))


async def _chunks_done(conn: asyncpg.Connection) -> int:
    try:
        found = await conn.fetchval(
            "SELECT chunks_done FROM catalogsync_runs WHERE run_id = 'life-1'"
        )
    except asyncpg.UndefinedTableError:
        return 0
    return int(found or 0)


async def test_sigterm_of_fetch_removes_its_scratch_file(
    tmp_path: Path, medipim_factory: MedipimFactory
) -> None:
    medipim = await medipim_factory(throughput=100_000)
    storage = tmp_path / "storage"
    (storage / "medipim-raw").mkdir(parents=True)
    scratch = tmp_path / "scratch"
    scratch.mkdir()
    env = environment(
        tmp_path, **medipim.env(), STORAGE_URL=f"file://{storage}", FETCHER_SCRATCH_DIR=str(scratch)
    )
    process = start(["fetch"], env)
    deadline = time.monotonic() + 60
    while not any(path.stat().st_size for path in scratch.glob("catalogsync-*")):
        assert process.poll() is None, process.communicate()[1].decode()[-2000:]
        assert time.monotonic() < deadline
        await asyncio.sleep(0.05)
    process.send_signal(signal.SIGTERM)
    stderr = await finish(process, 30)
    assert process.returncode == ExitCode.TRANSIENT, stderr
    assert message(tmp_path)["reason"] == "Interrupted"
    assert list(scratch.iterdir()) == []
    assert not (storage / "medipim-raw" / "latest.ndjson").exists()


async def test_fetch_sweeps_scratch_files_a_killed_fetch_left(tmp_path: Path) -> None:
    abandoned = tmp_path / "catalogsync-old-run-1234abcd.ndjson"
    abandoned.write_bytes(b'{"id": "x"}\n' * 100)
    live = tmp_path / "catalogsync-other-run-5678efgh.ndjson"
    live.write_bytes(b"in use\n")
    with live.open("rb") as held:
        fcntl.flock(held, fcntl.LOCK_EX)  # as a running fetch holds its own
        process = start(["fetch"], environment(tmp_path))
        stderr = await finish(process)
    assert process.returncode == ExitCode.TRANSIENT, stderr  # storage is a closed port
    assert not abandoned.exists()
    assert live.exists()
    assert "removed 1 scratch file" in stderr
