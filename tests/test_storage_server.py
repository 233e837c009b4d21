"""The local Supabase Storage server: the TUS, object and copy behaviour the fetcher relies on."""

from __future__ import annotations

import asyncio
import base64
import contextlib
import hashlib
import json
import random
import re
import signal
import subprocess
import sys
import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import psutil
import pytest
from tusclient import client as tus
from tusclient.exceptions import TusCommunicationError

from catalogsync.common.config import DEFAULT_BUCKET
from catalogsync.dev.storage_server import CHUNK_SIZE, StorageServer
from tests.plugins.storage import MakeStorageServer

MiB = 1024 * 1024
TUS_HEADERS = {"Tus-Resumable": "1.0.0"}
PATCH_HEADERS = {**TUS_HEADERS, "Content-Type": "application/offset+octet-stream"}
ACCESS_DENIED = {
    "statusCode": "403",
    "code": "AccessDenied",
    "error": "Unauthorized",
    "message": "Invalid Compact JWS",
}


def unique_key(name: str) -> str:
    return f"tests/{uuid.uuid4().hex[:12]}/{name}"


def write_random(path: Path, size: int, seed: int = 1) -> Path:
    path.write_bytes(random.Random(seed).randbytes(size))
    return path


def sha256_of(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def upload_metadata(**values: str) -> str:
    return ",".join(f"{key} {base64.b64encode(v.encode()).decode()}" for key, v in values.items())


def uploader(
    server: StorageServer,
    source: Path,
    key: str,
    *,
    upsert: bool = False,
    url: str | None = None,
    user_metadata: dict[str, str] | None = None,
) -> Any:
    """A tuspy uploader as the fetcher builds one (constructing it with ``url`` sends a HEAD)."""
    headers = {**server.headers, **({"x-upsert": "true"} if upsert else {})}
    metadata = {
        "bucketName": DEFAULT_BUCKET,
        "objectName": key,
        "contentType": "application/x-ndjson",
    }
    if user_metadata is not None:
        metadata["metadata"] = json.dumps(user_metadata)
    client = tus.TusClient(f"{server.url}/upload/resumable", headers=headers)
    return client.uploader(
        file_path=str(source), chunk_size=CHUNK_SIZE, metadata=metadata, url=url, store_url=False
    )


async def upload(server: StorageServer, source: Path, key: str, **options: Any) -> None:
    def run() -> None:
        uploader(server, source, key, **options).upload()

    await asyncio.to_thread(run)


async def download_sha256(server: StorageServer, key: str, route: str = "object") -> str:
    digest = hashlib.sha256()
    async with server.client() as http, http.stream("GET", f"{route}/{DEFAULT_BUCKET}/{key}") as r:
        assert r.status_code == 200
        async for block in r.aiter_bytes():
            digest.update(block)
    return digest.hexdigest()


async def create_upload(
    http: httpx.AsyncClient, key: str, length: int, **headers: str
) -> httpx.Response:
    meta = upload_metadata(bucketName=DEFAULT_BUCKET, objectName=key)
    return await http.post(
        "upload/resumable",
        headers={**TUS_HEADERS, "Upload-Length": str(length), "Upload-Metadata": meta, **headers},
    )


def server_processes(server: StorageServer) -> list[psutil.Process]:
    """Processes anywhere on the machine serving this server's data directory."""
    found = []
    for process in psutil.process_iter(["cmdline"]):
        cmdline = process.info["cmdline"] or []
        if any(arg == f"--data-dir={server.data_dir}" for arg in cmdline):
            found.append(process)
    return found


# -- TUS ------------------------------------------------------------------------------------------


async def test_interrupted_upload_resumes_from_server_offset_after_restart(
    make_storage_server: MakeStorageServer, tmp_path: Path
) -> None:
    server = await make_storage_server(enforce_chunk_size=True)
    source = write_random(tmp_path / "export.ndjson", 20_000_000)
    key = unique_key("export.ndjson")

    first = await asyncio.to_thread(uploader, server, source, key, user_metadata={"sha": "x"})
    for _ in range(2):
        await asyncio.to_thread(first.upload_chunk)
    location = first.url
    assert location.startswith(f"{server.url}/upload/resumable/")
    upload_id = base64.urlsafe_b64decode(location.rsplit("/", 1)[1] + "==").decode()
    assert re.fullmatch(rf"{DEFAULT_BUCKET}/{re.escape(key)}/[0-9a-f-]{{36}}", upload_id)

    port = server.port
    await server.stop()
    await server.start()
    assert server.port == port

    async with server.client() as http:
        missing = await http.get(f"object/info/{DEFAULT_BUCKET}/{key}")
    assert missing.json()["code"] == "NoSuchKey", "an unfinished upload must not be visible"

    resumed = await asyncio.to_thread(uploader, server, source, key, url=location)
    assert resumed.offset == 2 * CHUNK_SIZE
    await asyncio.to_thread(resumed.upload)

    stats = await server.stats()
    assert stats.upload_bytes_received < source.stat().st_size + CHUNK_SIZE
    assert stats.requests["PATCH upload"] == 4
    assert await download_sha256(server, key, "object/authenticated") == sha256_of(source)
    async with server.client() as http:
        info = (await http.get(f"object/info/authenticated/{DEFAULT_BUCKET}/{key}")).json()
    assert info["size"] == 20_000_000
    assert info["content_type"] == "application/x-ndjson"
    assert info["cache_control"] == "no-cache"
    assert info["metadata"] == {"sha": "x"}
    assert set(info) == {
        "id",
        "name",
        "version",
        "bucket_id",
        "size",
        "content_type",
        "cache_control",
        "etag",
        "metadata",
        "last_modified",
        "created_at",
    }


async def test_upload_to_existing_path_needs_upsert_on_every_request(
    storage_server: StorageServer, tmp_path: Path
) -> None:
    key = unique_key("object.ndjson")
    first = write_random(tmp_path / "first", 1000, seed=1)
    second = write_random(tmp_path / "second", 2000, seed=2)
    await upload(storage_server, first, key)

    with pytest.raises(TusCommunicationError) as refused:
        await upload(storage_server, second, key)
    assert refused.value.status_code == 409
    assert refused.value.response_content == b"The resource already exists"

    async with storage_server.client() as http:
        created = await create_upload(http, key, 2000, **{"x-upsert": "true"})
        assert created.status_code == 201
        patch = await http.patch(
            created.headers["location"],
            content=second.read_bytes(),
            headers={**PATCH_HEADERS, "Upload-Offset": "0"},
        )
        assert (patch.status_code, patch.text) == (409, "The resource already exists")

    await upload(storage_server, second, key, upsert=True)
    assert await download_sha256(storage_server, key) == sha256_of(second)


async def test_non_six_mib_chunks_refused_only_when_enforced(
    storage_server: StorageServer, make_storage_server: MakeStorageServer
) -> None:
    enforcing = await make_storage_server(enforce_chunk_size=True)
    seven = b"7" * (7 * MiB)
    for server, accepted in ((enforcing, False), (storage_server, True)):
        async with server.client() as http:
            created = await create_upload(http, unique_key("big"), 20 * MiB)
            location = created.headers["location"]
            first = await http.patch(
                location, content=seven, headers={**PATCH_HEADERS, "Upload-Offset": "0"}
            )
            offset = (await http.head(location, headers=TUS_HEADERS)).headers["upload-offset"]
        if accepted:
            assert (first.status_code, offset) == (204, str(7 * MiB))
        else:
            assert first.status_code == 413
            assert "6291456" in first.text
            assert offset == "0"

    async with enforcing.client() as http:
        created = await create_upload(http, unique_key("small"), 7 * MiB)
        location = created.headers["location"]
        short = await http.patch(
            location, content=b"s" * MiB, headers={**PATCH_HEADERS, "Upload-Offset": "0"}
        )
        assert short.status_code == 400
        exact = await http.patch(
            location, content=b"x" * CHUNK_SIZE, headers={**PATCH_HEADERS, "Upload-Offset": "0"}
        )
        assert exact.status_code == 204
        final = await http.patch(
            location,
            content=b"y" * (7 * MiB - CHUNK_SIZE),
            headers={**PATCH_HEADERS, "Upload-Offset": str(CHUNK_SIZE)},
        )
        assert (final.status_code, final.headers["tus-complete"]) == (204, "1")


async def test_expired_upload_url_answers_410(make_storage_server: MakeStorageServer) -> None:
    server = await make_storage_server(upload_expiry=2.0)
    async with server.client() as http:
        created = await create_upload(http, unique_key("late"), 10)
        assert "upload-expires" in created.headers
        location = created.headers["location"]
        first = await http.patch(
            location, content=b"01234", headers={**PATCH_HEADERS, "Upload-Offset": "0"}
        )
        assert first.status_code == 204
        assert "upload-expires" in first.headers
        # The URL lives 2 s from its creation; poll for the expiry rather than guess a sleep.
        for _ in range(100):
            head = await http.head(location, headers=TUS_HEADERS)
            if head.status_code != 200:
                break
            await asyncio.sleep(0.1)
        late = await http.patch(
            location, content=b"56789", headers={**PATCH_HEADERS, "Upload-Offset": "5"}
        )
    assert head.status_code == 410
    assert (late.status_code, late.text) == (410, "The file for this url no longer exists\n")


async def test_unknown_and_terminated_uploads_answer_404(storage_server: StorageServer) -> None:
    async with storage_server.client() as http:
        unknown = base64.urlsafe_b64encode(f"{DEFAULT_BUCKET}/x/{uuid.uuid4()}".encode()).decode()
        assert (
            await http.head(f"upload/resumable/{unknown}", headers=TUS_HEADERS)
        ).status_code == 404
        garbage = await http.head("upload/resumable/not-an-id", headers=TUS_HEADERS)
        assert garbage.status_code == 404

        created = await create_upload(http, unique_key("gone"), 10)
        location = created.headers["location"]
        assert (await http.delete(location, headers=TUS_HEADERS)).status_code == 204
        assert (await http.head(location, headers=TUS_HEADERS)).status_code == 404


async def test_options_discovery_and_status_need_no_auth(storage_server: StorageServer) -> None:
    async with httpx.AsyncClient() as http:
        response = await http.options(f"{storage_server.url}/upload/resumable")
        status = await http.get(f"{storage_server.url}/status")
    assert status.status_code == 200
    assert response.status_code == 204
    assert response.headers["tus-version"] == "1.0.0"
    assert "expiration" in response.headers["tus-extension"].split(",")
    assert int(response.headers["tus-max-size"]) > 0
    assert "X-Upsert" in response.headers["access-control-allow-headers"]


async def test_missing_bucket_refuses_upload(storage_server: StorageServer) -> None:
    async with storage_server.client() as http:
        meta = upload_metadata(bucketName="no-such-bucket", objectName="a")
        response = await http.post(
            "upload/resumable",
            headers={**TUS_HEADERS, "Upload-Length": "1", "Upload-Metadata": meta},
        )
    assert (response.status_code, response.text) == (404, "Bucket not found")


# -- auth and the REST envelope --------------------------------------------------------------------


@pytest.mark.parametrize("authorization", [None, "Bearer nope", "Basic abc"])
async def test_bad_token_gets_access_denied_envelope(
    storage_server: StorageServer, authorization: str | None
) -> None:
    headers = {"Authorization": authorization} if authorization else {}
    async with httpx.AsyncClient(base_url=f"{storage_server.url}/", headers=headers) as http:
        answers = [
            await http.get(f"object/{DEFAULT_BUCKET}/anything"),
            await http.get("bucket"),
            await http.post(
                "upload/resumable", headers={**TUS_HEADERS, "Upload-Length": "5"}, content=b""
            ),
            await http.patch("upload/resumable/abc", headers=PATCH_HEADERS, content=b"x" * 1000),
        ]
    for answer in answers:
        assert (answer.status_code, answer.json()) == (400, ACCESS_DENIED)


async def test_info_route_without_authenticated_reads_a_bad_token_as_anonymous(
    storage_server: StorageServer, tmp_path: Path
) -> None:
    """``/object/info/{bucket}/{key}`` has allowInvalidJwt: a bad token is anonymous, and a private
    bucket is then NoSuchBucket; ``/object/info/authenticated/...`` says AccessDenied."""
    key = unique_key("info")
    await upload(storage_server, write_random(tmp_path / "info", 10), key)
    bad = {"Authorization": "Bearer not-the-key"}
    async with httpx.AsyncClient(base_url=f"{storage_server.url}/", headers=bad) as http:
        anonymous = await http.get(f"object/info/{DEFAULT_BUCKET}/{key}")
        authenticated = await http.get(f"object/info/authenticated/{DEFAULT_BUCKET}/{key}")
    assert anonymous.status_code == authenticated.status_code == 400
    assert (anonymous.json()["statusCode"], anonymous.json()["code"]) == ("404", "NoSuchBucket")
    assert (authenticated.json()["statusCode"], authenticated.json()["code"]) == (
        "403",
        "AccessDenied",
    )
    async with storage_server.client() as http:
        for route in ("object/info", "object/info/authenticated"):
            found = await http.get(f"{route}/{DEFAULT_BUCKET}/{key}")
            assert (found.status_code, found.json()["size"]) == (200, 10)


async def test_anon_key_sees_no_objects_and_may_not_upload(
    storage_server: StorageServer, tmp_path: Path
) -> None:
    """A valid JWT of role anon: RLS hides every object and refuses every new row."""
    key = unique_key("anon")
    await upload(storage_server, write_random(tmp_path / "anon", 10), key)
    anon = {"Authorization": f"Bearer {storage_server.anon_key}"}
    async with httpx.AsyncClient(base_url=f"{storage_server.url}/", headers=anon) as http:
        info = await http.get(f"object/info/authenticated/{DEFAULT_BUCKET}/{key}")
        created = await create_upload(http, unique_key("anon-upload"), 5)
    assert (info.status_code, info.json()["code"]) == (400, "NoSuchKey")
    assert (created.status_code, created.text) == (
        403,
        "new row violates row-level security policy",
    )


async def test_rest_errors_use_the_400_envelope(storage_server: StorageServer) -> None:
    async with storage_server.client() as http:
        no_key = await http.get(f"object/{DEFAULT_BUCKET}/{unique_key('missing')}")
        no_bucket = await http.get("object/info/no-such-bucket/a")
        duplicate = await http.post("bucket", json={"name": DEFAULT_BUCKET})
        delete_missing = await http.delete(f"object/{DEFAULT_BUCKET}/{unique_key('missing')}")
    assert no_key.status_code == no_bucket.status_code == duplicate.status_code == 400
    assert no_key.json() == {
        "statusCode": "404",
        "code": "NoSuchKey",
        "error": "not_found",
        "message": "Object not found",
    }
    assert (no_bucket.json()["statusCode"], no_bucket.json()["code"]) == ("404", "NoSuchBucket")
    assert duplicate.json()["statusCode"] == "409"
    assert duplicate.json()["code"] == "BucketAlreadyExists"
    assert delete_missing.json()["code"] == "NoSuchKey"


async def test_buckets_delete_and_bulk_delete(storage_server: StorageServer) -> None:
    bucket = f"b-{uuid.uuid4().hex[:8]}"
    async with storage_server.client() as http:
        assert (await http.post("bucket", json={"name": bucket})).json() == {"name": bucket}
        assert bucket in [b["id"] for b in (await http.get("bucket")).json()]
        for name in ("a", "b", "c"):
            stored = await http.post(f"object/{bucket}/dir/{name}", content=name.encode())
            assert stored.json()["Key"] == f"{bucket}/dir/{name}"
        one = await http.delete(f"object/{bucket}/dir/a")
        assert one.json() == {"message": "Successfully deleted"}
        bulk = await http.request(
            "DELETE", f"object/{bucket}", json={"prefixes": ["dir/b", "dir/missing", "dir/c"]}
        )
        assert sorted(row["name"] for row in bulk.json()) == ["dir/b", "dir/c"]
        assert (await http.get(f"object/{bucket}/dir/b")).json()["code"] == "NoSuchKey"
        assert (await http.delete(f"bucket/{bucket}")).status_code == 200


# -- downloads and copy ---------------------------------------------------------------------------


async def test_range_get_and_head(storage_server: StorageServer, tmp_path: Path) -> None:
    source = write_random(tmp_path / "ranged", 10_000)
    key = unique_key("ranged")
    await upload(storage_server, source, key)
    data = source.read_bytes()
    async with storage_server.client() as http:
        ranged = await http.get(
            f"object/{DEFAULT_BUCKET}/{key}", headers={"Range": "bytes=100-199"}
        )
        tail = await http.get(f"object/{DEFAULT_BUCKET}/{key}", headers={"Range": "bytes=-10"})
        head = await http.head(f"object/authenticated/{DEFAULT_BUCKET}/{key}")
        invalid = await http.get(
            f"object/{DEFAULT_BUCKET}/{key}", headers={"Range": "bytes=20000-"}
        )
    assert ranged.status_code == 206
    assert ranged.headers["content-range"] == "bytes 100-199/10000"
    assert ranged.headers["content-length"] == "100"
    assert ranged.content == data[100:200]
    assert tail.content == data[-10:]
    assert head.status_code == 200
    assert head.headers["content-length"] == "10000"
    assert head.headers["etag"] == f'"{hashlib.md5(data).hexdigest()}"'
    assert head.headers["content-type"] == "application/x-ndjson"
    assert head.headers["cache-control"] == "no-cache"
    assert head.content == b""
    # The real server answers a range it cannot satisfy with HTTP 416 itself (range.ts).
    assert (invalid.status_code, invalid.json()) == (
        416,
        {
            "statusCode": "416",
            "code": "InvalidRange",
            "error": "invalid_range",
            "message": "invalid range provided",
        },
    )


async def test_copy_replaces_existing_key_only_with_upsert(
    storage_server: StorageServer, tmp_path: Path
) -> None:
    old = write_random(tmp_path / "old", 3000, seed=3)
    new = write_random(tmp_path / "new", 4000, seed=4)
    old_key, new_key, latest = unique_key("old"), unique_key("new"), unique_key("latest.ndjson")
    await upload(storage_server, old, old_key, user_metadata={"run": "old"})
    await upload(storage_server, new, new_key, user_metadata={"run": "new"})

    def body(source: str) -> dict[str, str]:
        return {"bucketId": DEFAULT_BUCKET, "sourceKey": source, "destinationKey": latest}

    async with storage_server.client() as http:
        first = await http.post("object/copy", json=body(old_key))
        assert first.status_code == 200
        assert first.json()["Key"] == f"{DEFAULT_BUCKET}/{latest}"
        refused = await http.post("object/copy", json=body(new_key))
        assert refused.status_code == 400
        assert refused.json() == {
            "statusCode": "409",
            "code": "KeyAlreadyExists",
            "error": "Duplicate",
            "message": "The resource already exists",
        }
        assert await download_sha256(storage_server, latest) == sha256_of(old)

        replaced = await http.post("object/copy", json=body(new_key), headers={"x-upsert": "true"})
        assert replaced.status_code == 200
        assert replaced.json()["version"] != first.json()["version"]
        info = (await http.get(f"object/info/{DEFAULT_BUCKET}/{latest}")).json()
    assert (info["size"], info["metadata"]) == (4000, {"run": "new"})
    assert await download_sha256(storage_server, latest) == sha256_of(new)


async def test_copy_keeps_the_source_user_metadata(
    storage_server: StorageServer, tmp_path: Path
) -> None:
    """With copyMetadata (the default) the real server copies the source's user metadata and
    ignores x-metadata (object.ts copyObject); only copyMetadata: false takes x-metadata."""
    source = write_random(tmp_path / "src", 100)
    key, dest = unique_key("src"), unique_key("dest")
    await upload(storage_server, source, key, user_metadata={"run": "r1"})
    override = base64.b64encode(json.dumps({"run": "r1", "published": "yes"}).encode()).decode()
    async with storage_server.client() as http:
        copied = await http.post(
            "object/copy",
            json={"bucketId": DEFAULT_BUCKET, "sourceKey": key, "destinationKey": dest},
            headers={"x-metadata": override},
        )
        assert copied.status_code == 200
        info = (await http.get(f"object/info/{DEFAULT_BUCKET}/{dest}")).json()
        other = unique_key("other")
        replaced = await http.post(
            "object/copy",
            json={
                "bucketId": DEFAULT_BUCKET,
                "sourceKey": key,
                "destinationKey": other,
                "copyMetadata": False,
            },
            headers={"x-metadata": override},
        )
        assert replaced.status_code == 200
        overridden = (await http.get(f"object/info/{DEFAULT_BUCKET}/{other}")).json()
    assert info["metadata"] == {"run": "r1"}
    assert overridden["metadata"] == {"run": "r1", "published": "yes"}


# -- lifecycle ------------------------------------------------------------------------------------


async def test_data_survives_a_kill_and_no_process_survives_stop(tmp_path: Path) -> None:
    server = StorageServer(tmp_path / "data", buckets=[DEFAULT_BUCKET])
    source = write_random(tmp_path / "kept", 1234)
    async with server:
        await upload(server, source, "kept")
        pid = server.pid
        assert pid is not None
        assert server_processes(server)
        await server.kill()
        assert not psutil.pid_exists(pid)
        await server.start()
        assert await download_sha256(server, "kept") == sha256_of(source)
    assert not server.running
    assert server_processes(server) == []


def test_cli_serves_until_terminated(tmp_path: Path) -> None:
    command = [
        sys.executable,
        "-m",
        "catalogsync",
        "storage-server",
        "--port=0",
        f"--data-dir={tmp_path / 'data'}",
        "--bucket=cli-bucket",
        "--service-key=cli-key",
    ]
    with subprocess.Popen(command, stdout=subprocess.PIPE, text=True) as cli:
        assert cli.stdout is not None
        banner = cli.stdout.readline()
        url = banner.rsplit(" ", 1)[1].strip()
        assert url.endswith("/storage/v1")
        node = psutil.Process(cli.pid).children()
        buckets = httpx.get(f"{url}/bucket", headers={"Authorization": "Bearer cli-key"})
        cli.send_signal(signal.SIGTERM)
        assert cli.wait(timeout=10) == 0
    assert [b["id"] for b in buckets.json()] == ["cli-bucket"]
    assert node
    assert not any(process.is_running() for process in node)


async def test_bucket_limits_apply_to_uploads(storage_server: StorageServer) -> None:
    bucket = f"limited-{uuid.uuid4().hex[:8]}"
    async with storage_server.client() as http:
        created = await http.post(
            "bucket",
            json={"name": bucket, "file_size_limit": 100, "allowed_mime_types": ["text/plain"]},
        )
        assert created.status_code == 200

        async def post(length: int, content_type: str) -> httpx.Response:
            meta = upload_metadata(bucketName=bucket, objectName="a", contentType=content_type)
            return await http.post(
                "upload/resumable",
                headers={**TUS_HEADERS, "Upload-Length": str(length), "Upload-Metadata": meta},
            )

        too_big = await post(101, "text/plain")
        wrong_type = await post(10, "image/png")
        fine = await post(100, "text/plain")
    assert (too_big.status_code, too_big.text) == (413, "Maximum size exceeded\n")
    assert wrong_type.status_code == 415
    assert wrong_type.text == "mime type image/png is not supported"
    assert fine.status_code == 201


async def test_patch_cut_by_a_stop_resumes_from_a_partial_offset(
    make_storage_server: MakeStorageServer, tmp_path: Path
) -> None:
    server = await make_storage_server()
    data = random.Random(5).randbytes(CHUNK_SIZE + 1000)
    key = unique_key("cut")
    half = 3 * MiB
    never = asyncio.Event()

    async def first_half_then_hang() -> AsyncIterator[bytes]:
        yield data[:half]
        await never.wait()

    async with server.client() as http:
        location = (await create_upload(http, key, len(data))).headers["location"]
        cut = asyncio.create_task(
            http.patch(
                location,
                content=first_half_then_hang(),
                headers={**PATCH_HEADERS, "Upload-Offset": "0", "Content-Length": str(len(data))},
            )
        )
        for _ in range(200):
            if (await server.stats()).upload_bytes_received >= half:
                break
            await asyncio.sleep(0.05)
        await server.stop()
        cut.cancel()
        with contextlib.suppress(asyncio.CancelledError, httpx.TransportError):
            await cut

    await server.start()
    async with server.client() as http:
        offset = int((await http.head(location, headers=TUS_HEADERS)).headers["upload-offset"])
        assert 0 < offset <= half
        rest = await http.patch(
            location, content=data[offset:], headers={**PATCH_HEADERS, "Upload-Offset": str(offset)}
        )
        assert rest.headers["tus-complete"] == "1"
        stored = (await http.get(f"object/{DEFAULT_BUCKET}/{key}")).content
    assert hashlib.sha256(stored).digest() == hashlib.sha256(data).digest()
