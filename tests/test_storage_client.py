"""The storage client: URL forms, error shapes, and the local-directory backend end to end."""

from __future__ import annotations

import asyncio
import hashlib
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest

from catalogsync.common.config import DEFAULT_BUCKET, StorageSettings
from catalogsync.common.errors import PermanentError
from catalogsync.common.retry import RetryPolicy
from catalogsync.common.storage import (
    FileStorage,
    SupabaseStorage,
    is_auth_failure,
    open_storage,
    semantic_status,
    storage_api_url,
    tus_action,
)
from catalogsync.dev.storage_server import StorageServer, mint_service_key
from tests.plugins.storage import MakeStorageServer


def settings_for(url: str, **env: str) -> StorageSettings:
    return StorageSettings.model_validate({"STORAGE_URL": url, **env})


@pytest.mark.parametrize(
    ("url", "expected"),
    [
        ("https://abc.supabase.co", "https://abc.supabase.co/storage/v1"),
        ("https://abc.supabase.co/", "https://abc.supabase.co/storage/v1"),
        ("https://abc.supabase.co/storage/v1", "https://abc.supabase.co/storage/v1"),
        ("http://127.0.0.1:5000/storage/v1/", "http://127.0.0.1:5000/storage/v1"),
    ],
)
def test_storage_api_url_forms(url: str, expected: str) -> None:
    assert storage_api_url(url) == expected


def test_storage_api_url_rejects_other_schemes() -> None:
    with pytest.raises(PermanentError, match="STORAGE_URL"):
        storage_api_url("s3://bucket")


def test_supabase_error_shapes() -> None:
    body = b'{"statusCode":"403","code":"AccessDenied","error":"Unauthorized","message":"Invalid"}'
    assert is_auth_failure(400, body)
    assert is_auth_failure(401, b"")
    missing = b'{"statusCode":"404","error":"not_found","code":"NoSuchKey"}'
    assert not is_auth_failure(400, missing)
    assert semantic_status(400, missing) == 404
    assert semantic_status(502, b"<html>") == 502


@pytest.mark.parametrize(
    ("status", "body", "phase", "expected"),
    [
        (None, None, "patch", "retry"),
        (502, b"bad gateway", "patch", "retry"),
        (409, b"Upload-Offset conflict", "patch", "retry"),
        (400, b"Request aborted due to lock acquired", "patch", "retry"),
        (404, b"The file for this url was not found", "resume", "restart"),
        (410, b"The file for this url no longer exists", "patch", "restart"),
        (404, b"Bucket not found", "create", "fatal"),
        (413, b"Maximum size exceeded", "create", "fatal"),
        (403, b"new row violates row-level security policy", "create", "credentials"),
        (
            400,
            b'{"statusCode":"403","code":"AccessDenied","message":"Invalid Compact JWS"}',
            "create",
            "credentials",
        ),
    ],
)
def test_tus_failure_decisions(
    status: int | None, body: bytes | None, phase: str, expected: str
) -> None:
    assert tus_action(status, body, phase) == expected


async def test_open_storage_requires_the_service_role_key() -> None:
    settings = settings_for("https://abc.supabase.co", STORAGE_CREDENTIALS_SECRET="s")
    with pytest.raises(PermanentError, match=r"serviceRoleKey.*Secret 's'") as caught:
        open_storage(settings)
    assert caught.value.reason == "SecretKeyMissing"


@pytest.mark.parametrize(
    ("key", "named"),
    [
        (mint_service_key(role="anon"), "'anon'"),
        (mint_service_key(role="authenticated"), "'authenticated'"),
        ("sb_publishable_abcdefghijklmnop", "publishable"),
    ],
)
def test_a_key_that_is_not_the_service_role_is_refused_before_any_request(
    key: str, named: str
) -> None:
    settings = settings_for(
        "http://127.0.0.1:1/storage/v1",
        STORAGE_SERVICE_ROLE_KEY=key,
        STORAGE_CREDENTIALS_SECRET="sb",
    )
    with pytest.raises(PermanentError) as caught:
        open_storage(settings)
    assert caught.value.reason == "InvalidCredentials"
    message = str(caught.value)
    assert named in message
    assert "'serviceRoleKey' of Secret 'sb'" in message
    assert key not in message
    assert key.rsplit(".", maxsplit=1)[-1] not in message


