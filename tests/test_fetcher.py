"""``catalogsync fetch`` end to end: the real command against the simulator and the storage server.

Each test runs the command as a subprocess, as the Job does, and reads its exit code, its
termination message and what landed in storage. Backoffs are shortened through the environment.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import os
import re
import sys
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson
import pytest
import pytest_asyncio
from aiohttp import web

from catalogsync.common.config import DEFAULT_BUCKET
from catalogsync.common.lines import MAX_LINE_BYTES
from catalogsync.common.storage import FileStorage, ObjectInfo, SupabaseStorage
from catalogsync.dev.simulator import Catalog, Fault, SimulatorServer
from catalogsync.dev.simulator.filters import parse_product_query
from catalogsync.dev.simulator.stream import Signer, stream_blocks
from catalogsync.dev.storage_server import StorageServer
from tests.plugins.medipim import MedipimFactory
from tests.plugins.storage import MakeStorageServer

CHUNK = 256 * 1024
ENV_PREFIXES = ("MEDIPIM_", "STORAGE_", "FETCHER_", "SYNC_", "CATALOGSYNC_")


@dataclass
class Outcome:
    code: int
    message: dict[str, Any]
    log: str


@dataclass
class Target:
    """Where one test's fetches go: its own key prefix on a storage server."""

    env: dict[str, str]
    storage: SupabaseStorage | FileStorage
    prefix: str

    @property
    def latest(self) -> str:
        return f"{self.prefix}latest.ndjson"

    def run_key(self, run_id: str) -> str:
        return f"{self.prefix}runs/{run_id}.ndjson"

    async def read(self, key: str) -> bytes:
        return b"".join([chunk async for chunk in self.storage.stream(key)])

    async def info(self, key: str) -> ObjectInfo | None:
        return await self.storage.info(key)


Fetch = Callable[..., Awaitable[Outcome]]


def base_env(tmp_path: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(ENV_PREFIXES)}
    return env | {
        "SYNC_RUN_ID": "run-1",
        "CATALOGSYNC_TERMINATION_MESSAGE_PATH": str(tmp_path / "termination-log"),
        "CATALOGSYNC_LOG_FORMAT": "json",
        "FETCHER_SCRATCH_DIR": str(tmp_path),
        "FETCHER_CHUNK_SIZE": str(CHUNK),
        "FETCHER_BACKOFF_INITIAL": "0.05",
        "FETCHER_BACKOFF_MAX": "0.2",
        "FETCHER_MAX_ATTEMPTS": "4",
    }


def key_prefix(request: pytest.FixtureRequest) -> str:
    return "fetcher/" + re.sub(r"[^a-z0-9]+", "-", request.node.name.lower()).strip("-") + "/"


def supabase_target(server: StorageServer, prefix: str, tmp_path: Path) -> Target:
    key = server.headers["apikey"]
    env = base_env(tmp_path) | {
        "STORAGE_URL": server.url,
        "STORAGE_SERVICE_ROLE_KEY": key,
        "STORAGE_PREFIX": prefix,
    }
    return Target(env, SupabaseStorage(server.url, DEFAULT_BUCKET, key), prefix)


@pytest_asyncio.fixture(loop_scope="session")
async def target(
    storage_server: StorageServer, tmp_path: Path, request: pytest.FixtureRequest
) -> AsyncIterator[Target]:
    chosen = supabase_target(storage_server, key_prefix(request), tmp_path)
    yield chosen
    await chosen.storage.aclose()


async def run_fetch(env: dict[str, str]) -> Outcome:
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "catalogsync",
        "fetch",
        env=env,
        stdout=asyncio.subprocess.DEVNULL,
        stderr=asyncio.subprocess.PIPE,
    )
    _, stderr = await process.communicate()
    assert process.returncode is not None
    message = termination_message(Path(env["CATALOGSYNC_TERMINATION_MESSAGE_PATH"]))
    return Outcome(process.returncode, message, stderr.decode(errors="replace"))


