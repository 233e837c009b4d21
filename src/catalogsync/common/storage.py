"""Where catalogs are kept between the fetcher and the maintainer.

Two backends behind one interface: Supabase Storage (TUS uploads, copy-with-upsert to publish,
streamed downloads) and a local directory (``file:///dir``, publish by atomic rename) for the local
demo and for users without Supabase.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol


@dataclass(frozen=True)
class ObjectInfo:
    key: str
    size: int
    metadata: Mapping[str, str] = field(default_factory=dict)


class Storage(Protocol):
    """What the jobs need from a storage backend, and nothing more."""

    async def upload(self, key: str, source: Path, *, metadata: Mapping[str, str]) -> ObjectInfo:
        """Store ``source`` at ``key``, overwriting; resumes an interrupted upload of this run."""
        ...

    async def publish(self, source_key: str, dest_key: str, *, metadata: Mapping[str, str]) -> None:
        """Make ``dest_key`` hold ``source_key``'s bytes in one step: readers never see a partial."""
        ...

    def stream(self, key: str) -> AsyncIterator[bytes]:
        """The object's bytes, streamed in chunks, never held whole in memory."""
        ...

    async def info(self, key: str) -> ObjectInfo | None:
        """Size and metadata, or ``None`` when there is no such object."""
        ...

    async def aclose(self) -> None: ...
