"""Which finished runs of a catalog are pruned."""

from __future__ import annotations

from typing import Any

from catalogsync.operator.history import runs_to_prune
from tests.operator_objects import cr


def prune(
    runs: list[dict[str, Any]],
    *,
    successful: int = 3,
    failed: int = 3,
    skipped: int = 1,
    keep: str | None = None,
) -> list[str]:
    return runs_to_prune(
        runs,
        catalog="medipim-au",
        successful_limit=successful,
        failed_limit=failed,
        skipped_limit=skipped,
        keep=keep,
    )


def finished(name: str, phase: str, minute: int, catalog: str = "medipim-au") -> dict[str, Any]:
    status = {"phase": phase, "completionTime": f"2026-05-01T10:{minute:02d}:00Z"}
    return cr(name, uid=name, spec={"catalog": catalog}, status=status)


def test_keeps_the_newest_of_each_kind_and_prunes_the_rest_oldest_first() -> None:
    runs = [
        finished("s1", "Succeeded", 1), finished("s2", "Succeeded", 2),
        finished("s3", "Succeeded", 3), finished("s4", "Succeeded", 4),
        finished("f1", "Failed", 5), finished("c1", "Cancelled", 6),
        finished("k1", "Skipped", 7), finished("f2", "Failed", 8),
        finished("f3", "Failed", 9), finished("k2", "Skipped", 10),
    ]  # fmt: skip
    assert prune(runs) == ["s1", "f1", "k1"]


def test_skipped_runs_never_evict_a_failure() -> None:
    """Three skips in a row (a long run blocking the schedule) keep the failure and its logs."""
    runs = [
        finished("f1", "Failed", 1),
        finished("k1", "Skipped", 2),
        finished("k2", "Skipped", 3),
        finished("k3", "Skipped", 4),
    ]
    assert prune(runs, failed=1) == ["k1", "k2"]


def test_the_run_that_prunes_counts_as_the_newest_of_its_kind() -> None:
    """Runs ending in the same second must not delete the run that is pruning."""
    runs = [finished("s1", "Succeeded", 1), finished("s2", "Succeeded", 1)]
    assert prune(runs, successful=1) == ["s1"]
    assert prune(runs, successful=1, keep="s1") == ["s2"]
    assert prune(runs, successful=0, keep="s1") == ["s1", "s2"]


def test_never_prunes_running_runs_other_catalogs_or_runs_being_deleted() -> None:
    deleting = finished("d1", "Succeeded", 0)
    deleting["metadata"]["deletionTimestamp"] = "2026-05-01T10:30:00Z"
    runs = [
        cr("r1", uid="r1", status={"phase": "Maintaining"}),
        cr("r2", uid="r2"),
        finished("o1", "Succeeded", 1, catalog="other"),
        deleting,
        finished("s1", "Succeeded", 2),
    ]
    assert prune(runs, successful=0, failed=0, skipped=0) == ["s1"]