def termination_message(path: Path) -> dict[str, Any]:
    return orjson.loads(path.read_bytes()) if path.exists() else {}


def scratch_files(env: dict[str, str]) -> list[Path]:
    return list(Path(env["FETCHER_SCRATCH_DIR"]).glob("catalogsync-*"))


@pytest.fixture
def fetch(target: Target, medipim: SimulatorServer) -> Fetch:
    """``await fetch(**env)``: the command against ``medipim`` and ``target``."""

    async def go(**env: str) -> Outcome:
        return await run_fetch(target.env | medipim.env() | env)

    return go


def expected_body(server: SimulatorServer, stored: bytes, body: dict[str, Any]) -> bytes:
    """What the simulator sent, rebuilt from its snapshot with the response's embed timestamp."""
    found = re.search(rb"[?&]t=(\d+)&key=", stored)
    assert found is not None
    snapshot = server.catalog.snapshot()
    positions = parse_product_query(body, paged=False).select(snapshot)
    sign = Signer(server.key_secret.encode(), int(found.group(1)))
    return b"".join(stream_blocks(snapshot, positions, sign, block_size=1 << 20))


DEFAULT_QUERY = {"filter": {"status": "active"}, "sorting": {"id": "ASC"}}


def active(catalog: Catalog) -> int:
    return len(catalog.ids("active"))


def assert_ok(outcome: Outcome) -> None:
    assert outcome.code == 0, outcome.log[-3000:]
    assert outcome.message["ok"] is True


async def publish_previous(fetch: Fetch, target: Target) -> ObjectInfo:
    """A complete earlier run, so a test can show that ``latest.ndjson`` survives a failure."""
    assert_ok(await fetch(SYNC_RUN_ID="previous"))
    info = await target.info(target.latest)
    assert info is not None
    assert info.size > 0
    return info


# --- the happy path ---------------------------------------------------------------------------


@pytest.mark.slow
async def test_50k_catalog_arrives_byte_identical(
    medipim_factory: MedipimFactory, target: Target
) -> None:
    server = await medipim_factory(seed=5, products=50_000, line_bytes=300)
    outcome = await run_fetch(target.env | server.env())
    assert_ok(outcome)
    message = outcome.message
    records = active(server.catalog)
    assert message["records"] == message["total"] == records > 40_000
    assert message["downloads"] == 1
    assert message["object"] == target.run_key("run-1")
    assert message["latest"] == target.latest
    assert message["published"] is True

    stored = await target.read(target.run_key("run-1"))
    assert stored == expected_body(server, stored, DEFAULT_QUERY)
    assert len(stored) == message["bytes"]
    assert hashlib.sha256(stored).hexdigest() == message["sha256"]
    assert await target.read(target.latest) == stored
    for key in (target.run_key("run-1"), target.latest):
        info = await target.info(key)
        assert info is not None
        assert info.metadata["sha256"] == message["sha256"]
        assert info.metadata["records"] == str(records)
    assert server.requests["products/stream"] == 1
    assert all(agent.startswith("catalogsync/") for agent in server.user_agents)
    assert scratch_files(target.env) == []


async def test_file_storage_end_to_end(
    medipim: SimulatorServer, tmp_path: Path, medipim_catalog: Catalog
) -> None:
    root = tmp_path / "store"
    env = base_env(tmp_path) | medipim.env() | {"STORAGE_URL": f"file://{root}"}
    missing = await run_fetch(env)
    assert missing.code == 2
    assert missing.message["reason"] == "BucketNotFound"
    assert medipim.requests["products/stream"] == 0
    assert not root.exists()

    (root / DEFAULT_BUCKET).mkdir(parents=True)
    outcome = await run_fetch(env)
    assert_ok(outcome)
    storage = FileStorage(root, DEFAULT_BUCKET)
    run_object = storage.path("runs/run-1.ndjson").read_bytes()
    assert run_object == expected_body(medipim, run_object, DEFAULT_QUERY)
    assert storage.path("latest.ndjson").read_bytes() == run_object
    info = await storage.info("latest.ndjson")
    assert info is not None
    assert info.metadata["sha256"] == hashlib.sha256(run_object).hexdigest()
    assert outcome.message["records"] == active(medipim_catalog)