@pytest.mark.parametrize(
    "key", [mint_service_key(), "sb_secret_abcdefghijklmnop", "not-a-jwt", "a.b.c"]
)
async def test_service_role_and_opaque_keys_are_left_to_the_server(key: str) -> None:
    settings = settings_for("http://127.0.0.1:1/storage/v1", STORAGE_SERVICE_ROLE_KEY=key)
    storage = open_storage(settings)
    await storage.aclose()


async def test_open_storage_picks_the_backend(tmp_path: Path) -> None:
    local = open_storage(settings_for(f"file://{tmp_path}"))
    assert isinstance(local, FileStorage)
    remote = open_storage(settings_for("https://abc.supabase.co", STORAGE_SERVICE_ROLE_KEY="k"))
    assert isinstance(remote, SupabaseStorage)
    assert remote.api_url == "https://abc.supabase.co/storage/v1"
    await remote.aclose()


def test_file_url_must_be_absolute() -> None:
    with pytest.raises(PermanentError, match="file:///absolute/dir"):
        FileStorage.from_url("file://relative/dir", "b")


def test_file_storage_rejects_escaping_keys(tmp_path: Path) -> None:
    storage = FileStorage(tmp_path, "b")
    for key in ("../x", "/abs", "a//b", "a/./b", ""):
        with pytest.raises(PermanentError):
            storage.path(key)


async def test_file_storage_round_trip(tmp_path: Path) -> None:
    (tmp_path / "root" / "bucket").mkdir(parents=True)
    storage = FileStorage(tmp_path / "root", "bucket")
    source = tmp_path / "catalog.ndjson"
    data = b"".join(b'{"line": %d}\n' % i for i in range(200_000))
    source.write_bytes(data)
    digest = hashlib.sha256(data).hexdigest()
    assert await storage.info("runs/r1.ndjson") is None

    stored = await storage.upload("runs/r1.ndjson", source, metadata={"sha256": digest})
    assert stored.size == len(data)
    await storage.publish("runs/r1.ndjson", "latest.ndjson", metadata={"sha256": digest})

    for key in ("runs/r1.ndjson", "latest.ndjson"):
        info = await storage.info(key)
        assert info is not None
        assert info.size == len(data)
        assert info.metadata["sha256"] == digest
        chunks = [chunk async for chunk in storage.stream(key)]
        assert len(chunks) > 1
        assert hashlib.sha256(b"".join(chunks)).hexdigest() == digest
    leftovers = [p.name for p in (tmp_path / "root" / "bucket").rglob("*") if ".tmp" in p.name]
    assert leftovers == []


async def test_file_storage_stream_of_missing_object(tmp_path: Path) -> None:
    (tmp_path / "bucket").mkdir()
    storage = FileStorage(tmp_path, "bucket")
    with pytest.raises(PermanentError) as caught:
        async for _ in storage.stream("nope.ndjson"):
            pass
    assert caught.value.reason == "ObjectNotFound"


