"""``catalogsync maintain``: apply a fetched catalog to the products table.

Reads the run's object from storage (or ``--file`` for a local NDJSON file), then upserts it chunk
by chunk; see :mod:`catalogsync.maintainer.pipeline`. Configuration comes from environment
variables, listed in docs/configuration.md; the flags only override them for manual runs.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
from collections.abc import AsyncIterator, Iterator, Mapping
from datetime import UTC, datetime
from pathlib import Path
from stat import S_ISREG
from typing import Any

import asyncpg

from catalogsync.common.config import (
    DatabaseSettings,
    MaintainerSettings,
    RunSettings,
    StorageSettings,
    help_epilog,
    load,
)
from catalogsync.common.entrypoint import run_job
from catalogsync.common.errors import PermanentError
from catalogsync.common.progress import reporters_for
from catalogsync.common.reasons import Reason
from catalogsync.common.storage import ObjectInfo, open_storage
from catalogsync.common.storage.local import file_etag
from catalogsync.maintainer.pipeline import STAGE, Options, maintain

READ_SIZE = 1 << 20


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="catalogsync maintain",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        description=(
            "Apply a fetched MediPim catalog (NDJSON) to the PostgreSQL products table, chunk by "
            "chunk, writing only changed products; a re-run resumes from the last committed "
            "chunk. Configured by environment variables (DATABASE_*, MAINTAINER_*, STORAGE_*, "
            "SYNC_*); the flags override them for a manual run."
        ),
        epilog=help_epilog(DatabaseSettings, MaintainerSettings, StorageSettings, RunSettings),
    )
    p.add_argument("--file", type=Path, help="read this local NDJSON file instead of storage")
    p.add_argument("--object", help="storage key to read (default: MAINTAINER_OBJECT or the run's)")
    p.add_argument("--dry-run", action="store_true", default=None, help="count, write nothing")
    p.add_argument(
        "--delete-missing",
        action="store_true",
        default=None,
        help="soft-delete products the catalog no longer has",
    )
    return p


async def file_source(path: Path, block: int = READ_SIZE) -> AsyncIterator[bytes]:
    """A local file's bytes in blocks, read off the event loop.

    ``read1`` hands over what one read returns: a whole block from a regular file, and from a
    pipe (``--file /dev/stdin``) whatever has arrived, so chunks are applied as the data comes in
    instead of once a full block has been buffered.
    """
    try:
        handle = await asyncio.to_thread(path.open, "rb")
    except FileNotFoundError:
        raise PermanentError(f"no such file: {path}", reason="ObjectNotFound") from None
    try:
        while data := await asyncio.to_thread(handle.read1, block):
            yield data
    finally:
        handle.close()


def object_source(metadata: Mapping[str, str]) -> tuple[str, datetime | None]:
    """How the object was fetched (``mode``) and when its stream was requested (``fetchedAt``),
    from the metadata the fetcher gives it. A local file, or an object from elsewhere, counts as
    a Full catalog of unknown time: it never becomes an Incremental run's watermark."""
    mode = "Incremental" if metadata.get("mode") == "Incremental" else "Full"
    raw = metadata.get("fetchedAt", "")
    fetched_at = datetime.fromtimestamp(int(raw), UTC) if raw.isdigit() else None
    return mode, fetched_at


def file_info(path: Path) -> ObjectInfo | None:
    """A local file as an object: its size and a version tag, so a rewritten file is another
    object to a resumed run. A pipe (``--file /dev/stdin``) has neither."""
    try:
        stat = path.stat()
    except OSError:
        return None
    if not S_ISREG(stat.st_mode) or not stat.st_size:
        return None
    return ObjectInfo(key=f"file://{path}", size=stat.st_size, etag=file_etag(stat))


@contextlib.contextmanager
def privileges(database: DatabaseSettings) -> Iterator[None]:
    """A missing privilege is configuration, not bad luck: name it and what to grant."""
    try:
        yield
    except asyncpg.InsufficientPrivilegeError as exc:
        raise PermanentError(
            f"the database user of DATABASE_URL lacks a privilege on {database.target}: {exc}; "
            f"grant it (for the schema of {database.table}: GRANT USAGE, CREATE ON SCHEMA ... TO "
            "the user) or give a user that has it",
            reason=Reason.InsufficientPrivilege,
        ) from None


async def run(run_settings: RunSettings, args: argparse.Namespace) -> dict[str, Any]:
    database = load(DatabaseSettings)
    overrides: dict[str, Any] = {}
    if args.dry_run is not None:
        overrides["dry_run"] = True
    if args.delete_missing is not None:
        overrides["delete_missing"] = True
    settings = load(MaintainerSettings, **overrides)
    reporter = reporters_for(STAGE, run_settings)

    def options(key: str, info: ObjectInfo | None) -> Options:
        mode, fetched_at = object_source(info.metadata if info else {})
        return Options(
            table=database.table,
            run_id=run_settings.run_id,
            object_key=key,
            object_size=info.size if info else None,
            object_identity=info.identity if info else None,
            chunk_size=settings.chunk_size,
            dry_run=settings.dry_run,
            delete_missing=settings.delete_missing,
            max_delete_fraction=settings.max_delete_fraction,
            max_invalid_fraction=settings.max_invalid_fraction,
            connections=settings.connections,
            catalog=run_settings.catalog,
            mode=mode,
            fetched_at=fetched_at,
            changes_keep_days=settings.changes_keep_days,
            changes_keep_runs=settings.changes_keep_runs,
        )

    if args.file is not None:
        path = args.file.resolve()
        opts = options(f"file://{path}", file_info(path))
        with privileges(database):
            return await maintain(database.url, file_source(path), opts, reporter)

    storage_settings = load(StorageSettings)
    key = args.object or settings.object or storage_settings.run_key(run_settings.run_id)
    storage = open_storage(storage_settings)
    try:
        info = await storage.info(key)
        if info is None:
            raise PermanentError(
                f"no object {key!r} in bucket {storage_settings.bucket!r}: the fetcher did not "
                "publish it, or MAINTAINER_OBJECT names the wrong key",
                reason="ObjectNotFound",
            )
        opts = options(key, info)
        with privileges(database):
            return await maintain(database.url, storage.stream(key), opts, reporter)
    finally:
        await storage.aclose()


def main(argv: list[str]) -> int:
    args = parser().parse_args(argv)
    return run_job(STAGE, lambda settings: run(settings, args), graceful=True)
