"""``kubectl catalogsync``: the pure summaries behind ``status`` and the Job behind ``run``."""

from __future__ import annotations

import datetime as dt
from typing import Any

from catalogsync.operator.create_run import firing_from_job, run_name
from catalogsync.operator.kubectl_plugin import (
    counts_line,
    creator_settings,
    manual_job,
    next_firing,
    operator_problems,
    summarize,
)
from tests.operator_objects import cr

NOW = dt.datetime(2026, 5, 1, 12, 0, tzinfo=dt.UTC)


def cronjob(name: str = "cs-catalogsync", **spec: Any) -> dict[str, Any]:
    return {
        "metadata": {"name": name, "namespace": "ns", "uid": "cj-uid"},
        "spec": {
            "schedule": "0 2 * * *",
            **spec,
            "jobTemplate": {
                "metadata": {"labels": {"catalogsync.io/schedule": name}},
                "spec": {"template": {"spec": {"containers": [{
                    "name": "create-run",
                    "args": ["create-run", "--namespace=runs", "--prefix=nightly"],
                }]}}},
            },
        },
    }  # fmt: skip


def run(name: str, phase: str, done: str = "2026-05-01T03:00:00Z", **status: Any) -> dict[str, Any]:
    body = cr(name, uid=name, status={"phase": phase, "completionTime": done, **status})
    body["metadata"]["labels"] = {"catalogsync.io/schedule": "cs-catalogsync"}
    return body


def test_next_firing_follows_the_schedule_zone_and_suspension() -> None:
    assert next_firing(cronjob(), NOW) == dt.datetime(2026, 5, 2, 2, 0, tzinfo=dt.UTC)
    sydney = next_firing(cronjob(timeZone="Australia/Sydney"), NOW)
    assert sydney == dt.datetime(2026, 5, 1, 16, 0, tzinfo=dt.UTC)  # 02:00 AEST
    assert next_firing(cronjob(suspend=True), NOW) is None
    assert next_firing(cronjob(schedule="not a schedule"), NOW) is None


def test_summary_per_catalog_names_last_success_failure_active_and_next_run() -> None:
    runs = [
        run("old-ok", "Succeeded", "2026-04-29T03:00:00Z"),
        run("ok", "Succeeded", "2026-04-30T03:00:00Z", maintainer={"inserted": 5, "skipped": 9}),
        run("bad", "Failed", "2026-05-01T03:00:00Z",
            failure={"stage": "fetcher", "reason": "InvalidCredentials", "message": "no"}),
        run("now", "Maintaining", progress="37%"),
        run("other", "Succeeded"),
    ]  # fmt: skip
    runs[-1]["spec"]["catalog"] = "other"
    (main, other) = sorted(summarize(runs, [cronjob()], NOW), key=lambda s: s.catalog)
    assert main.catalog == "medipim-au"
    assert main.last_success is not None
    assert main.last_success["metadata"]["name"] == "ok"
    assert main.last_failure is not None
    assert main.last_failure["metadata"]["name"] == "bad"
    assert [r["metadata"]["name"] for r in main.active] == ["now"]
    assert main.next_run == dt.datetime(2026, 5, 2, 2, 0, tzinfo=dt.UTC)
    assert other.catalog == "other"
    assert counts_line(main.last_success["status"]) == (
        "5 inserted, 0 updated, 9 skipped, 0 deleted, 0 invalid"
    )


def test_run_makes_the_job_kubectl_create_job_from_cronjob_would() -> None:
    job = manual_job(cronjob(), NOW)
    assert job["metadata"]["name"] == f"cs-catalogsync-manual-{int(NOW.timestamp())}"
    assert job["metadata"]["annotations"]["cronjob.kubernetes.io/instantiate"] == "manual"
    assert job["metadata"]["ownerReferences"][0]["name"] == "cs-catalogsync"
    assert job["spec"] == cronjob()["spec"]["jobTemplate"]["spec"]
    assert creator_settings(cronjob()) == ("nightly", "runs")
    # The name the creator pod will give the run, from the created Job.
    created = {**job, "metadata": {**job["metadata"], "uid": "u-1",
                                   "creationTimestamp": "2026-05-01T12:00:00Z"}}  # fmt: skip
    firing = firing_from_job(created, NOW)
    assert firing.trigger == "manual"
    assert firing.schedule == "cs-catalogsync"
    assert run_name("nightly", firing).startswith("nightly-manual-20260501-1200-")


def test_check_names_a_missing_or_unavailable_operator() -> None:
    assert operator_problems([]) == [
        "no catalogsync operator Deployment here (was the chart installed?)"
    ]
    down = {
        "metadata": {"name": "cs-catalogsync-operator"},
        "status": {"conditions": [{"type": "Available", "status": "False", "message": "no"}]},
    }
    (problem,) = operator_problems([down])
    assert "cs-catalogsync-operator has no available operator pod (Available=False: no)" in problem
    assert (
        operator_problems([{"metadata": {"name": "x"}, "status": {"availableReplicas": 1}}]) == []
    )
