"""A local directory as storage (``file:///dir``): publish by atomic rename."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import shutil
from collections.abc import AsyncIterator, Callable, Mapping
from pathlib import Path
from urllib.parse import unquote, urlparse

import orjson

from catalogsync.common.errors import PermanentError
from catalogsync.common.storage.protocol import STREAM_CHUNK, ObjectInfo, UploadProgress

log = logging.getLogger(__name__)

SIDECAR_SUFFIX = ".meta.json"


class FileStorage:
    """Objects as files under ``<root>/<bucket>/``; user metadata in a ``.meta.json`` sidecar.

    Every write goes to a temporary file in the destination's directory and is renamed into place,
    so a reader sees the old object or the new one, never a partial file. The sidecar is renamed
    right after the object, so for a moment a reader may pair new bytes with the old metadata.
    """

    def __init__(self, root: Path, bucket: str) -> None:
        self.root = root / bucket

    def require_bucket(self) -> None:
        """Refuse a bucket directory that is not there, rather than create it.

        A missing directory is a typo in ``STORAGE_BUCKET`` or ``STORAGE_URL``, or a volume that
        was not mounted: creating it would write the catalog where nobody reads it, or into the
        container's own filesystem, and report success.
        """
        if self.root.is_dir():
            return
        where = f"bucket directory {self.root} does not exist"
        if not self.root.parent.is_dir():
            where += f" (nor does {self.root.parent}, the STORAGE_URL directory: no volume?)"
        raise PermanentError(
            f"{where}: create it (mkdir -p {self.root}) or set STORAGE_BUCKET / STORAGE_URL to "
            "an existing one; file:// storage never creates a bucket",
            reason="BucketNotFound",
        )

    @classmethod
    def from_url(cls, url: str, bucket: str) -> FileStorage:
        parsed = urlparse(url)
        path = Path(unquote(parsed.path))
        if parsed.netloc not in ("", "localhost") or not path.is_absolute():
            raise PermanentError(
                f"STORAGE_URL {url!r} is not a usable file URL: write file:///absolute/dir",
                reason="InvalidConfiguration",
            )
        return cls(path, bucket)

    def path(self, key: str) -> Path:
        parts = key.split("/")
        if not key or key.startswith("/") or any(p in ("", ".", "..") for p in parts):
            raise PermanentError(f"invalid storage key {key!r}", reason="InvalidConfiguration")
        return self.root.joinpath(*parts)

    def _sidecar(self, key: str) -> Path:
        target = self.path(key)
        return target.with_name(target.name + SIDECAR_SUFFIX)

    async def info(self, key: str) -> ObjectInfo | None:
        return await asyncio.to_thread(self._info, key)

    def _info(self, key: str) -> ObjectInfo | None:
        self.require_bucket()
        try:
            stat = self.path(key).stat()
        except FileNotFoundError:
            return None
        try:
            raw = orjson.loads(self._sidecar(key).read_bytes())
        except (FileNotFoundError, orjson.JSONDecodeError):
            raw = {}
        metadata = {str(k): str(v) for k, v in raw.items()} if isinstance(raw, dict) else {}
        return ObjectInfo(key=key, size=stat.st_size, metadata=metadata, etag=file_etag(stat))

    async def stream(self, key: str) -> AsyncIterator[bytes]:
        await asyncio.to_thread(self.require_bucket)
        try:
            handle = await asyncio.to_thread(self.path(key).open, "rb")
        except FileNotFoundError:
            raise PermanentError(
                f"no object {key!r} in {self.root}", reason="ObjectNotFound"
            ) from None
        try:
            while chunk := await asyncio.to_thread(handle.read, STREAM_CHUNK):
                yield chunk
        finally:
            handle.close()

    async def upload(
        self,
        key: str,
        source: Path,
        *,
        metadata: Mapping[str, str],
        progress: UploadProgress | None = None,
    ) -> ObjectInfo:
        target = self.path(key)
        size = await asyncio.to_thread(self._place, key, lambda tmp: _copy_file(source, tmp))
        await asyncio.to_thread(self._write_sidecar, key, metadata)
        if progress is not None:
            await progress(size, size)
        log.info("stored %s (%d bytes) at %s", key, size, target)
        return ObjectInfo(key=key, size=size, metadata=dict(metadata))

    async def publish(self, source_key: str, dest_key: str, *, metadata: Mapping[str, str]) -> None:
        """Hard-links the run object under a temporary name, then renames it over ``dest_key``.

        Objects are only ever replaced by rename, never rewritten in place, so sharing an inode
        with the run object is safe. Falls back to a copy where hard links are not allowed.
        """
        source = self.path(source_key)
        await asyncio.to_thread(self.require_bucket)
        if not source.is_file():
            raise PermanentError(
                f"cannot publish {source_key!r}: no such object in {self.root}",
                reason="ObjectNotFound",
            )

        def link_or_copy(tmp: Path) -> None:
            try:
                os.link(source, tmp)
            except OSError:
                _copy_file(source, tmp)

        await asyncio.to_thread(self._place, dest_key, link_or_copy)
        await asyncio.to_thread(self._write_sidecar, dest_key, metadata)

    def _place(self, key: str, fill: Callable[[Path], object]) -> int:
        """Fill a temporary sibling of ``key`` and rename it into place; returns the size."""
        target = self.path(key)
        self.require_bucket()
        target.parent.mkdir(parents=True, exist_ok=True)  # "runs/" inside the bucket
        tmp = target.with_name(f".{target.name}.{os.getpid()}.{id(fill):x}.tmp")
        try:
            fill(tmp)
            os.replace(tmp, target)
        finally:
            _unlink_quietly(tmp)
        return target.stat().st_size

    def _write_sidecar(self, key: str, metadata: Mapping[str, str]) -> None:
        data = orjson.dumps(dict(metadata), option=orjson.OPT_SORT_KEYS)
        self._place(key + SIDECAR_SUFFIX, lambda tmp: tmp.write_bytes(data))

    async def aclose(self) -> None:
        return None


def file_etag(stat: os.stat_result) -> str:
    """A file's version tag: objects are replaced by rename, so a new version is a new inode."""
    return f'"{stat.st_ino:x}-{stat.st_mtime_ns:x}-{stat.st_size:x}"'


def _unlink_quietly(path: Path) -> None:
    with contextlib.suppress(FileNotFoundError):
        os.unlink(path)


def _copy_file(source: Path, target: Path) -> None:
    """Copies ``source`` and flushes it to disk, so a rename never exposes unwritten data."""
    with source.open("rb") as src, target.open("wb") as dst:
        shutil.copyfileobj(src, dst, STREAM_CHUNK)
        dst.flush()
        os.fsync(dst.fileno())
