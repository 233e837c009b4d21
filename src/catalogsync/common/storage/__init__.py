"""Where catalogs are kept between the fetcher and the maintainer.

Two backends behind one interface: Supabase Storage (TUS uploads, copy-with-upsert to publish,
streamed downloads) and a local directory (``file:///dir``, publish by atomic rename) for the local
demo and for users without Supabase. ``open_storage`` picks one from ``STORAGE_URL``.
"""

from __future__ import annotations

from urllib.parse import urlparse

from catalogsync.common.config import StorageSettings
from catalogsync.common.errors import PermanentError
from catalogsync.common.retry import RetryPolicy
from catalogsync.common.storage.local import SIDECAR_SUFFIX, FileStorage
from catalogsync.common.storage.protocol import STREAM_CHUNK, ObjectInfo, Storage, UploadProgress
from catalogsync.common.storage.supabase import (
    CACHE_SECONDS,
    NDJSON,
    SupabaseStorage,
    TusAction,
    credentials_error,
    is_auth_failure,
    semantic_status,
    tus_action,
)

__all__ = [
    "CACHE_SECONDS",
    "NDJSON",
    "SIDECAR_SUFFIX",
    "STREAM_CHUNK",
    "FileStorage",
    "ObjectInfo",
    "Storage",
    "SupabaseStorage",
    "TusAction",
    "UploadProgress",
    "credentials_error",
    "is_auth_failure",
    "open_storage",
    "semantic_status",
    "storage_api_url",
    "tus_action",
]


def storage_api_url(url: str) -> str:
    """The Storage API base for a configured URL (see ``StorageSettings.url``)."""
    base = url.rstrip("/")
    if base.endswith("/storage/v1"):
        return base
    parsed = urlparse(base)
    if parsed.scheme not in ("http", "https") or not parsed.netloc:
        raise PermanentError(
            f"STORAGE_URL {url!r} is not usable: give https://<ref>.supabase.co, a Storage API URL "
            "ending in /storage/v1, or file:///absolute/dir",
            reason="InvalidConfiguration",
        )
    return f"{base}/storage/v1"


def open_storage(
    settings: StorageSettings,
    *,
    chunk_size: int = 6 * 1024 * 1024,
    retry: RetryPolicy | None = None,
    timeout: float = 120.0,
) -> Storage:
    """The backend named by ``STORAGE_URL``: ``file://`` for a directory, else Supabase Storage.

    ``chunk_size`` is the TUS PATCH size (hosted Supabase requires 6 MiB), ``retry`` governs every
    transient failure and ``timeout`` is the longest silence tolerated on one request.
    """
    policy = retry or RetryPolicy()
    if settings.url.startswith("file:"):
        return FileStorage.from_url(settings.url, settings.bucket)
    if not settings.service_role_key:
        raise PermanentError(
            "STORAGE_SERVICE_ROLE_KEY is empty: put the service role key under key "
            f"'serviceRoleKey' of Secret '{settings.credentials_secret}'",
            reason="SecretKeyMissing",
        )
    return SupabaseStorage(
        storage_api_url(settings.url),
        settings.bucket,
        settings.service_role_key,
        credentials_secret=settings.credentials_secret,
        chunk_size=chunk_size,
        retry=policy,
        timeout=timeout,
    )
