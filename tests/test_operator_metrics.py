"""The operator's metrics: gauges derived from CatalogSyncs, counters from the transitions."""

from __future__ import annotations

import asyncio
import socket
import urllib.request
from typing import Any

import pytest
from prometheus_client import generate_latest
from prometheus_client.parser import text_string_to_metric_families

from catalogsync.dev.processes import free_port
from catalogsync.operator.metrics import (
    GAUGES,
    OperatorMetrics,
    Sample,
    exported_names,
    finished_run,
    serve,
    stage_durations,
    state_samples,
)
from tests.operator_objects import cr

T0 = 1777629600.0  # 2026-05-01T10:00:00Z


def conditions(**true_at: str) -> list[dict[str, Any]]:
    return [
        {"type": t, "status": "True", "reason": "x", "message": "", "lastTransitionTime": at}
        for t, at in true_at.items()
    ]


def succeeded(name: str, *, day: int = 1, uid: str | None = None, **spec: Any) -> dict[str, Any]:
    return cr(
        name,
        uid=uid or name,
        spec=spec,
        status={
            "phase": "Succeeded",
            "startTime": f"2026-05-0{day}T10:00:00Z",
            "completionTime": f"2026-05-0{day}T10:05:00Z",
            "conditions": conditions(
                Fetched=f"2026-05-0{day}T10:02:00Z",
                Maintained=f"2026-05-0{day}T10:05:00Z",
                Succeeded=f"2026-05-0{day}T10:05:00Z",
            ),
            "fetcher": {"bytes": 1000 * day, "records": 10},
            "maintainer": {"inserted": day, "updated": 2, "skipped": 3, "deleted": 0, "invalid": 1},
        },
    )


def failed(
    name: str, *, day: int, stage: str = "maintainer", reason: str = "TooManyDeletes"
) -> dict[str, Any]:
    return cr(
        name,
        uid=name,
        status={
            "phase": "Failed",
            "startTime": f"2026-05-0{day}T10:00:00Z",
            "completionTime": f"2026-05-0{day}T10:03:00Z",
            "conditions": conditions(Fetched=f"2026-05-0{day}T10:01:00Z"),
            "failure": {"stage": stage, "reason": reason, "message": "no"},
            "fetcher": {"bytes": 7, "records": 1},
        },
    )


def by_name(samples: list[Sample]) -> dict[str, list[tuple[dict[str, str], float]]]:
    result: dict[str, list[tuple[dict[str, str], float]]] = {}
    for sample in samples:
        result.setdefault(sample.name, []).append((dict(sample.labels), sample.value))
    return result


CATALOG = {"namespace": "ns", "catalog": "medipim-au"}


def test_stage_durations_follow_the_conditions() -> None:
    assert stage_durations(succeeded("a")) == [
        ("fetcher", "Succeeded", 120.0),
        ("maintainer", "Succeeded", 180.0),
    ]
    assert stage_durations(failed("b", day=2)) == [
        ("fetcher", "Succeeded", 60.0),
        ("maintainer", "Failed", 120.0),
    ]
    fetch_failed = failed("c", day=2, stage="fetcher", reason="InvalidCredentials")
    fetch_failed["status"]["conditions"] = []
    assert stage_durations(fetch_failed) == [("fetcher", "Failed", 180.0)]
    maintain_only = succeeded("d", mode="MaintainOnly")
    assert stage_durations(maintain_only) == [("maintainer", "Succeeded", 300.0)]
    skipped = cr("e", status={"phase": "Skipped", "completionTime": "2026-05-01T10:00:00Z"})
    assert stage_durations(skipped) == []


def test_finished_run_names_outcome_failure_and_bytes() -> None:
    run = finished_run(failed("b", day=2))
    assert run is not None
    assert (run.outcome, run.mode, run.duration) == ("Failed", "Full", 180.0)
    assert run.failure == ("maintainer", "TooManyDeletes")
    assert run.fetched_bytes == 7
    assert finished_run(cr("x", status={"phase": "Fetching"})) is None
    assert finished_run(cr("y")) is None