@pytest.mark.parametrize("missing", ["bucket", "directory"])
async def test_file_storage_needs_an_existing_bucket(tmp_path: Path, missing: str) -> None:
    """A typo or an unmounted volume is BucketNotFound, and nothing is created on the way."""
    root = tmp_path / "store"
    if missing == "bucket":
        root.mkdir()
    source = tmp_path / "c.ndjson"
    source.write_bytes(b"{}\n")
    storage = FileStorage(root, "medipim-raw")
    calls: dict[str, Callable[[], Awaitable[object]]] = {
        "info": lambda: storage.info("latest.ndjson"),
        "upload": lambda: storage.upload("runs/r.ndjson", source, metadata={}),
        "publish": lambda: storage.publish("runs/r.ndjson", "latest.ndjson", metadata={}),
        "stream": lambda: anext(aiter(storage.stream("latest.ndjson"))),
    }
    for name, call in calls.items():
        with pytest.raises(PermanentError) as caught:
            await call()
        assert caught.value.reason == "BucketNotFound", name
        assert str(root / "medipim-raw") in str(caught.value)
        assert "STORAGE_BUCKET" in str(caught.value)
    assert not (root / "medipim-raw").exists()
    assert root.exists() == (missing == "bucket")


# --- against the local Supabase Storage server ------------------------------------------------

CHUNK = 256 * 1024
QUICK = RetryPolicy(attempts=8, initial=0.05, maximum=0.5)


