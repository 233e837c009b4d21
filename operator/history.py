"""Which finished runs of a catalog to delete, CronJob-style.

A CatalogSync is a record of one run, so they pile up (one per schedule tick). Like a CronJob's
``successfulJobsHistoryLimit``/``failedJobsHistoryLimit``, the newest finished runs of each catalog
are kept and older ones deleted; their Jobs and Pods follow through owner references. Failed and
Cancelled runs share the failed limit: they are the ones a person reads when something is wrong.
Skipped runs have a limit of their own: a string of them (a long run blocking the schedule) must
neither grow without bound nor push a real failure, and its pod logs, out of the history.
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


def _kind(phase: str) -> str:
    return phase if phase in ("Succeeded", "Skipped") else "Failed"


def runs_to_prune(
    runs: Sequence[Mapping[str, Any]],
    *,
    catalog: str,
    successful_limit: int,
    failed_limit: int,
    skipped_limit: int,
    keep: str | None = None,
) -> list[str]:
    """Names of the finished runs of ``catalog`` beyond the limits, oldest first.

    Unfinished runs and runs already being deleted are never chosen. The run with uid ``keep``
    (the one whose end triggers the pruning) counts as the newest of its kind whatever its
    timestamps say, so it goes only with a limit of 0: in a burst of runs ending in the same
    second, each would otherwise delete the others and itself.
    """
    limits = {"Succeeded": successful_limit, "Failed": failed_limit, "Skipped": skipped_limit}
    finished = [
        body
        for body in runs
        if (body.get("spec") or {}).get("catalog", "medipim-au") == catalog
        and (body.get("status") or {}).get("phase") in TERMINAL_PHASES
        and not (body.get("metadata") or {}).get("deletionTimestamp")
    ]
    newest_first = sorted(
        finished,
        key=lambda body: (keep is not None and body["metadata"].get("uid") == keep,
                          _finished_key(body)),
        reverse=True,
    )  # fmt: skip
    doomed = [
        body
        for kind, limit in limits.items()
        for body in [b for b in newest_first if _kind(b["status"]["phase"]) == kind][limit:]
    ]
    return [str(b["metadata"]["name"]) for b in sorted(doomed, key=_finished_key)]
