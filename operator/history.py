"""Which finished runs of a catalog to delete, CronJob-style.

A CatalogSync is a record of one run, so they pile up (one per schedule tick). Like a CronJob's
``successfulJobsHistoryLimit``/``failedJobsHistoryLimit``, the newest finished runs of each catalog
are kept and older ones deleted; their Jobs and Pods follow through owner references. Runs that
did not succeed (Failed, Cancelled, Skipped) share the failed limit: they are the ones a person
reads when something is wrong, and a string of Skipped runs must not grow without bound.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from catalogsync.operator.status import TERMINAL_PHASES


def _finished_key(body: Mapping[str, Any]) -> tuple[str, str, str]:
    status = body.get("status") or {}
    metadata = body.get("metadata") or {}
    return (
        str(status.get("completionTime") or metadata.get("creationTimestamp") or ""),
        str(metadata.get("creationTimestamp") or ""),
        str(metadata.get("name") or ""),
    )


def runs_to_prune(
    runs: Sequence[Mapping[str, Any]],
    *,
    catalog: str,
    successful_limit: int,
    failed_limit: int,
) -> list[str]:
    """Names of the finished runs of ``catalog`` beyond the limits, oldest first.

    Unfinished runs and runs already being deleted are never chosen.
    """
    finished = [
        body
        for body in runs
        if (body.get("spec") or {}).get("catalog", "medipim-au") == catalog
        and (body.get("status") or {}).get("phase") in TERMINAL_PHASES
        and not (body.get("metadata") or {}).get("deletionTimestamp")
    ]
    newest_first = sorted(finished, key=_finished_key, reverse=True)
    succeeded = [b for b in newest_first if b["status"]["phase"] == "Succeeded"]
    others = [b for b in newest_first if b["status"]["phase"] != "Succeeded"]
    doomed = succeeded[successful_limit:] + others[failed_limit:]
    return [str(b["metadata"]["name"]) for b in sorted(doomed, key=_finished_key)]