def catalog_file(path: Path, size: int) -> tuple[Path, str]:
    line = b'{"meta":{"index":0,"total":1},"result":{"id":"M000000000"}}\n'
    data = (line * (size // len(line) + 1))[:size]
    path.write_bytes(data)
    return path, hashlib.sha256(data).hexdigest()


def supabase(server: StorageServer, **options: Any) -> SupabaseStorage:
    key = server.headers["apikey"]
    return SupabaseStorage(
        server.url, DEFAULT_BUCKET, key, chunk_size=CHUNK, retry=QUICK, **options
    )


async def read_all(storage: SupabaseStorage, key: str) -> bytes:
    return b"".join([chunk async for chunk in storage.stream(key)])


async def test_supabase_upload_publish_stream_info(
    storage_server: StorageServer, tmp_path: Path
) -> None:
    source, digest = catalog_file(tmp_path / "c.ndjson", 5 * CHUNK + 123)
    storage = supabase(storage_server)
    run_key, latest_key = "client-test/runs/r1.ndjson", "client-test/latest.ndjson"
    try:
        assert await storage.info(run_key) is None
        seen: list[int] = []

        async def progress(sent: int, size: int) -> None:
            seen.append(sent)

        stored = await storage.upload(
            run_key, source, metadata={"sha256": digest, "records": "7"}, progress=progress
        )
        assert stored.size == source.stat().st_size
        assert seen == [CHUNK * i for i in range(1, 6)] + [stored.size]
        await storage.publish(run_key, latest_key, metadata={"sha256": digest, "records": "7"})
        for key in (run_key, latest_key):
            info = await storage.info(key)
            assert info is not None
            assert info.metadata == {"sha256": digest, "records": "7"}
            assert hashlib.sha256(await read_all(storage, key)).hexdigest() == digest
    finally:
        await storage.aclose()


async def test_supabase_upload_resumes_after_a_server_crash(
    make_storage_server: MakeStorageServer, tmp_path: Path
) -> None:
    """The server dies after the second chunk; the client resumes from the server's offset."""
    server = await make_storage_server()
    source, digest = catalog_file(tmp_path / "c.ndjson", 8 * CHUNK + 5)
    size = source.stat().st_size
    storage = supabase(server)
    restarted: list[asyncio.Task[None]] = []

    async def come_back() -> None:
        await asyncio.sleep(0.5)
        await server.start()

    async def progress(sent: int, _size: int) -> None:
        if sent == 2 * CHUNK and not restarted:
            await server.kill()
            restarted.append(asyncio.create_task(come_back()))

    try:
        await storage.upload("runs/crash.ndjson", source, metadata={}, progress=progress)
        assert restarted
        assert hashlib.sha256(await read_all(storage, "runs/crash.ndjson")).hexdigest() == digest
        stats = await server.stats()
        assert stats.requests.get("POST upload") == 1
        assert stats.upload_bytes_received < size + CHUNK
        assert stats.requests.get("HEAD upload", 0) >= 1
    finally:
        await storage.aclose()


async def test_supabase_same_key_twice_is_a_fresh_upload(
    make_storage_server: MakeStorageServer, tmp_path: Path
) -> None:
    server = await make_storage_server()
    storage = supabase(server)
    first, _ = catalog_file(tmp_path / "a.ndjson", 3 * CHUNK)
    second = tmp_path / "b.ndjson"
    second.write_bytes(first.read_bytes()[: 2 * CHUNK] + b"x" * CHUNK)  # same head, same size
    try:
        await storage.upload("runs/same.ndjson", first, metadata={})
        await storage.upload("runs/same.ndjson", second, metadata={})
        assert await read_all(storage, "runs/same.ndjson") == second.read_bytes()
        stats = await server.stats()
        assert stats.requests.get("POST upload") == 2
        assert stats.upload_bytes_received == 6 * CHUNK
    finally:
        await storage.aclose()


async def test_supabase_rejected_key_names_the_secret(
    storage_server: StorageServer, tmp_path: Path
) -> None:
    source, _ = catalog_file(tmp_path / "c.ndjson", 1000)
    storage = SupabaseStorage(
        storage_server.url, DEFAULT_BUCKET, "not-the-key", credentials_secret="sb", retry=QUICK
    )
    try:
        for call in (
            storage.info("x.ndjson"),
            storage.upload("x.ndjson", source, metadata={}),
            storage.publish("x.ndjson", "y.ndjson", metadata={}),
        ):
            with pytest.raises(PermanentError, match=r"'serviceRoleKey' of Secret 'sb'") as caught:
                await call
            assert caught.value.reason == "InvalidCredentials"
            assert "not-the-key" not in str(caught.value)
    finally:
        await storage.aclose()


async def test_supabase_missing_bucket_and_object(
    storage_server: StorageServer, tmp_path: Path
) -> None:
    key = storage_server.headers["apikey"]
    storage = SupabaseStorage(storage_server.url, "no-such-bucket", key, retry=QUICK)
    source, _ = catalog_file(tmp_path / "c.ndjson", 1000)
    present = supabase(storage_server)
    try:
        with pytest.raises(PermanentError) as caught:
            await storage.upload("x.ndjson", source, metadata={})
        assert caught.value.reason == "BucketNotFound"
        with pytest.raises(PermanentError) as missing:
            await read_all(present, "client-test/none.ndjson")
        assert missing.value.reason == "ObjectNotFound"
    finally:
        await storage.aclose()
        await present.aclose()


async def test_supabase_expired_upload_url_starts_a_new_upload(
    make_storage_server: MakeStorageServer, tmp_path: Path
) -> None:
    server = await make_storage_server(upload_expiry=0.5)
    source, digest = catalog_file(tmp_path / "c.ndjson", 3 * CHUNK + 1)
    storage = supabase(server)
    waited: list[int] = []

    async def progress(sent: int, _size: int) -> None:
        if not waited:
            waited.append(sent)
            await asyncio.sleep(1.0)  # the upload URL expires meanwhile

    try:
        await storage.upload("runs/expired.ndjson", source, metadata={}, progress=progress)
        assert hashlib.sha256(await read_all(storage, "runs/expired.ndjson")).hexdigest() == digest
        stats = await server.stats()
        assert stats.requests.get("POST upload") == 2
    finally:
        await storage.aclose()


async def test_supabase_download_resumes_with_a_range_after_a_crash(
    make_storage_server: MakeStorageServer, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    server = await make_storage_server()
    source, digest = catalog_file(tmp_path / "c.ndjson", 64 * 1024 * 1024)
    storage = supabase(server)
    try:
        await storage.upload("runs/big.ndjson", source, metadata={})
        received = hashlib.sha256()
        crashed = False
        async for chunk in storage.stream("runs/big.ndjson"):
            received.update(chunk)
            if not crashed:
                crashed = True
                await server.kill()
                await server.start()
        assert received.hexdigest() == digest
        assert "interrupted at byte" in caplog.text
    finally:
        await storage.aclose()