# --- MediPim failures -------------------------------------------------------------------------


class LatestWatcher:
    """Polls ``latest.ndjson`` while a fetch runs and records every (size, sha256) it saw."""

    def __init__(self, target: Target) -> None:
        self.target = target
        self.seen: set[tuple[int, str]] = set()
        self._task: asyncio.Task[None] | None = None

    async def _poll(self) -> None:
        while True:
            info = await self.target.info(self.target.latest)
            if info is not None:
                self.seen.add((info.size, info.metadata.get("sha256", "")))
            await asyncio.sleep(0.01)

    def __enter__(self) -> LatestWatcher:
        self._task = asyncio.create_task(self._poll())
        return self

    def __exit__(self, *_: object) -> None:
        assert self._task is not None
        self._task.cancel()


async def test_cut_connection_is_fetched_again_and_latest_is_never_partial(
    fetch: Fetch, target: Target, medipim: SimulatorServer
) -> None:
    before = await publish_previous(fetch, target)
    medipim.reset()
    medipim.faults.inject(Fault.cut(after_bytes=1_000_000))
    with LatestWatcher(target) as watcher:
        outcome = await fetch(SYNC_RUN_ID="cut")
    assert_ok(outcome)
    assert outcome.message["downloads"] == 2
    assert medipim.requests["products/stream"] == 2
    stored = await target.read(target.latest)
    assert stored == expected_body(medipim, stored, DEFAULT_QUERY)
    after = (len(stored), outcome.message["sha256"])
    assert watcher.seen
    assert watcher.seen <= {(before.size, before.metadata["sha256"]), after}


async def test_stalled_stream_times_out_and_is_fetched_again(
    fetch: Fetch, target: Target, medipim: SimulatorServer
) -> None:
    medipim.faults.inject(Fault.stall(after_bytes=100_000, seconds=5.0))
    outcome = await fetch(FETCHER_READ_TIMEOUT="0.5")
    assert_ok(outcome)
    assert outcome.message["downloads"] == 2
    assert "StreamStalled" in outcome.log or "FETCHER_READ_TIMEOUT" in outcome.log


async def test_rate_limit_backs_off_then_succeeds(
    fetch: Fetch, target: Target, medipim: SimulatorServer
) -> None:
    medipim.faults.inject(Fault.http_status(429), times=2)
    outcome = await fetch()
    assert_ok(outcome)
    assert outcome.message["downloads"] == 3
    assert medipim.statuses[("products/stream", 429)] == 2
    assert await target.info(target.latest) is not None


async def test_rejected_key_fails_at_once_naming_the_secret(
    fetch: Fetch, target: Target, medipim: SimulatorServer
) -> None:
    outcome = await fetch(
        MEDIPIM_API_KEY_SECRET="wrong-secret-value", MEDIPIM_CREDENTIALS_SECRET="my-medipim"
    )
    assert outcome.code == 2
    message = outcome.message
    assert message["ok"] is False
    assert message["reason"] == "InvalidCredentials"
    assert "Secret 'my-medipim'" in message["message"]
    assert "'apiKeyId'" in message["message"]
    assert "'apiKeySecret'" in message["message"]
    assert "wrong-secret-value" not in outcome.log + message["message"]
    assert medipim.requests["products/stream"] == 1
    assert await target.info(target.latest) is None


