"""Prometheus metrics of the operator, derived from the CatalogSyncs it sees.

Two kinds, both named by Prometheus conventions (``catalogsync_`` prefix, base units, ``_total``
counters, ``_seconds`` and ``_bytes`` suffixes):

* **State gauges** (the last success per catalog, the last failure and its reason, the last run's
  products by outcome, active runs) are recomputed from the CatalogSyncs at every scrape. The
  operator's view of them is refreshed by every resync and every status patch it makes, so after an
  operator restart they are right from the first resync on: the runs are the record.
* **Counters and histograms** (runs started and finished, failures, durations, bytes fetched) count
  transitions the operator itself writes. Only the operator moves a run to a terminal phase, so
  every run is counted exactly once by the process that finished it; like every Prometheus counter
  they start from zero with the process, which ``rate()`` and ``increase()`` handle. Alerts that
  must survive a restart use the gauges.

:func:`state_samples`, :func:`finished_run` and :func:`stage_durations` are pure functions of CR
bodies; :class:`OperatorMetrics` is the thin part around ``prometheus_client``.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Histogram, start_http_server
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from catalogsync.common.summaries import MAINTAINER_OUTCOMES
from catalogsync.operator.status import (
    RUNNING_PHASES,
    merge_patch,
    parse_time,
)

PREFIX = "catalogsync_"
DEFAULT_CATALOG = "medipim-au"
DEFAULT_MODE = "Full"
COMPLETED = ("Succeeded", "Failed")
"""The outcomes that say whether a catalog is in sync; Skipped and Cancelled are by design."""

STAGES_OF = {
    "Full": ("fetcher", "maintainer"),
    "Incremental": ("fetcher", "maintainer"),
    "FetchOnly": ("fetcher",),
    "MaintainOnly": ("maintainer",),
}
CONDITION_OF = {"fetcher": "Fetched", "maintainer": "Maintained"}
PROGRESS_OF = {"fetcher": ("records", "total"), "maintainer": ("processed", "total")}

RUN_BUCKETS = (60.0, 120.0, 300.0, 600.0, 900.0, 1200.0, 1800.0, 2700.0, 3600.0, 5400.0,
               7200.0, 10800.0, 14400.0, 21600.0)  # fmt: skip
"""Seconds: a small catalog takes a minute, the AU catalog tens of minutes, the deadline 4 h."""

GAUGES: dict[str, str] = {
    "runs_active": "Runs that have not finished yet, by phase.",
    "active_run_start_timestamp_seconds": "Start time of the run in progress (Unix seconds).",
    "active_run_progress_ratio": "Progress of the run in progress within its current stage (0-1).",
    "last_success_timestamp_seconds": "Completion time of the newest succeeded run (Unix seconds).",
    "last_success_duration_seconds": "Run time of the newest succeeded run.",
    "last_failure_timestamp_seconds": (
        "Completion time of the newest failed run (Unix seconds), labelled with its stage and "
        "reason."
    ),
    "last_run_products": (
        "Products of the newest completed run that reached the maintainer, by outcome."
    ),
    "last_run_fetched_bytes": "Bytes the newest completed run that fetched wrote to storage.",
}
"""Every gauge :func:`state_samples` can emit (without the prefix), with its help text."""

COUNTERS: dict[str, str] = {
    "runs_started_total": "Runs the operator started (their first Job created).",
    "runs_finished_total": "Runs that reached a terminal phase, by outcome.",
    "run_failures_total": "Failed runs by the stage that failed and its reason.",
    "fetched_bytes_total": "Bytes of catalog the fetcher of finished runs wrote to storage.",
}
HISTOGRAMS: dict[str, str] = {
    "run_duration_seconds": "Run time of finished runs, from the first Job to the terminal phase.",
    "stage_duration_seconds": "Run time of each stage of finished runs.",
}


def exported_names() -> set[str]:
    """Every series name a scrape can contain: histograms with their suffixes, and the
    ``_created`` timestamps ``prometheus_client`` adds to counters and histograms."""
    names = {PREFIX + name for name in [*GAUGES, *COUNTERS]}
    names |= {PREFIX + name.removesuffix("_total") + "_created" for name in COUNTERS}
    for name in HISTOGRAMS:
        suffixes = ("_bucket", "_sum", "_count", "_created")
        names |= {f"{PREFIX}{name}{suffix}" for suffix in suffixes}
    return names


@dataclass(frozen=True)
class Sample:
    name: str
    """Without the ``catalogsync_`` prefix, a key of :data:`GAUGES`."""
    labels: Mapping[str, str]
    value: float


def _spec(body: Mapping[str, Any]) -> Mapping[str, Any]:
    return body.get("spec") or {}


def _status(body: Mapping[str, Any]) -> Mapping[str, Any]:
    return body.get("status") or {}


def catalog_of(body: Mapping[str, Any]) -> str:
    return str(_spec(body).get("catalog") or DEFAULT_CATALOG)


def mode_of(body: Mapping[str, Any]) -> str:
    mode = str(_spec(body).get("mode") or DEFAULT_MODE)
    return mode if mode in STAGES_OF else DEFAULT_MODE


def _key(body: Mapping[str, Any]) -> tuple[str, str]:
    return (str((body.get("metadata") or {}).get("namespace") or ""), catalog_of(body))


def _seconds(value: Any) -> float | None:
    moment = parse_time(value)
    return moment.timestamp() if moment is not None else None


def _finished_at(body: Mapping[str, Any]) -> float:
    status = _status(body)
    moment = _seconds(status.get("completionTime"))
    if moment is None:
        moment = _seconds((body.get("metadata") or {}).get("creationTimestamp"))
    return moment or 0.0


def _int(value: Any) -> int:
    return int(value) if isinstance(value, int | float) else 0


def _condition_true_at(status: Mapping[str, Any], type_: str) -> float | None:
    for item in status.get("conditions") or []:
        if item.get("type") == type_ and item.get("status") == "True":
            return _seconds(item.get("lastTransitionTime"))
    return None


def stage_durations(body: Mapping[str, Any]) -> list[tuple[str, str, float]]:
    """``(stage, outcome, seconds)`` of each stage a finished run reached.

    The first stage starts with the run (``startTime``); a later stage starts when the one before
    it succeeded (its condition's transition to True, the moment its Job was created). A stage
    ends when its own condition turned True, or, for the stage that failed or was cancelled, at
    the run's ``completionTime``.
    """
    status = _status(body)
    start = _seconds(status.get("startTime"))
    end = _seconds(status.get("completionTime"))
    phase = str(status.get("phase") or "")
    failed_stage = (status.get("failure") or {}).get("stage")
    result: list[tuple[str, str, float]] = []
    for stage in STAGES_OF[mode_of(body)]:
        if start is None:
            break
        done = _condition_true_at(status, CONDITION_OF[stage])
        if done is not None:
            result.append((stage, "Succeeded", max(0.0, done - start)))
            start = done
            continue
        if end is not None and (phase == "Cancelled" or failed_stage == stage):
            result.append((stage, phase, max(0.0, end - start)))
        break
    return result


@dataclass(frozen=True)
class FinishedRun:
    """What one finished run adds to the counters and histograms."""

    namespace: str
    catalog: str
    mode: str
    outcome: str
    duration: float | None
    stages: Sequence[tuple[str, str, float]] = ()
    failure: tuple[str, str] | None = None
    fetched_bytes: int = 0


def finished_run(body: Mapping[str, Any]) -> FinishedRun | None:
    """The contribution of a run in a terminal phase; None while it runs."""
    status = _status(body)
    outcome = str(status.get("phase") or "")
    if outcome in ("", *RUNNING_PHASES):
        return None
    namespace, catalog = _key(body)
    start = _seconds(status.get("startTime"))
    end = _seconds(status.get("completionTime"))
    failure = status.get("failure") or {}
    return FinishedRun(
        namespace=namespace,
        catalog=catalog,
        mode=mode_of(body),
        outcome=outcome,
        duration=max(0.0, end - start) if start is not None and end is not None else None,
        stages=stage_durations(body),
        failure=(
            (str(failure.get("stage") or "unknown"), str(failure.get("reason") or "Error"))
            if outcome == "Failed"
            else None
        ),
        fetched_bytes=_int((status.get("fetcher") or {}).get("bytes")),
    )


def _progress(status: Mapping[str, Any]) -> float | None:
    stage = {"Fetching": "fetcher", "Maintaining": "maintainer"}.get(str(status.get("phase")))
    if stage is None:
        return None
    counts = status.get(stage) or {}
    done_field, total_field = PROGRESS_OF[stage]
    total = _int(counts.get(total_field))
    return min(1.0, _int(counts.get(done_field)) / total) if total > 0 else 0.0


def _newest(bodies: Iterable[Mapping[str, Any]]) -> Mapping[str, Any] | None:
    return max(bodies, key=_finished_at, default=None)


def state_samples(bodies: Iterable[Mapping[str, Any]]) -> list[Sample]:
    """The state gauges of every catalog, from the CatalogSyncs that exist.

    Runs being deleted still count: their record is true until they are gone.
    """
    by_catalog: dict[tuple[str, str], list[Mapping[str, Any]]] = {}
    for body in bodies:
        by_catalog.setdefault(_key(body), []).append(body)
    samples: list[Sample] = []
    for (namespace, catalog), runs in sorted(by_catalog.items()):
        labels = {"namespace": namespace, "catalog": catalog}
        samples.extend(_catalog_samples(labels, runs))
    return samples


def _catalog_samples(labels: Mapping[str, str], runs: Sequence[Mapping[str, Any]]) -> list[Sample]:
    samples: list[Sample] = []
    active = [b for b in runs if str(_status(b).get("phase") or "") in ("", *RUNNING_PHASES)]
    for phase in RUNNING_PHASES:
        count = sum(1 for b in active if (_status(b).get("phase") or "Pending") == phase)
        samples.append(Sample("runs_active", {**labels, "phase": phase}, count))
    started = [b for b in active if _seconds(_status(b).get("startTime")) is not None]
    if current := max(
        started, key=lambda b: _seconds(_status(b).get("startTime")) or 0, default=None
    ):
        status = _status(current)
        samples.append(
            Sample("active_run_start_timestamp_seconds", labels, _seconds(status["startTime"]) or 0)
        )
        progress = _progress(status)
        if progress is not None:
            samples.append(Sample("active_run_progress_ratio", labels, progress))
    completed = [b for b in runs if _status(b).get("phase") in COMPLETED]
    success = _newest(b for b in completed if _status(b)["phase"] == "Succeeded")
    if success is not None:
        samples.append(Sample("last_success_timestamp_seconds", labels, _finished_at(success)))
        run = finished_run(success)
        if run is not None and run.duration is not None:
            samples.append(Sample("last_success_duration_seconds", labels, run.duration))
    failure = _newest(b for b in completed if _status(b)["phase"] == "Failed")
    if failure is not None:
        detail = _status(failure).get("failure") or {}
        failure_labels = {
            **labels,
            "stage": str(detail.get("stage") or "unknown"),
            "reason": str(detail.get("reason") or "Error"),
        }
        samples.append(
            Sample("last_failure_timestamp_seconds", failure_labels, _finished_at(failure))
        )
    maintained = _newest(b for b in completed if _status(b).get("maintainer"))
    if maintained is not None:
        counts = _status(maintained)["maintainer"]
        for outcome in MAINTAINER_OUTCOMES:
            samples.append(
                Sample(
                    "last_run_products", {**labels, "outcome": outcome}, _int(counts.get(outcome))
                )
            )
    fetched = _newest(b for b in completed if (_status(b).get("fetcher") or {}).get("bytes"))
    if fetched is not None:
        samples.append(
            Sample("last_run_fetched_bytes", labels, _int(_status(fetched)["fetcher"]["bytes"]))
        )
    return samples


def merged(body: Mapping[str, Any], status_patch: Mapping[str, Any]) -> dict[str, Any]:
    """``body`` with a merge patch of its status applied (what the API server will hold)."""
    return {**body, "status": merge_patch(_status(body), status_patch)}


@dataclass
class _View:
    """The CatalogSyncs the operator last read, by UID; replaced per namespace by each resync."""

    runs: dict[str, Mapping[str, Any]] = field(default_factory=dict)

    def replace(self, namespace: str | None, bodies: Iterable[Mapping[str, Any]]) -> None:
        keep = {
            uid: body
            for uid, body in self.runs.items()
            if namespace is not None and (body.get("metadata") or {}).get("namespace") != namespace
        }
        for body in bodies:
            keep[str(body["metadata"]["uid"])] = body
        self.runs = keep

    def update(self, body: Mapping[str, Any]) -> None:
        self.runs[str(body["metadata"]["uid"])] = body


class _StateCollector(Collector):
    def __init__(self, view: _View) -> None:
        self.view = view

    def describe(self) -> Iterator[Metric]:
        for name, text in GAUGES.items():
            yield GaugeMetricFamily(PREFIX + name, text)

    def collect(self) -> Iterator[Metric]:
        families: dict[str, GaugeMetricFamily] = {}
        for sample in state_samples(list(self.view.runs.values())):
            family = families.get(sample.name)
            if family is None:
                family = families[sample.name] = GaugeMetricFamily(
                    PREFIX + sample.name, GAUGES[sample.name], labels=list(sample.labels)
                )
            family.add_metric(list(sample.labels.values()), sample.value)
        yield from families.values()


class OperatorMetrics:
    """The operator's registry: counters fed by :meth:`applied`, gauges read from the view."""

    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry or CollectorRegistry()
        self.view = _View()
        self._finished: set[str] = set()
        self._started: set[str] = set()

        def counter(name: str, labels: Sequence[str]) -> Counter:
            base = name.removesuffix("_total")
            return Counter(PREFIX + base, COUNTERS[name], labels, registry=self.registry)

        def histogram(name: str, labels: Sequence[str]) -> Histogram:
            return Histogram(
                PREFIX + name, HISTOGRAMS[name], labels, buckets=RUN_BUCKETS, registry=self.registry
            )

        catalog = ("namespace", "catalog")
        self.runs_started = counter("runs_started_total", (*catalog, "mode"))
        self.runs_finished = counter("runs_finished_total", (*catalog, "mode", "outcome"))
        self.failures = counter("run_failures_total", (*catalog, "stage", "reason"))
        self.fetched_bytes = counter("fetched_bytes_total", catalog)
        self.run_duration = histogram("run_duration_seconds", (*catalog, "mode", "outcome"))
        self.stage_duration = histogram("stage_duration_seconds", (*catalog, "stage", "outcome"))
        self.registry.register(_StateCollector(self.view))

    def observed(self, namespace: str | None, bodies: Iterable[Mapping[str, Any]]) -> None:
        """Every CatalogSync of ``namespace`` (None: all) as a list just returned them."""
        self.view.replace(namespace, bodies)

    def applied(self, before: Mapping[str, Any], status_patch: Mapping[str, Any]) -> None:
        """The operator patched a run's status: count what the patch started or finished."""
        after = merged(before, status_patch)
        self.view.update(after)
        uid = str(after["metadata"]["uid"])
        namespace, catalog = _key(after)
        first_start = status_patch.get("startTime") and not _status(before).get("startTime")
        if first_start and uid not in self._started:
            self._started.add(uid)
            self.runs_started.labels(namespace, catalog, mode_of(after)).inc()
        run = finished_run(after) if finished_run(before) is None else None
        if run is None or uid in self._finished:
            return
        self._finished.add(uid)
        self.runs_finished.labels(namespace, catalog, run.mode, run.outcome).inc()
        if run.failure is not None:
            self.failures.labels(namespace, catalog, *run.failure).inc()
        if run.duration is not None:
            self.run_duration.labels(namespace, catalog, run.mode, run.outcome).observe(
                run.duration
            )
        for stage, outcome, seconds in run.stages:
            self.stage_duration.labels(namespace, catalog, stage, outcome).observe(seconds)
        if run.fetched_bytes:
            self.fetched_bytes.labels(namespace, catalog).inc(run.fetched_bytes)


def serve(registry: CollectorRegistry, host: str, port: int) -> Callable[[], Awaitable[None]]:
    """Serve ``registry`` at ``http://host:port/metrics`` from a thread; returns its closer.

    The scrape reads the view from that thread: the view's dict is replaced or updated whole, one
    body at a time, and bodies are never changed in place, so a snapshot is always consistent.
    """
    server, thread = start_http_server(port, host, registry=registry)

    async def close() -> None:
        await asyncio.to_thread(server.shutdown)
        server.server_close()
        thread.join(5)

    return close
