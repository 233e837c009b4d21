"""``catalogsync fetch``: MediPim's product stream into storage, published as ``latest.ndjson``.

The stream is written to a scratch file while every line is checked; only a complete, valid
stream is uploaded (TUS needs the length up front) and then published. Configuration comes from
environment variables, listed in docs/configuration.md.
"""

from __future__ import annotations

import argparse
import contextlib
import fcntl
import logging
import os
import tempfile
import time
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

from catalogsync.common.config import (
    FetcherSettings,
    MedipimSettings,
    RunSettings,
    StorageSettings,
    help_epilog,
    load,
)
from catalogsync.common.entrypoint import run_job
from catalogsync.common.errors import PermanentError
from catalogsync.common.progress import Reporters, Snapshot, reporters_for
from catalogsync.common.retry import RetryPolicy
from catalogsync.common.storage import open_storage
from catalogsync.fetcher.incremental import incremental_filter, plan_window, rfc3339
from catalogsync.fetcher.publish import store_catalog
from catalogsync.fetcher.stream import StreamDownloader, describe_request

log = logging.getLogger(__name__)

STAGE = "fetcher"


DOWNLOADED = "products downloaded"
UPLOADED = "bytes uploaded"
"""Progress units; a bar's label names the one it counts."""


class FetchProgress:
    """Turns download and upload callbacks into snapshots with the status field names."""

    def __init__(self, reporter: Reporters) -> None:
        self.reporter = reporter
        self.counts: dict[str, Any] = {"bytes": 0, "records": 0, "downloads": 0}
        self._snapshot = Snapshot(STAGE, 0, None, DOWNLOADED, dict(self.counts))

    async def downloading(
        self, received: int, records: int, total: int | None, attempt: int
    ) -> None:
        self.counts.update(bytes=received, records=records, downloads=attempt)
        if total is not None:
            self.counts["total"] = total
        self._snapshot = Snapshot(STAGE, records, total, DOWNLOADED, dict(self.counts))
        await self.reporter.update(self._snapshot)

    async def uploading(self, sent: int, size: int) -> None:
        self._snapshot = Snapshot(STAGE, sent, size, UPLOADED, dict(self.counts))
        await self.reporter.update(self._snapshot)

    async def finish(self, summary: Mapping[str, Any]) -> None:
        kept = ("object", "sha256", "fullBecause")
        counts = {**self.counts, **{k: summary[k] for k in kept if k in summary}}
        # The last word is the products fetched, whatever the upload's bytes said before.
        records, total = self.counts["records"], self.counts.get("total")
        final = Snapshot(
            STAGE, records, total if total is not None else records, DOWNLOADED, counts
        )
        await self.reporter.finish(final, summary)


def require_credentials(medipim: MedipimSettings) -> None:
    missing = [
        key
        for key, value in (
            ("apiKeyId", medipim.api_key_id),
            ("apiKeySecret", medipim.api_key_secret),
        )
        if not value
    ]
    if missing:
        raise PermanentError(
            f"MediPim credentials are missing: set key(s) {', '.join(map(repr, missing))} of "
            f"Secret '{medipim.credentials_secret}' (MEDIPIM_API_KEY_ID / MEDIPIM_API_KEY_SECRET)",
            reason="SecretKeyMissing",
        )


SCRATCH_PREFIX = "catalogsync-"
SCRATCH_SUFFIX = ".ndjson"


def _scratch_dir(directory: str | None) -> str:
    if directory is not None and not os.path.isdir(directory):
        raise PermanentError(
            f"FETCHER_SCRATCH_DIR {directory!r} is not a directory: mount a volume there "
            "(an emptyDir with room for the whole catalog)",
            reason="InvalidConfiguration",
        )
    return directory or tempfile.gettempdir()


def sweep_scratch(directory: str | None) -> list[Path]:
    """Delete scratch files that no running fetch holds: what a SIGKILLed fetch left behind.

    A fetch holds an exclusive ``flock`` on its scratch file for as long as it lives, and the
    kernel drops it when the process dies however it dies, so a file whose lock can be taken is
    abandoned. A concurrent fetch sharing the directory keeps its file.
    """
    removed = []
    for path in Path(_scratch_dir(directory)).glob(f"{SCRATCH_PREFIX}*{SCRATCH_SUFFIX}"):
        try:
            fd = os.open(path, os.O_RDONLY)
        except OSError:
            continue
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            continue  # a live fetch holds it
        else:
            with contextlib.suppress(FileNotFoundError):
                path.unlink()
                removed.append(path)
        finally:
            os.close(fd)
    if removed:
        log.info(
            "removed %d scratch file(s) an interrupted fetch left: %s",
            len(removed),
            ", ".join(p.name for p in removed),
        )
    return removed


