"""Supabase Storage: TUS uploads, copy-with-upsert to publish, streamed ranged downloads.

Supabase reports most failures as HTTP 400 with the real status and code in a JSON body; the
functions here read those shapes and map each failure onto the exit-code contract.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import logging
from collections.abc import AsyncIterator, Iterator, Mapping
from pathlib import Path
from typing import Any, Literal
from urllib.parse import quote, urlsplit

import httpx
import orjson

from catalogsync.common.errors import PermanentError, SyncError, TransientError
from catalogsync.common.retry import RetryPolicy
from catalogsync.common.storage.protocol import STREAM_CHUNK, ObjectInfo, UploadProgress
from catalogsync.common.storage.tus import TusCommunicationError, describe, new_uploader

log = logging.getLogger(__name__)


def _error_body(content: bytes) -> dict[str, Any]:
    try:
        body = orjson.loads(content)
    except orjson.JSONDecodeError:
        return {}
    return body if isinstance(body, dict) else {}


def semantic_status(status: int, content: bytes) -> int:
    """The status Supabase means: most REST errors are HTTP 400 with the real one in the body."""
    body = _error_body(content)
    try:
        return int(body.get("statusCode", status))
    except (TypeError, ValueError):
        return status


def is_auth_failure(status: int, content: bytes) -> bool:
    """Rejected credentials, in any of the shapes Supabase uses (401, 403, 400 AccessDenied)."""
    if status in (401, 403):
        return True
    body = _error_body(content)
    code = str(body.get("code", ""))
    return code in ("AccessDenied", "InvalidJWT", "Unauthorized") or str(
        body.get("statusCode")
    ) in ("401", "403")


def credentials_error(secret: str, detail: str) -> PermanentError:
    return PermanentError(
        f"Supabase Storage rejected the service role key ({detail}): check key 'serviceRoleKey' "
        f"of Secret '{secret}' (STORAGE_SERVICE_ROLE_KEY)",
        reason="InvalidCredentials",
    )


SERVICE_ROLE = "service_role"
PUBLISHABLE_PREFIX = "sb_publishable_"
"""Supabase's newer public API keys (the anon key's successor); secret keys are ``sb_secret_``."""


def jwt_role(key: str) -> str | None:
    """The ``role`` claim of a JWT-shaped key, read without verifying it; ``None`` if it has none.

    Only the payload is decoded (base64url JSON): which role the key claims is all that is wanted
    before the first request, and the server verifies the signature anyway.
    """
    parts = key.split(".")
    if len(parts) != 3:
        return None
    try:
        payload = orjson.loads(base64.urlsafe_b64decode(parts[1] + "=" * (-len(parts[1]) % 4)))
    except (ValueError, orjson.JSONDecodeError):
        return None
    role = payload.get("role") if isinstance(payload, dict) else None
    return role if isinstance(role, str) else None


def service_role_problem(key: str) -> str | None:
    """Why ``key`` cannot be a service role key, or ``None`` when only the server can tell.

    The anon key is a valid JWT: without this check it passes every read (RLS just hides the
    objects) and fails only at the upload, after the whole catalog was downloaded.
    """
    if key.startswith(PUBLISHABLE_PREFIX):
        return "it is a publishable key (sb_publishable_...), not a secret or service role key"
    role = jwt_role(key)
    if role is not None and role != SERVICE_ROLE:
        what = " (the project's public anon key)" if role == "anon" else ""
        return f"it is a JWT of role {role!r}{what}, not of role {SERVICE_ROLE!r}"
    return None


NDJSON = "application/x-ndjson"
CACHE_SECONDS = "60"
"""``cacheControl`` of uploads: ``latest.ndjson`` gets overwritten, so CDN copies stay short."""

TusAction = Literal["retry", "restart", "credentials", "fatal"]


def tus_action(status: int | None, content: bytes | str | None, phase: str) -> TusAction:
    """What to do after a failed TUS request in ``phase`` (``create``, ``resume`` or ``patch``).

    No status means the connection failed: retry. 404/410 on an existing upload means it expired
    or vanished: start a new one. 409 (offset conflict) and lock contention: ask for the offset.
    """
    text = content.decode("utf-8", "replace") if isinstance(content, bytes) else content or ""
    raw = text.encode()
    if status is None or status in (408, 409, 423, 429) or status >= 500:
        return "retry"
    if is_auth_failure(status, raw):
        return "credentials"
    if status in (404, 410) and phase != "create":
        return "restart"
    if status == 400 and "lock" in text.lower():
        return "retry"
    return "fatal"


class SupabaseStorage:
    """Supabase Storage over HTTP: TUS uploads, ``/object/copy`` to publish, streamed reads."""

    def __init__(
        self,
        api_url: str,
        bucket: str,
        key: str,
        *,
        credentials_secret: str = "supabase-storage",
        chunk_size: int = 6 * 1024 * 1024,
        retry: RetryPolicy | None = None,
        timeout: float = 120.0,
    ) -> None:
        problem = service_role_problem(key)
        if problem is not None:
            raise PermanentError(
                f"STORAGE_SERVICE_ROLE_KEY is not a service role key: {problem}. Put the "
                "project's service_role (or sb_secret_) key under key 'serviceRoleKey' of Secret "
                f"'{credentials_secret}'; nothing was downloaded or uploaded",
                reason="InvalidCredentials",
            )
        self.api_url = api_url.rstrip("/")
        self.bucket = bucket
        self.credentials_secret = credentials_secret
        self.chunk_size = chunk_size
        self.retry = retry or RetryPolicy()
        self.timeout = timeout
        self.headers = {"Authorization": f"Bearer {key}", "apikey": key}
        self._http = httpx.AsyncClient(
            base_url=self.api_url,
            headers=self.headers,
            timeout=httpx.Timeout(timeout, connect=min(timeout, 30.0)),
        )

    def unreachable(self, action: str, error: BaseException, attempts: int) -> TransientError:
        """Storage could not be reached at all: say which service, which variable, which host."""
        host = urlsplit(self.api_url).netloc or self.api_url
        return TransientError(
            f"Supabase Storage at {host} (STORAGE_URL) is unreachable: {action} failed "
            f"{attempts} times, last: {type(error).__name__}: {error}",
            reason="StorageUnavailable",
        )

    @contextlib.contextmanager
    def _reaching(self, action: str) -> Iterator[None]:
        """Turns a connection failure that outlived the retries into ``StorageUnavailable``."""
        try:
            yield
        except httpx.TransportError as exc:
            raise self.unreachable(action, exc, self.retry.attempts) from None

    def _object_path(self, route: str, key: str) -> str:
        return f"/object/{route}{quote(self.bucket)}/{quote(key)}"

    def _fail(self, response: httpx.Response, action: str, content: bytes) -> SyncError:
        """Turn an error response into the exception the exit-code contract expects."""
        status = response.status_code
        meaning = semantic_status(status, content)
        detail = content[:300].decode("utf-8", "replace")
        if is_auth_failure(status, content):
            return credentials_error(self.credentials_secret, f"HTTP {status}: {detail}")
        if _error_body(content).get("code") == "NoSuchBucket" or "Bucket not found" in detail:
            return PermanentError(
                f"bucket '{self.bucket}' does not exist in {self.api_url}: create it or set "
                "STORAGE_BUCKET",
                reason="BucketNotFound",
            )
        if meaning == 404:
            return PermanentError(
                f"{action}: no such object in bucket '{self.bucket}' ({detail})",
                reason="ObjectNotFound",
            )
        if meaning >= 500 or meaning in (408, 423, 429):
            return TransientError(
                f"{action}: HTTP {meaning}: {detail}", reason="StorageUnavailable"
            )
        return PermanentError(f"{action}: HTTP {meaning}: {detail}", reason="StorageRejected")

    async def info(self, key: str) -> ObjectInfo | None:
        with self._reaching(f"reading the info of {key}"):
            return await self._info(key)

    async def _info(self, key: str) -> ObjectInfo | None:
        async for attempt in self.retry.retrying((TransientError, httpx.TransportError), "info"):
            with attempt:
                # Not /object/info/{bucket}/{key}: that route reads a rejected token as anonymous,
                # and a private bucket then answers NoSuchBucket instead of AccessDenied.
                response = await self._http.get(self._object_path("info/authenticated/", key))
                if response.is_success:
                    body = _error_body(response.content)
                    raw = body.get("metadata") or {}
                    metadata = (
                        {str(k): str(v) for k, v in raw.items()} if isinstance(raw, dict) else {}
                    )
                    etag = body.get("etag")
                    return ObjectInfo(
                        key=key,
                        size=int(body.get("size") or 0),
                        metadata=metadata,
                        etag=str(etag) if etag else None,
                    )
                if semantic_status(response.status_code, response.content) == 404 and not (
                    is_auth_failure(response.status_code, response.content)
                    or _error_body(response.content).get("code") == "NoSuchBucket"
                ):
                    return None
                raise self._fail(response, f"reading the info of {key}", response.content)
        raise AssertionError("unreachable")  # pragma: no cover

    async def stream(self, key: str) -> AsyncIterator[bytes]:
        """Streams ``key``; a dropped connection resumes with a Range request where it stopped.

        The object's ETag is pinned by the first response, so a resume never splices the bytes of
        an object that was replaced in the meantime.
        """
        received = 0
        etag: str | None = None
        failures = 0
        path = self._object_path("authenticated/", key)
        while True:
            headers = {"Range": f"bytes={received}-"} if received else {}
            try:
                async with self._http.stream("GET", path, headers=headers) as response:
                    if not response.is_success:
                        content = await response.aread()
                        raise self._fail(response, f"downloading {key}", content)
                    if received and response.status_code != 206:
                        raise TransientError(
                            f"downloading {key}: the server ignored the resume range",
                            reason="StorageUnavailable",
                        )
                    tag = response.headers.get("etag")
                    if etag is not None and tag is not None and tag != etag:
                        raise TransientError(
                            f"{key} changed while it was being read; read it again",
                            reason="ObjectChanged",
                        )
                    etag = etag or tag
                    async for chunk in response.aiter_bytes(STREAM_CHUNK):
                        received += len(chunk)
                        failures = 0
                        yield chunk
                return
            except (httpx.TransportError, TransientError) as exc:
                if isinstance(exc, TransientError) and exc.reason == "ObjectChanged":
                    raise
                failures += 1
                if failures >= self.retry.attempts:
                    if isinstance(exc, SyncError):
                        raise
                    raise self.unreachable(f"downloading {key}", exc, failures) from exc
                delay = self.retry.delay(failures)
                log.warning(
                    "downloading %s interrupted at byte %d (%r); resuming in %.1fs",
                    key,
                    received,
                    exc,
                    delay,
                )
                await asyncio.sleep(delay)

    async def upload(
        self,
        key: str,
        source: Path,
        *,
        metadata: Mapping[str, str],
        progress: UploadProgress | None = None,
    ) -> ObjectInfo:
        """Uploads ``source`` over TUS in ``chunk_size`` PATCHes, with ``x-upsert`` on each.

        Every call creates a new upload: nothing is remembered across calls or processes, so a
        second upload of the same key never "resumes" a finished one. Within the call, a failed
        request is followed by a HEAD and only the bytes the server has not acknowledged are sent
        again; an upload URL that expired or vanished (404/410) starts a new upload.
        """
        size = (await asyncio.to_thread(source.stat)).st_size
        tus_metadata = {
            "bucketName": self.bucket,
            "objectName": key,
            "contentType": NDJSON,
            "cacheControl": CACHE_SECONDS,
            "metadata": orjson.dumps(dict(metadata)).decode(),
        }
        with source.open("rb") as handle:
            uploader = new_uploader(
                f"{self.api_url}/upload/resumable",
                headers={**self.headers, "x-upsert": "true"},
                stream=handle,
                chunk_size=self.chunk_size,
                metadata=tus_metadata,
                timeout=self.timeout,
            )
            await self._send(uploader, key, size, progress)
        stored = await self.info(key)
        if stored is None or stored.size != size:
            raise TransientError(
                f"uploaded {size} bytes to {key} but the server holds "
                f"{'nothing' if stored is None else stored.size}",
                reason="UploadIncomplete",
            )
        return stored

    async def _send(
        self, uploader: Any, key: str, size: int, progress: UploadProgress | None
    ) -> None:
        """The TUS state machine: create, PATCH until done, HEAD after any failure."""
        failures = 0
        stale_offset = False
        while True:
            phase = "create" if uploader.url is None else "resume" if stale_offset else "patch"
            try:
                if uploader.url is None:
                    uploader.set_url(await asyncio.to_thread(uploader.create_url))
                    uploader.offset = 0
                    log.info("created upload of %s (%d bytes): %s", key, size, uploader.url)
                elif stale_offset:
                    uploader.offset = await asyncio.to_thread(uploader.get_offset)
                    log.info("resuming upload of %s at byte %d", key, uploader.offset)
                stale_offset = False
                if uploader.offset >= size:
                    return
                await asyncio.to_thread(uploader.upload_chunk)
                failures = 0
                if progress is not None:
                    await progress(uploader.offset, size)
            except TusCommunicationError as exc:
                action = tus_action(exc.status_code, exc.response_content, phase)
                detail = describe(exc)
                if action == "credentials":
                    raise credentials_error(self.credentials_secret, detail) from exc
                if action == "fatal":
                    raise self._tus_rejected(key, exc.status_code, detail) from exc
                failures += 1
                if failures >= self.retry.attempts:
                    raise TransientError(
                        f"uploading {key} failed {failures} times in a row, last: {detail}",
                        reason="StorageUnavailable",
                    ) from exc
                if action == "restart":
                    log.warning("upload URL of %s is gone (%s); starting a new upload", key, detail)
                    uploader.url = None
                    continue
                delay = self.retry.delay(failures)
                log.warning(
                    "uploading %s failed at byte %d (%s); asking the server for its offset "
                    "in %.1fs",
                    key,
                    uploader.offset,
                    detail,
                    delay,
                )
                stale_offset = True
                await asyncio.sleep(delay)

    def _tus_rejected(self, key: str, status: int | None, detail: str) -> PermanentError:
        if status == 404:
            return PermanentError(
                f"bucket '{self.bucket}' does not exist in {self.api_url}: create it or set "
                "STORAGE_BUCKET",
                reason="BucketNotFound",
            )
        if status == 413:
            return PermanentError(
                f"{key} is larger than the storage size limit ({detail}): raise the project's "
                f"upload limit or the file_size_limit of bucket '{self.bucket}'",
                reason="ObjectTooLarge",
            )
        return PermanentError(
            f"storage refused the upload of {key}: {detail}", reason="StorageRejected"
        )

    async def publish(self, source_key: str, dest_key: str, *, metadata: Mapping[str, str]) -> None:
        """Server-side copy with ``x-upsert``: Supabase swaps the object row in one transaction."""
        headers = {
            "x-upsert": "true",
            "x-metadata": base64.b64encode(orjson.dumps(dict(metadata))).decode(),
        }
        body = {"bucketId": self.bucket, "sourceKey": source_key, "destinationKey": dest_key}
        retryable = (TransientError, httpx.TransportError)
        with self._reaching(f"publishing {dest_key}"):
            async for attempt in self.retry.retrying(retryable, f"publishing {dest_key}"):
                with attempt:
                    response = await self._http.post("/object/copy", json=body, headers=headers)
                    if not response.is_success:
                        raise self._fail(
                            response, f"copying {source_key} to {dest_key}", response.content
                        )
        source, published = await self.info(source_key), await self.info(dest_key)
        if source is None or published is None or published.size != source.size:
            raise TransientError(
                f"after copying {source_key} to {dest_key} the sizes differ", reason="PublishFailed"
            )

    async def aclose(self) -> None:
        await self._http.aclose()