def test_state_gauges_come_from_the_newest_runs_of_each_catalog() -> None:
    runs = [
        succeeded("old", day=1),
        succeeded("new", day=3),
        failed("broke", day=2),
        cr(
            "now",
            uid="now",
            status={
                "phase": "Maintaining",
                "startTime": "2026-05-04T10:00:00Z",
                "maintainer": {"processed": 25, "total": 100},
            },
        ),
        cr("queued", uid="queued"),
        succeeded("other", day=2, catalog="other"),
    ]
    gauges = by_name(state_samples(runs))
    assert set(gauges) <= set(GAUGES)
    success = {s[0]["catalog"]: s[1] for s in gauges["last_success_timestamp_seconds"]}
    assert success == {"medipim-au": T0 + 2 * 86400 + 300, "other": T0 + 86400 + 300}
    assert (CATALOG, 300.0) in gauges["last_success_duration_seconds"]
    assert gauges["last_failure_timestamp_seconds"] == [
        ({**CATALOG, "stage": "maintainer", "reason": "TooManyDeletes"}, T0 + 86400 + 180)
    ]
    products = {
        s[0]["outcome"]: s[1]
        for s in gauges["last_run_products"]
        if s[0]["catalog"] == "medipim-au"
    }
    assert products == {"inserted": 3, "updated": 2, "skipped": 3, "deleted": 0, "invalid": 1}
    assert (CATALOG, 3000) in gauges["last_run_fetched_bytes"]
    active = {s[0]["phase"]: s[1] for s in gauges["runs_active"] if s[0]["catalog"] == "medipim-au"}
    assert active == {"Pending": 1, "Fetching": 0, "Maintaining": 1}
    assert gauges["active_run_start_timestamp_seconds"] == [(CATALOG, T0 + 3 * 86400)]
    assert gauges["active_run_progress_ratio"] == [(CATALOG, 0.25)]


def test_a_newer_failure_is_the_last_run_and_keeps_the_last_success() -> None:
    gauges = by_name(state_samples([succeeded("ok", day=1), failed("bad", day=2)]))
    assert gauges["last_success_timestamp_seconds"] == [(CATALOG, T0 + 300)]
    assert gauges["last_failure_timestamp_seconds"][0][1] == T0 + 86400 + 180
    # The failure reached no maintainer counts: the products are still the success's.
    assert ({**CATALOG, "outcome": "inserted"}, 1) in gauges["last_run_products"]


def scrape(metrics: OperatorMetrics) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    text = generate_latest(metrics.registry).decode()
    return {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }


def key(name: str, **labels: str) -> tuple[str, tuple[tuple[str, str], ...]]:
    return (name, tuple(sorted(labels.items())))


def test_transitions_count_once_and_the_view_survives_a_restart() -> None:
    metrics = OperatorMetrics()
    body = cr("r", uid="r")
    metrics.applied(body, {"phase": "Fetching", "startTime": "2026-05-01T10:00:00Z"})
    fetching = {**body, "status": {"phase": "Fetching", "startTime": "2026-05-01T10:00:00Z"}}
    final = succeeded("r")["status"]
    metrics.applied(fetching, final)
    metrics.applied(fetching, final)  # a repeated patch of the same run counts nothing more
    values = scrape(metrics)
    labels = {**CATALOG, "mode": "Full"}
    assert values[key("catalogsync_runs_started_total", **labels)] == 1
    assert values[key("catalogsync_runs_finished_total", **labels, outcome="Succeeded")] == 1
    assert values[key("catalogsync_fetched_bytes_total", **CATALOG)] == 1000
    assert values[key("catalogsync_run_duration_seconds_sum", **labels, outcome="Succeeded")] == 300
    stage = {**CATALOG, "stage": "maintainer", "outcome": "Succeeded"}
    assert values[key("catalogsync_stage_duration_seconds_count", **stage)] == 1
    assert values[key("catalogsync_last_success_timestamp_seconds", **CATALOG)] == T0 + 300
    assert {name for name, _ in values} <= exported_names()

    restarted = OperatorMetrics()
    restarted.observed("ns", [succeeded("r"), failed("f", day=2)])
    values = scrape(restarted)
    assert values[key("catalogsync_last_success_timestamp_seconds", **CATALOG)] == T0 + 300
    assert key("catalogsync_runs_finished_total", **labels, outcome="Succeeded") not in values
    failure = {**CATALOG, "stage": "maintainer", "reason": "TooManyDeletes"}
    assert values[key("catalogsync_last_failure_timestamp_seconds", **failure)] == T0 + 86580

    restarted.observed("ns", [])  # pruned or deleted: gone from the view
    assert key("catalogsync_last_success_timestamp_seconds", **CATALOG) not in scrape(restarted)


async def test_the_endpoint_serves_the_registry_and_closes() -> None:
    metrics = OperatorMetrics()
    metrics.observed(None, [succeeded("r")])
    port = free_port()
    close = serve(metrics.registry, "127.0.0.1", port)
    try:
        url = f"http://127.0.0.1:{port}/metrics"
        text = await asyncio.to_thread(lambda: urllib.request.urlopen(url, timeout=5).read())
        assert b'catalogsync_last_success_timestamp_seconds{catalog="medipim-au"' in text
    finally:
        await close()
    with pytest.raises(ConnectionRefusedError):
        socket.create_connection(("127.0.0.1", port), timeout=2).close()