@contextlib.contextmanager
def scratch_file(directory: str | None, run_id: str) -> Iterator[Path]:
    """A private file for the stream, locked while in use and removed afterwards whatever
    happens (SIGTERM included); a SIGKILL leaves it to the next fetch's :func:`sweep_scratch`."""
    fd, name = tempfile.mkstemp(
        prefix=f"{SCRATCH_PREFIX}{run_id}-", suffix=SCRATCH_SUFFIX, dir=_scratch_dir(directory)
    )
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        yield Path(name)
    finally:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(name)
        os.close(fd)


async def fetch(run: RunSettings) -> Mapping[str, Any]:
    medipim = load(MedipimSettings)
    storage_settings = load(StorageSettings)
    fetcher = load(FetcherSettings)
    require_credentials(medipim)
    sweep_scratch(fetcher.scratch_dir)
    retry = RetryPolicy(fetcher.max_attempts, fetcher.backoff_initial, fetcher.backoff_max)
    storage = open_storage(
        storage_settings, chunk_size=fetcher.chunk_size, retry=retry, timeout=fetcher.read_timeout
    )
    if fetcher.mode == "Incremental":
        incremental_filter(medipim.filter, 0)  # a filter it cannot narrow fails before any I/O
    progress = FetchProgress(reporters_for(STAGE, run))
    try:
        # Storage is checked before the long download, so a bad key or bucket fails in seconds.
        await storage.info(storage_settings.latest_key)
        window = await plan_window(run, fetcher)
        request = medipim
        progress.counts["mode"] = window.mode
        if window.since is not None:
            since = int(window.since.timestamp())
            request = medipim.model_copy(
                update={"filter": incremental_filter(medipim.filter, since)}
            )
            progress.counts["since"] = rfc3339(window.since)
        log.info("fetching the MediPim catalog", extra=describe_request(request))
        with scratch_file(fetcher.scratch_dir, run.run_id) as scratch:
            started = time.monotonic()
            requested_at = int(time.time())  # the first attempt's: a watermark never too late
            downloader = StreamDownloader(request, fetcher, scratch, progress=progress.downloading)
            result = await downloader.download()
            downloaded = time.monotonic()
            log.info(
                "stream complete: %d products, %d bytes, sha256 %s",
                result.records,
                result.bytes,
                result.sha256,
            )
            stored = await store_catalog(
                storage,
                storage_settings,
                run.run_id,
                result,
                publish_empty=fetcher.publish_empty,
                max_shrink=None if fetcher.allow_shrink else fetcher.max_shrink_fraction,
                progress=progress.uploading,
                source={"mode": window.mode, "fetchedAt": str(requested_at)},
            )
            stored_at = time.monotonic()
        summary = {
            "bytes": result.bytes,
            "records": result.records,
            "total": result.total,
            "downloads": result.attempts,
            "sha256": result.sha256,
            "empty": result.empty,
            "mode": window.mode,
            **({"since": progress.counts["since"]} if window.since is not None else {}),
            **({"fullBecause": window.why_full} if window.why_full else {}),
            **stored,
            "seconds": {
                "download": round(downloaded - started, 2),
                "store": round(stored_at - downloaded, 2),
            },
        }
    finally:
        await storage.aclose()
    await progress.finish(summary)
    return summary


def parser() -> argparse.ArgumentParser:
    return argparse.ArgumentParser(
        prog="catalogsync fetch",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        description=(
            "Stream MediPim's product catalog (POST /v4/products/stream) to a scratch file, check "
            "that it is complete, upload it to <prefix>runs/<run>.ndjson and publish it as "
            "<prefix>latest.ndjson. Configured by environment variables (MEDIPIM_*, STORAGE_*, "
            "FETCHER_*, SYNC_*): see docs/configuration.md."
        ),
        epilog=help_epilog(MedipimSettings, StorageSettings, FetcherSettings, RunSettings),
    )


def main(argv: list[str]) -> int:
    parser().parse_args(argv)
    return run_job(STAGE, fetch)
