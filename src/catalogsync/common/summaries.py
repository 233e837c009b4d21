"""The shapes the jobs report and the operator reads: live counts, summaries, ``status``.

A job patches its counts into ``status.<stage>`` while it runs and leaves a summary as its
container's termination message when it ends; the operator copies the summary's counts into the
same fields (the live patches may have been lost) and owns everything else in ``status``. Each
shape is spelled once, here, and ``tests/test_contract.py`` checks it against the CRD's status
schema (deploy/crds) and docs/operations.md, so a field cannot be added on one side only.
"""

from __future__ import annotations

from typing import Any, NotRequired, TypedDict

MAINTAINER_OUTCOMES = ("inserted", "updated", "skipped", "deleted", "invalid")
"""What the maintainer did with each product, in the order every summary lists them."""


class FetcherCounts(TypedDict, total=False):
    """``status.fetcher`` as the fetcher writes it (``object`` and ``sha256`` only at the end)."""

    bytes: int
    records: int
    total: int
    object: str
    sha256: str
    downloads: int
    """Download attempts in this pod (the stream has no resume cursor)."""
    mode: str
    """``Full`` or ``Incremental``: what the fetcher actually fetched."""
    since: str
    """Incremental only: the lower bound of the window (RFC 3339)."""
    fullBecause: str
    """Why a run asked to be Incremental fetched the full catalog."""


class MaintainerCounts(TypedDict):
    """``status.maintainer`` as the maintainer writes it; every count is always there."""

    total: int
    processed: int
    inserted: int
    updated: int
    skipped: int
    deleted: int
    invalid: int
    chunksDone: int


class MaintainerFeed(TypedDict, total=False):
    """What the maintainer wrote to the change feed (``status.maintainer`` too)."""

    changes: int
    """Rows the run wrote to the change feed."""
    changesFeed: str | None
    """The change feed's table, None when the run kept none."""


class MaintainerTally(TypedDict):
    """What the maintainer's appliers count product by product, kept in its runs table so a
    resumed run goes on counting (``deleted`` comes at the end, ``total`` from the stream)."""

    processed: int
    inserted: int
    updated: int
    skipped: int
    duplicates: int
    invalid: int
    undeleted: int
    nul_replaced: int
    """Products written with U+0000 in a string or key, each such character stored as U+FFFD."""


class FetcherSummary(FetcherCounts):
    """The fetcher's termination message on success (with ``stage`` and ``ok`` added)."""

    latest: str | None
    """``latest.ndjson``'s key if the catalog was published as it, else None."""
    published: bool
    empty: bool
    """MediPim answered 204: no products."""
    seconds: dict[str, float]


class MaintainerSummary(MaintainerCounts, MaintainerFeed):
    """The maintainer's termination message on success (with ``stage`` and ``ok`` added)."""

    runId: str
    table: str
    object: str
    dryRun: bool
    resumed: bool
    complete: bool
    duplicates: int
    undeleted: int
    nulReplaced: int
    """Products whose strings or keys held U+0000, stored with U+FFFD in its place."""
    mode: NotRequired[str]
    """``Full`` or ``Incremental``; this, the feed and the timings are not in the summary of a
    run that had already succeeded (nothing was applied or timed)."""
    seconds: NotRequired[float]
    timings: NotRequired[dict[str, float]]


class FailureSummary(TypedDict):
    """A job's termination message when it fails: what ``status.failure`` is built from."""

    stage: str
    ok: bool
    reason: str
    """A :class:`~catalogsync.common.reasons.Reason` value."""
    message: str
    exitCode: int


class StageStatus(TypedDict, total=False):
    """What the operator itself records under ``status.<stage>``."""

    jobName: str
    attempts: int
    oomKilled: int


class FetcherStatus(StageStatus, FetcherCounts, total=False):
    """``status.fetcher``."""


class MaintainerStatus(StageStatus, MaintainerCounts, MaintainerFeed, total=False):
    """``status.maintainer``: the operator's fields and the maintainer's counts."""


class FailureStatus(TypedDict, total=False):
    """``status.failure``: the most specific cause the operator found."""

    stage: str
    reason: str
    exitCode: int
    podName: str
    message: str


class RunStatus(TypedDict, total=False):
    """``status`` of a CatalogSync (kopf's own ``status.kopf`` aside)."""

    phase: str
    progress: str
    startTime: str
    completionTime: str
    duration: str
    message: str
    observedGeneration: int
    fetcher: FetcherStatus
    maintainer: MaintainerStatus
    failure: FailureStatus
    conditions: list[dict[str, Any]]


def fields(shape: type) -> tuple[str, ...]:
    """A shape's keys in the order they are declared (bases first)."""
    return tuple(shape.__annotations__)


FETCHER_COUNTS = fields(FetcherCounts)
MAINTAINER_COUNTS = fields(MaintainerCounts)
MAINTAINER_TALLY = fields(MaintainerTally)

FROM_SUMMARY: dict[str, tuple[str, ...]] = {
    "fetcher": FETCHER_COUNTS,
    "maintainer": (*MAINTAINER_COUNTS, *fields(MaintainerFeed)),
}
"""The fields of ``status.<stage>`` the operator copies from the stage's summary."""

PROGRESS_OF: dict[str, tuple[str, str]] = {
    "fetcher": ("records", "total"),
    "maintainer": ("processed", "total"),
}
"""The counts of ``status.<stage>`` that make ``status.progress``: done, out of."""