@pytest.mark.parametrize(
    "case",
    [
        (Fault.truncate(), 1, "IncompleteStream", 2),
        (Fault.error_line(at_index=500), 1, "StreamError", 2),
        (Fault.malformed(at_index=500), 3, "InvalidData", 1),
    ],
    ids=["truncated", "error-line", "malformed"],
)
async def test_bad_stream_fails_and_leaves_latest_alone(
    fetch: Fetch, target: Target, medipim: SimulatorServer, case: tuple[Fault, int, str, int]
) -> None:
    fault, code, reason, requests = case
    before = await publish_previous(fetch, target)
    previous = await target.read(target.latest)
    medipim.reset()
    medipim.faults.inject(fault, times=None)
    outcome = await fetch(SYNC_RUN_ID="bad", FETCHER_MAX_ATTEMPTS="2")
    assert outcome.code == code, outcome.log[-2000:]
    assert outcome.message["reason"] == reason
    assert medipim.requests["products/stream"] == requests
    assert await target.info(target.latest) == before
    assert await target.read(target.latest) == previous
    assert await target.info(target.run_key("bad")) is None


class LongLineSource:
    """A MediPim stand-in whose second line never ends: one 1 MiB block sent over and over."""

    def __init__(self) -> None:
        self.requests = 0
        self.sent = 0
        self._runner: web.AppRunner | None = None
        self.url = ""

    async def _stream(self, request: web.Request) -> web.StreamResponse:
        self.requests += 1
        response = web.StreamResponse(headers={"Content-Type": "application/x-ndjson"})
        await response.prepare(request)
        first = {"meta": {"total": 3, "index": 0}, "result": {"id": "M000000001"}}
        await response.write(orjson.dumps(first) + b'\n{"meta": {"total": 3, "index": 1}, "x": "')
        block = b"x" * (1 << 20)
        with contextlib.suppress(ConnectionError):
            while self.sent < 4 * MAX_LINE_BYTES:  # the fetcher hangs up long before
                await response.write(block)
                self.sent += len(block)
        return response

    async def __aenter__(self) -> LongLineSource:
        app = web.Application()
        app.router.add_post("/v4/products/stream", self._stream)
        self._runner = web.AppRunner(app)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        port = self._runner.addresses[0][1]
        self.url = f"http://127.0.0.1:{port}"
        return self

    async def __aexit__(self, *_: object) -> None:
        assert self._runner is not None
        await self._runner.cleanup()


async def test_line_over_the_limit_fails_the_run_and_leaves_latest_alone(
    fetch: Fetch, target: Target
) -> None:
    before = await publish_previous(fetch, target)
    async with LongLineSource() as source:
        outcome = await fetch(SYNC_RUN_ID="long", MEDIPIM_URL=source.url)
    assert outcome.code == 3, outcome.log[-2000:]
    assert outcome.message["reason"] == "InvalidData"
    message = outcome.message["message"]
    assert "line 2 (where meta.index 1 was due) has passed " in message
    size = int(message.split("has passed ")[1].split()[0])
    assert MAX_LINE_BYTES < size <= MAX_LINE_BYTES + (1 << 20)
    assert f"over the line limit of {MAX_LINE_BYTES} bytes (16 MiB)" in message
    assert source.requests == 1  # bad data: no second download
    assert source.sent < 4 * MAX_LINE_BYTES
    assert await target.info(target.latest) == before
    assert await target.info(target.run_key("long")) is None
    assert scratch_files(target.env) == []


# --- empty catalogs ---------------------------------------------------------------------------

NOTHING = '{"id": "MFFFFFFFFF"}'


async def test_empty_catalog_without_latest_is_published(fetch: Fetch, target: Target) -> None:
    outcome = await fetch(MEDIPIM_FILTER=NOTHING)
    assert_ok(outcome)
    assert outcome.message["empty"] is True
    assert outcome.message["records"] == 0
    assert outcome.message["published"] is True
    latest = await target.info(target.latest)
    assert latest is not None
    assert latest.size == 0


