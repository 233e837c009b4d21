"""The storage client: URL forms, error shapes, and the local-directory backend end to end."""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest

from catalogsync.common.config import StorageSettings
from catalogsync.common.errors import PermanentError
from catalogsync.common.storage import (
    FileStorage,
    SupabaseStorage,
    is_auth_failure,
    open_storage,
    semantic_status,
    storage_api_url,
    tus_action,
)


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
    storage = FileStorage(tmp_path, "bucket")
    with pytest.raises(PermanentError) as caught:
        async for _ in storage.stream("nope.ndjson"):
            pass
    assert caught.value.reason == "ObjectNotFound"
