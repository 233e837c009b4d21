"""Putting a complete catalog into storage: the run's own object first, then ``latest.ndjson``.

Only a stream that passed every check reaches this module, and ``latest.ndjson`` changes in one
step (a server-side copy, or a rename on disk), so a reader of ``latest.ndjson`` sees the previous
complete catalog or the new one, never a partial file.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Any

from catalogsync.common.config import StorageSettings
from catalogsync.common.errors import InvalidDataError
from catalogsync.common.reasons import Reason
from catalogsync.common.storage import ObjectInfo, Storage, UploadProgress
from catalogsync.fetcher.stream import StreamResult
from catalogsync.fetcher.validate import empty_catalog_action, shrink_problem

log = logging.getLogger(__name__)


def catalog_metadata(
    result: StreamResult, run_id: str, source: Mapping[str, str] | None = None
) -> dict[str, str]:
    """The object's user metadata: enough for a reader to verify what it downloaded, and
    ``source`` (``mode``, ``fetchedAt``): how and when it was requested."""
    return {
        "sha256": result.sha256,
        "records": str(result.records),
        "run": run_id,
        **(source or {}),
    }


def refuse_shrink(latest: ObjectInfo | None, records: int, max_shrink: float, run_key: str) -> None:
    """Raise ``CatalogShrunk`` when ``records`` is far below what ``latest`` holds."""
    raw = latest.metadata.get("records", "") if latest is not None else ""
    problem = shrink_problem(int(raw) if raw.isdigit() else None, records, max_fraction=max_shrink)
    if problem is not None:
        raise InvalidDataError(
            f"{problem}: stored as {run_key} but not published as {latest.key if latest else ''}; "
            "check spec.source.filter and the MediPim key's catalog scope, or publish it by "
            "setting FETCHER_ALLOW_SHRINK=true for this run (spec.fetcher.env)",
            reason=Reason.CatalogShrunk,
        )


async def store_catalog(
    storage: Storage,
    settings: StorageSettings,
    run_id: str,
    result: StreamResult,
    *,
    publish_empty: bool,
    max_shrink: float | None = None,
    progress: UploadProgress | None = None,
    source: Mapping[str, str] | None = None,
) -> dict[str, Any]:
    """Uploads the run object and publishes it as ``latest.ndjson`` unless that would be wrong.

    An incremental catalog (only what changed) is never published: ``latest.ndjson`` is always
    a whole catalog.

    An empty catalog (a 204) is still stored as the run's object, so the run's maintainer finds
    zero products rather than no object, but it replaces a non-empty ``latest.ndjson`` only when
    ``FETCHER_PUBLISH_EMPTY`` says so.

    A catalog more than ``max_shrink`` smaller than the published one (by the ``records`` of its
    metadata) is stored and refused with ``CatalogShrunk``; ``None`` publishes it anyway.
    """
    run_key = settings.run_key(run_id)
    latest_key = settings.latest_key
    metadata = catalog_metadata(result, run_id, source)
    await storage.upload(run_key, result.path, metadata=metadata, progress=progress)
    if metadata.get("mode") == "Incremental":
        log.info("stored %s; an incremental catalog is never published as %s", run_key, latest_key)
        return {"object": run_key, "latest": None, "published": False}
    if result.empty:
        latest = await storage.info(latest_key)
        if empty_catalog_action(latest, publish_empty) == "keep":
            log.warning(
                "MediPim returned no products (HTTP 204); keeping the existing %s (%d bytes). "
                "Set FETCHER_PUBLISH_EMPTY=true to publish an empty catalog.",
                latest_key,
                latest.size if latest else 0,
            )
            return {"object": run_key, "latest": None, "published": False}
    elif max_shrink is not None:
        refuse_shrink(await storage.info(latest_key), result.records, max_shrink, run_key)
    await storage.publish(run_key, latest_key, metadata=metadata)
    log.info("published %s as %s (%d products)", run_key, latest_key, result.records)
    return {"object": run_key, "latest": latest_key, "published": True}