async def test_empty_catalog_keeps_a_full_latest_unless_told(fetch: Fetch, target: Target) -> None:
    before = await publish_previous(fetch, target)
    kept = await fetch(MEDIPIM_FILTER=NOTHING, SYNC_RUN_ID="empty")
    assert_ok(kept)
    assert kept.message["published"] is False
    assert kept.message["latest"] is None
    assert await target.info(target.latest) == before
    run_object = await target.info(target.run_key("empty"))
    assert run_object is not None
    assert run_object.size == 0

    replaced = await fetch(
        MEDIPIM_FILTER=NOTHING, SYNC_RUN_ID="empty", FETCHER_PUBLISH_EMPTY="true"
    )
    assert_ok(replaced)
    assert replaced.message["published"] is True
    latest = await target.info(target.latest)
    assert latest is not None
    assert latest.size == 0


async def test_a_much_smaller_catalog_is_stored_but_not_published_unless_allowed(
    fetch: Fetch, target: Target, medipim_catalog: Catalog
) -> None:
    """25,421 -> 2,000 products is a wrong filter or a key that lost scope far more often than a
    catalog that shrank: the run's object is kept for a look, ``latest.ndjson`` is not touched."""
    before = await publish_previous(fetch, target)
    few = orjson.dumps({"id": medipim_catalog.ids("active")[:5]}).decode()
    refused = await fetch(MEDIPIM_FILTER=few, SYNC_RUN_ID="few")
    assert refused.code == 3, refused.log[-2000:]
    assert refused.message["reason"] == "CatalogShrunk"
    assert "5 products" in refused.message["message"]
    assert "FETCHER_ALLOW_SHRINK" in refused.message["message"]
    assert await target.info(target.latest) == before
    stored = await target.info(target.run_key("few"))
    assert stored is not None
    assert stored.metadata["records"] == "5"

    allowed = await fetch(MEDIPIM_FILTER=few, SYNC_RUN_ID="few", FETCHER_ALLOW_SHRINK="true")
    assert_ok(allowed)
    assert allowed.message["published"] is True
    latest = await target.info(target.latest)
    assert latest is not None
    assert latest.metadata["records"] == "5"


# --- storage failures -------------------------------------------------------------------------


async def test_rejected_storage_key_fails_before_downloading(
    fetch: Fetch, medipim: SimulatorServer
) -> None:
    outcome = await fetch(
        STORAGE_SERVICE_ROLE_KEY="not-the-key", STORAGE_CREDENTIALS_SECRET="my-storage"
    )
    assert outcome.code == 2
    assert outcome.message["reason"] == "InvalidCredentials"
    assert "'serviceRoleKey' of Secret 'my-storage'" in outcome.message["message"]
    assert "not-the-key" not in outcome.message["message"]
    assert medipim.requests["products/stream"] == 0


async def test_anon_key_fails_before_downloading(
    fetch: Fetch, medipim: SimulatorServer, storage_server: StorageServer
) -> None:
    """The anon key is a valid JWT: only its role claim tells it apart before the upload's 403."""
    outcome = await fetch(
        STORAGE_SERVICE_ROLE_KEY=storage_server.anon_key, STORAGE_CREDENTIALS_SECRET="my-storage"
    )
    assert outcome.code == 2, outcome.log[-2000:]
    assert outcome.message["reason"] == "InvalidCredentials"
    assert "role 'anon'" in outcome.message["message"]
    assert "'serviceRoleKey' of Secret 'my-storage'" in outcome.message["message"]
    assert storage_server.anon_key not in outcome.log
    assert medipim.requests["products/stream"] == 0


async def test_same_run_fetched_twice_is_a_fresh_upload(
    medipim: SimulatorServer, make_storage_server: MakeStorageServer, tmp_path: Path
) -> None:
    server = await make_storage_server()
    target = supabase_target(server, "", tmp_path)
    try:
        first = await run_fetch(target.env | medipim.env())
        second = await run_fetch(target.env | medipim.env())
        assert_ok(first)
        assert_ok(second)
        assert first.message["sha256"] != second.message["sha256"]  # embed URLs are re-signed
        stored = await target.read(target.run_key("run-1"))
        assert hashlib.sha256(stored).hexdigest() == second.message["sha256"]
        assert stored == expected_body(medipim, stored, DEFAULT_QUERY)
        stats = await server.stats()
        assert stats.requests["POST upload"] == 2
        assert stats.upload_bytes_received == first.message["bytes"] + second.message["bytes"]
    finally:
        await target.storage.aclose()


