"""The interface every storage backend offers the jobs, and the values it passes around."""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

STREAM_CHUNK = 1024 * 1024
"""Bytes per chunk handed to a reader of :meth:`Storage.stream`."""

UploadProgress = Callable[[int, int], Awaitable[None]]
"""Called with (bytes the server has acknowledged, object size) after each acknowledged chunk."""


@dataclass(frozen=True)
class ObjectInfo:
    key: str
    size: int
    metadata: Mapping[str, str] = field(default_factory=dict)
    etag: str | None = field(default=None, compare=False)
    """The server's version tag: it changes whenever the object's bytes are replaced."""

    @property
    def identity(self) -> str | None:
        """What tells this object's content from another's under the same key and size.

        The fetcher's ``sha256`` metadata names the bytes; the ETag guards against an object
        replaced by other means that kept the old metadata (a TUS upsert without metadata does).
        ``None`` when the object has neither.
        """
        parts = []
        if self.metadata.get("sha256"):
            parts.append(f"sha256:{self.metadata['sha256']}")
        if self.etag:
            parts.append(f"etag:{self.etag}")
        return " ".join(parts) or None


class Storage(Protocol):
    """What the jobs need from a storage backend, and nothing more."""

    async def upload(
        self,
        key: str,
        source: Path,
        *,
        metadata: Mapping[str, str],
        progress: UploadProgress | None = None,
    ) -> ObjectInfo:
        """Store ``source`` at ``key``, overwriting; resumes an interrupted upload of this run."""
        ...

    async def publish(self, source_key: str, dest_key: str, *, metadata: Mapping[str, str]) -> None:
        """Make ``dest_key`` hold ``source_key``'s bytes in one step: never a partial object."""
        ...

    def stream(self, key: str) -> AsyncIterator[bytes]:
        """The object's bytes, streamed in chunks, never held whole in memory."""
        ...

    async def info(self, key: str) -> ObjectInfo | None:
        """Size and metadata, or ``None`` when there is no such object."""
        ...

    async def aclose(self) -> None: ...