class ChunkCutter:
    """A proxy in front of the storage server that crashes it between two TUS chunks.

    When the fetcher sends PATCH number ``at`` (so ``at - 1`` chunks are acknowledged), the proxy
    kills the server before a byte of that request reaches it, starts it again and hangs up: the
    fetcher has to ask for the offset and resume, however fast or slow the machine is.
    """

    def __init__(self, server: StorageServer, at: int) -> None:
        self.server = server
        self.at = at
        self.patches = 0
        self.cut = False
        self._listener: asyncio.Server | None = None

    @property
    def url(self) -> str:
        assert self._listener is not None
        port = self._listener.sockets[0].getsockname()[1]
        return f"http://127.0.0.1:{port}/storage/v1"

    async def __aenter__(self) -> ChunkCutter:
        self._listener = await asyncio.start_server(self._serve, "127.0.0.1", 0)
        return self

    async def __aexit__(self, *_: object) -> None:
        assert self._listener is not None
        self._listener.close()
        await self._listener.wait_closed()

    async def _serve(self, client: asyncio.StreamReader, reply: asyncio.StreamWriter) -> None:
        upstream, forward = await asyncio.open_connection(self.server.host, self.server.port)
        answers = asyncio.create_task(self._copy(upstream, reply))
        try:
            while True:
                head = await client.readuntil(b"\r\n\r\n")
                assert b"transfer-encoding" not in head.lower(), head
                if head.startswith(b"PATCH "):
                    self.patches += 1
                    if self.patches == self.at:
                        await self.server.kill()
                        self.cut = True
                        await self.server.start()
                        return
                forward.write(head)
                found = re.search(rb"(?i)\r\ncontent-length:\s*(\d+)", head)
                remaining = int(found.group(1)) if found else 0
                while remaining:
                    body = await client.read(min(remaining, 1 << 16))
                    if not body:
                        return
                    forward.write(body)
                    remaining -= len(body)
                await forward.drain()
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            answers.cancel()
            for writer in (forward, reply):
                writer.close()

    @staticmethod
    async def _copy(source: asyncio.StreamReader, sink: asyncio.StreamWriter) -> None:
        """The server's answers; when it hangs up or dies, the proxy hangs up too."""
        with contextlib.suppress(ConnectionError):
            while data := await source.read(1 << 16):
                sink.write(data)
                await sink.drain()
        sink.close()


@pytest.mark.slow
async def test_storage_restart_mid_upload_resumes(
    medipim_factory: MedipimFactory, make_storage_server: MakeStorageServer, tmp_path: Path
) -> None:
    medipim = await medipim_factory(seed=5, products=50_000, line_bytes=300)
    server = await make_storage_server()
    target = supabase_target(server, "", tmp_path)
    patient = {"FETCHER_MAX_ATTEMPTS": "12", "FETCHER_BACKOFF_MAX": "0.5"}
    try:
        async with ChunkCutter(server, at=3) as cutter:
            env = target.env | medipim.env() | patient | {"STORAGE_URL": cutter.url}
            outcome = await run_fetch(env)
        assert_ok(outcome)
        size = outcome.message["bytes"]
        assert size > 3 * CHUNK
        assert cutter.cut, "the server was not stopped after two chunks"
        assert re.search(rf"resuming upload of \S+ at byte {2 * CHUNK}\b", outcome.log)
        stats = await server.stats()
        assert stats.requests["POST upload"] == 1
        assert stats.requests.get("HEAD upload", 0) >= 1
        assert stats.upload_bytes_received < size + CHUNK
        stored = await target.read(target.latest)
        assert hashlib.sha256(stored).hexdigest() == outcome.message["sha256"]
        assert stored == expected_body(medipim, stored, DEFAULT_QUERY)
    finally:
        await target.storage.aclose()
