"""The operator's transitions, decided from a CR plus its Jobs and Pods, without a cluster."""

from __future__ import annotations

import copy
import datetime as dt
from collections.abc import Mapping, Sequence
from dataclasses import replace
from typing import Any

import pytest

from catalogsync.operator.credentials import SecretProblem
from catalogsync.operator.decide import (
    Decision,
    Observation,
    StageView,
    active_rival,
    decide,
    job_rejected,
)
from catalogsync.operator.spec import Stage, resolve
from catalogsync.operator.status import changed, merge_patch
from tests.operator_objects import NOW, cr, failed_create, job, pod, settings

FETCHED = {"stage": "fetcher", "ok": True, "bytes": 4096, "records": 20, "total": 20,
           "object": "runs/run-1.ndjson", "sha256": "ab" * 32}  # fmt: skip
MAINTAINED = {"stage": "maintainer", "ok": True, "total": 20, "processed": 20, "inserted": 5,
              "updated": 3, "skipped": 12, "deleted": 0, "invalid": 0, "chunksDone": 1}  # fmt: skip


def observe(
    body: Mapping[str, Any],
    *,
    fetcher: StageView | None = None,
    maintainer: StageView | None = None,
    rivals: Sequence[Mapping[str, Any]] = (),
    secrets: Sequence[SecretProblem] | None = (),
    now: dt.datetime = NOW,
    **config: Any,
) -> Observation:
    return Observation(
        cr=body,
        run=resolve(body, settings(**config)),
        stages={"fetcher": fetcher or StageView(), "maintainer": maintainer or StageView()},
        now=now,
        rivals=rivals,
        secret_problems=secrets,
    )


def running_status(stage: Stage = "fetcher", **extra: Any) -> dict[str, Any]:
    phase = "Fetching" if stage == "fetcher" else "Maintaining"
    status: dict[str, Any] = {
        "phase": phase,
        "startTime": "2026-05-01T11:55:48Z",
        stage: {"jobName": f"run-1-{stage}"},
    }
    if stage == "maintainer":
        status["conditions"] = [
            {"type": "Fetched", "status": "True", "reason": "FetchSucceeded", "message": "",
             "lastTransitionTime": "2026-05-01T11:57:00Z"},
        ]  # fmt: skip
        status["fetcher"] = {"jobName": "run-1-fetcher", "records": 20}
    status.update(extra)
    return status


def reasons(decision: Decision) -> list[str]:
    return [event.reason for event in decision.events]


def conditions(decision: Decision) -> dict[str, tuple[str, str]]:
    return {c["type"]: (c["status"], c["reason"]) for c in decision.status.get("conditions", [])}


def succeeded_fetcher() -> StageView:
    return StageView(
        job=job("run-1-fetcher", conditions=[("Complete", "")], active=0, succeeded=1),
        pods=[pod("run-1-fetcher-a", "fetcher", phase="Succeeded", exit_code=0, message=FETCHED)],
    )


def test_a_new_run_checks_the_secrets_of_every_stage_before_anything_else() -> None:
    decision = decide(observe(cr(), secrets=None))
    assert decision.needs_secrets == ("fetcher", "maintainer")
    assert decision.create is None
    assert not decision.events


def test_a_new_run_creates_the_fetcher_job_and_starts_fetching() -> None:
    decision = decide(observe(cr()))
    assert decision.create == "fetcher"
    assert decision.status["phase"] == "Fetching"
    assert decision.status["progress"] == "0%"
    assert decision.status["startTime"] == "2026-05-01T12:00:00Z"
    assert decision.status["fetcher"] == {"jobName": "run-1-fetcher"}
    assert decision.status["observedGeneration"] == 1
    assert conditions(decision) == {
        "Fetched": ("Unknown", "Fetching"),
        "Succeeded": ("Unknown", "Fetching"),
    }
    assert reasons(decision) == ["FetcherJobCreated"]
    assert decision.finished is None


def test_a_missing_secret_fails_the_run_before_any_job_naming_secret_and_key() -> None:
    problem = SecretProblem(
        "SecretNotFound",
        "Secret ns/medipim-credentials has no key 'apiKeySecret'; add it",
        "fetcher",
    )
    decision = decide(observe(cr(), secrets=[problem]))
    assert decision.create is None
    assert decision.status["phase"] == "Failed"
    assert decision.status["failure"]["reason"] == "SecretNotFound"
    assert decision.status["failure"]["stage"] == "fetcher"
    assert "medipim-credentials" in decision.status["failure"]["message"]
    assert "apiKeySecret" in decision.status["failure"]["message"]
    assert decision.status["completionTime"] == "2026-05-01T12:00:00Z"
    assert conditions(decision)["Succeeded"] == ("False", "SecretNotFound")
    assert reasons(decision) == ["FetchFailed", "SyncFailed"]
    assert decision.finished == "Failed"


def test_a_malformed_secret_is_reported_as_invalid_rather_than_missing() -> None:
    problem = SecretProblem(
        "InvalidSecret",
        "key 'url' of Secret ns/catalog-database must be a PostgreSQL URL",
        "maintainer",
    )
    decision = decide(observe(cr(), secrets=[problem]))
    assert decision.status["failure"]["reason"] == "InvalidSecret"
    assert decision.status["failure"]["message"] == problem.message


def test_a_secret_problem_names_the_stage_that_reads_the_secret() -> None:
    """The database Secret is the maintainer's, though the run stops before the fetch."""
    database = SecretProblem("SecretNotFound", "Secret ns/catalog-database not found", "maintainer")
    decision = decide(observe(cr(), secrets=[database]))
    assert decision.create is None
    assert decision.status["failure"]["stage"] == "maintainer"
    assert conditions(decision)["Maintained"] == ("False", "SecretNotFound")
    assert "Fetched" not in conditions(decision)
    assert reasons(decision) == ["MaintainFailed", "SyncFailed"]
    source = SecretProblem("SecretNotFound", "Secret ns/medipim-credentials not found", "fetcher")
    decision = decide(observe(cr(), secrets=[database, source]))
    assert decision.status["failure"]["stage"] == "fetcher"


def test_the_secret_failure_reason_comes_from_the_problems_not_their_wording() -> None:
    invalid = SecretProblem(
        "InvalidSecret", "key 'url' of Secret ns/db: host not found", "maintainer"
    )
    missing = SecretProblem("SecretNotFound", "Secret ns/medipim-credentials is absent", "fetcher")
    decision = decide(observe(cr(), secrets=[invalid]))
    assert decision.status["failure"]["reason"] == "InvalidSecret"
    decision = decide(observe(cr(), secrets=[missing, invalid]))
    assert decision.status["failure"]["reason"] == "SecretNotFound"
    assert decision.status["failure"]["message"] == f"{missing.message}; {invalid.message}"


def test_a_run_without_any_storage_url_fails_as_invalid_configuration() -> None:
    decision = decide(observe(cr(), CATALOGSYNC_STORAGE_URL=None))
    assert decision.create is None
    assert decision.status["failure"]["reason"] == "InvalidConfiguration"
    assert "spec.storage.url" in decision.status["failure"]["message"]


def rival(
    name: str, phase: str | None, created: str, catalog: str = "medipim-au"
) -> dict[str, Any]:
    return cr(
        name,
        uid=f"{name}-uid",
        created=created,
        spec={"catalog": catalog},
        status={"phase": phase} if phase else None,
    )


def test_a_run_of_a_busy_catalog_is_skipped_with_the_reason_and_an_event() -> None:
    busy = rival("older", "Maintaining", "2026-05-01T10:00:00Z")
    decision = decide(observe(cr(), rivals=[busy, cr()]))
    assert decision.create is None
    assert decision.status["phase"] == "Skipped"
    assert decision.status["completionTime"]
    assert conditions(decision)["Skipped"] == ("True", "ConcurrentRunActive")
    assert "older" in decision.status["message"]
    assert reasons(decision) == ["SyncSkipped"]
    assert decision.finished == "Skipped"


@pytest.mark.parametrize(
    ("other", "skipped"),
    [
        (rival("older", None, "2026-05-01T10:00:00Z"), True),
        (rival("older", "Pending", "2026-05-01T10:00:00Z"), True),
        (rival("newer", None, "2026-05-01T11:30:00Z"), False),
        (rival("newer", "Fetching", "2026-05-01T11:30:00Z"), True),
        (rival("older", "Succeeded", "2026-05-01T10:00:00Z"), False),
        (rival("older", "Fetching", "2026-05-01T10:00:00Z", catalog="other"), False),
    ],
)
def test_among_runs_not_yet_started_the_oldest_holds_the_catalog(
    other: dict[str, Any], skipped: bool
) -> None:
    assert (active_rival(cr(), "medipim-au", [other]) is not None) is skipped


def test_an_existing_fetcher_job_is_adopted_not_created_again() -> None:
    view = StageView(job=job("run-1-fetcher"), pods=[pod("run-1-fetcher-a", "fetcher")])
    decision = decide(observe(cr(), fetcher=view))
    assert decision.create is None
    assert decision.status["phase"] == "Fetching"
    assert decision.status["fetcher"]["jobName"] == "run-1-fetcher"
    assert "FetcherJobCreated" not in reasons(decision)


def test_live_counts_from_the_job_become_progress_and_message() -> None:
    status = running_status(fetcher={"jobName": "run-1-fetcher", "records": 37, "total": 100})
    view = StageView(job=job("run-1-fetcher"), pods=[pod("run-1-fetcher-a", "fetcher")])
    decision = decide(observe(cr(status=status), fetcher=view))
    assert decision.status["progress"] == "37%"
    assert "37 of 100 records" in decision.status["message"]
    assert decision.status["fetcher"]["attempts"] == 1


def test_a_pod_that_cannot_be_scheduled_says_so_in_the_message() -> None:
    waiting = pod("run-1-maintainer-a", "maintainer", phase="Pending")
    waiting["status"]["conditions"] = [
        {"type": "PodScheduled", "status": "False", "reason": "Unschedulable",
         "message": "0/2 nodes are available: 1 Insufficient memory"},
    ]  # fmt: skip
    view = StageView(job=job("run-1-maintainer"), pods=[waiting])
    decision = decide(
        observe(cr(status=running_status("maintainer")), fetcher=succeeded_fetcher(),
                maintainer=view)
    )  # fmt: skip
    assert "Insufficient memory" in decision.status["message"]


def test_a_finished_fetch_records_its_counts_and_starts_the_maintainer() -> None:
    body = cr(status=running_status())
    assert decide(observe(body, fetcher=succeeded_fetcher(), secrets=None)).needs_secrets == (
        "maintainer",
    )
    decision = decide(observe(body, fetcher=succeeded_fetcher()))
    assert decision.create == "maintainer"
    assert decision.status["phase"] == "Maintaining"
    assert decision.status["progress"] == "0%"
    assert decision.status["fetcher"]["records"] == 20
    assert decision.status["fetcher"]["sha256"] == "ab" * 32
    assert decision.status["maintainer"] == {"jobName": "run-1-maintainer"}
    assert conditions(decision)["Fetched"] == ("True", "FetchSucceeded")
    assert conditions(decision)["Maintained"] == ("Unknown", "Maintaining")
    assert reasons(decision) == ["FetchSucceeded", "MaintainerJobCreated"]


def test_an_incremental_run_that_fetched_everything_says_why_and_the_feed_is_named() -> None:
    why = "no earlier successful run of catalog 'medipim-au' into public.products: ..."
    fetched = {**FETCHED, "mode": "Full", "fullBecause": why}
    body = cr(spec={"mode": "Incremental"}, status=running_status())
    view = StageView(
        job=job("run-1-fetcher", conditions=[("Complete", "")], active=0, succeeded=1),
        pods=[pod("run-1-fetcher-a", "fetcher", phase="Succeeded", exit_code=0, message=fetched)],
    )
    decision = decide(observe(body, fetcher=view))
    assert decision.status["fetcher"]["fullBecause"] == why
    assert decision.status["fetcher"]["mode"] == "Full"
    (event,) = [e for e in decision.events if e.reason == "FetchSucceeded"]
    assert why in event.message
    fetched = {**FETCHED, "mode": "Incremental", "since": "2026-12-01T01:00:00Z"}
    view = StageView(
        job=view.job,
        pods=[pod("run-1-fetcher-a", "fetcher", phase="Succeeded", exit_code=0, message=fetched)],
    )
    decision = decide(observe(body, fetcher=view))
    assert decision.status["fetcher"]["since"] == "2026-12-01T01:00:00Z"


def test_fetch_only_ends_after_the_fetch() -> None:
    body = cr(spec={"mode": "FetchOnly"}, status=running_status())
    decision = decide(observe(body, fetcher=succeeded_fetcher()))
    assert decision.create is None
    assert decision.status["phase"] == "Succeeded"
    assert decision.status["progress"] == "100%"
    assert decision.status["duration"] == "4m12s"
    assert "Maintained" not in conditions(decision)
    assert reasons(decision) == ["FetchSucceeded", "SyncSucceeded"]


def test_maintain_only_runs_just_the_maintainer_on_the_published_object() -> None:
    body = cr(spec={"mode": "MaintainOnly"})
    assert decide(observe(body, secrets=None)).needs_secrets == ("maintainer",)
    decision = decide(observe(body))
    assert decision.create == "maintainer"
    assert decision.status["phase"] == "Maintaining"
    assert "Fetched" not in conditions(decision)


def test_a_finished_maintainer_ends_the_run_with_counts_and_duration() -> None:
    view = StageView(
        job=job("run-1-maintainer", conditions=[("Complete", "")], active=0, succeeded=1),
        pods=[pod("run-1-maintainer-a", "maintainer", phase="Succeeded", exit_code=0,
                  message=MAINTAINED)],
    )  # fmt: skip
    decision = decide(
        observe(cr(status=running_status("maintainer")), fetcher=succeeded_fetcher(),
                maintainer=view)
    )  # fmt: skip
    status = decision.status
    assert status["phase"] == "Succeeded"
    assert status["maintainer"]["inserted"] == 5
    assert status["maintainer"]["skipped"] == 12
    assert status["maintainer"]["chunksDone"] == 1
    assert status["duration"] == "4m12s"
    assert status["progress"] == "100%"
    assert conditions(decision)["Succeeded"] == ("True", "SyncSucceeded")
    assert conditions(decision)["Maintained"] == ("True", "MaintainSucceeded")
    assert "5 inserted" in status["message"]
    assert reasons(decision) == ["MaintainSucceeded", "SyncSucceeded"]
    assert decision.finished == "Succeeded"


def test_rejected_credentials_fail_the_run_with_the_jobs_own_reason() -> None:
    failed = {"stage": "fetcher", "ok": False, "reason": "InvalidCredentials",
              "message": "MediPim rejected the API key (HTTP 401)", "exitCode": 2}  # fmt: skip
    view = StageView(
        job=job("run-1-fetcher", conditions=[("Failed", "PodFailurePolicy")], active=0, failed=1),
        pods=[pod("run-1-fetcher-a", "fetcher", phase="Failed", exit_code=2, message=failed)],
    )
    decision = decide(observe(cr(status=running_status()), fetcher=view))
    assert decision.status["phase"] == "Failed"
    assert decision.status["failure"] == {
        "stage": "fetcher",
        "reason": "InvalidCredentials",
        "message": "MediPim rejected the API key (HTTP 401)",
        "exitCode": 2,
        "podName": "run-1-fetcher-a",
    }
    assert conditions(decision)["Fetched"] == ("False", "InvalidCredentials")
    assert reasons(decision) == ["FetchFailed", "SyncFailed"]


def oom_maintainer(*, failed: bool) -> StageView:
    killed = pod("run-1-maintainer-a", "maintainer", phase="Failed", exit_code=137,
                 reason="OOMKilled", memory_limit="8Gi")  # fmt: skip
    if failed:
        return StageView(
            job=job("run-1-maintainer", conditions=[("Failed", "BackoffLimitExceeded")],
                    active=0, failed=1),
            pods=[killed],
        )  # fmt: skip
    retry = pod("run-1-maintainer-b", "maintainer", created="2026-05-01T11:59:30Z")
    return StageView(job=job("run-1-maintainer", failed=1), pods=[killed, retry])


def test_an_oom_killed_maintainer_fails_with_oomkilled_and_an_event() -> None:
    body = cr(status=running_status("maintainer"))
    decision = decide(
        observe(body, fetcher=succeeded_fetcher(), maintainer=oom_maintainer(failed=True))
    )
    failure = decision.status["failure"]
    assert failure["reason"] == "OOMKilled"
    assert failure["exitCode"] == 137
    assert failure["podName"] == "run-1-maintainer-a"
    assert "8Gi" in failure["message"]
    assert reasons(decision) == ["ContainerOOMKilled", "MaintainFailed", "SyncFailed"]


def test_an_oom_kill_the_job_retries_is_reported_once() -> None:
    body = cr(status=running_status("maintainer"))
    view = oom_maintainer(failed=False)
    first = decide(observe(body, fetcher=succeeded_fetcher(), maintainer=view))
    assert reasons(first) == ["ContainerOOMKilled"]
    assert first.status["maintainer"]["oomKilled"] == 1
    assert first.status["maintainer"]["attempts"] == 2
    again = cr(status=apply(body["status"], first.status))
    assert reasons(decide(observe(again, fetcher=succeeded_fetcher(), maintainer=view))) == []


def test_cancel_deletes_the_active_job_and_ends_cancelled() -> None:
    view = StageView(job=job("run-1-fetcher"), pods=[pod("run-1-fetcher-a", "fetcher")])
    body = cr(spec={"cancel": True}, status=running_status(), generation=2)
    decision = decide(observe(body, fetcher=view))
    assert decision.delete == ("run-1-fetcher",)
    assert decision.status["phase"] == "Cancelled"
    assert decision.status["observedGeneration"] == 2
    assert conditions(decision)["Succeeded"] == ("False", "Cancelled")
    assert conditions(decision)["Fetched"] == ("False", "Cancelled")
    assert reasons(decision) == ["SyncCancelled"]
    assert decision.finished == "Cancelled"


def test_cancel_before_any_job_just_ends_the_run() -> None:
    decision = decide(observe(cr(spec={"cancel": True})))
    assert decision.delete == ()
    assert decision.create is None
    assert decision.status["phase"] == "Cancelled"


@pytest.mark.parametrize("phase", ["Succeeded", "Failed", "Cancelled", "Skipped"])
def test_a_finished_run_is_left_alone(phase: str) -> None:
    body = cr(spec={"cancel": True}, status={"phase": phase})
    assert decide(observe(body, fetcher=succeeded_fetcher())) == Decision()


def test_a_job_deleted_behind_the_operators_back_fails_the_run() -> None:
    decision = decide(observe(cr(status=running_status())))
    assert decision.create is None
    assert decision.status["failure"]["reason"] == "JobLost"


def test_a_job_past_its_deadline_is_stopped_by_the_operator() -> None:
    view = StageView(job=job("run-1-fetcher", start="2026-05-01T09:00:00Z"))
    decision = decide(observe(cr(status=running_status()), fetcher=view))
    assert decision.delete == ("run-1-fetcher",)
    assert decision.status["failure"]["reason"] == "DeadlineExceeded"
    assert "activeDeadlineSeconds" in decision.status["failure"]["message"]


QUOTA_REFUSAL = (
    'Error creating: pods "run-1-fetcher-x7k2q" is forbidden: exceeded quota: pods, '
    "requested: pods=1, used: pods=4, limited: pods=4"
)
POD_SECURITY_REFUSAL = (
    'Error creating: pods "run-1-fetcher-x7k2q" is forbidden: violates PodSecurity '
    '"restricted:latest": allowPrivilegeEscalation != false (container "fetcher" must set\n'
    "securityContext.allowPrivilegeEscalation=false)"
)


def refused(*events: dict[str, Any]) -> StageView:
    return StageView(job=job("run-1-fetcher", active=0), refusals=events)


def test_a_job_refused_its_pods_waits_out_the_grace_and_says_why() -> None:
    view = refused(failed_create("run-1-fetcher", QUOTA_REFUSAL, first="2026-05-01T11:59:30Z"))
    decision = decide(observe(cr(status=running_status()), fetcher=view))
    assert decision.finished is None
    assert decision.delete == ()
    assert decision.status["phase"] == "Fetching"
    assert "cannot create its pod" in decision.status["message"]
    assert "exceeded quota: pods" in decision.status["message"]


def test_a_job_refused_its_pods_past_the_grace_fails_the_run_and_is_deleted() -> None:
    events = [
        failed_create("run-1-fetcher", "Error creating: an older refusal",
                      first="2026-05-01T11:58:50Z", last="2026-05-01T11:58:55Z"),
        failed_create("run-1-fetcher", QUOTA_REFUSAL, first="2026-05-01T11:59:00Z",
                      last="2026-05-01T11:59:50Z"),
    ]  # fmt: skip
    obs = replace(observe(cr(status=running_status()), fetcher=refused(*events)),
                  pod_creation_grace=60)  # fmt: skip
    decision = decide(obs)
    assert decision.delete == ("run-1-fetcher",)
    assert decision.finished == "Failed"
    failure = decision.status["failure"]
    assert failure == {"stage": "fetcher", "reason": "PodCreationFailed", "message": QUOTA_REFUSAL}
    assert conditions(decision)["Succeeded"] == ("False", "PodCreationFailed")
    assert reasons(decision) == ["FetchFailed", "SyncFailed"]
    # The same refusals under a longer grace leave the run waiting.
    assert decide(replace(obs, pod_creation_grace=90)).finished is None


def test_a_pod_security_refusal_fails_the_run_at_once() -> None:
    moment = "2026-05-01T11:59:59Z"
    view = refused(failed_create("run-1-fetcher", POD_SECURITY_REFUSAL, first=moment, last=moment))
    decision = decide(observe(cr(status=running_status()), fetcher=view))
    assert decision.delete == ("run-1-fetcher",)
    failure = decision.status["failure"]
    assert failure["reason"] == "PodCreationFailed"
    assert failure["message"] == " ".join(POD_SECURITY_REFUSAL.split())
    assert "\n" not in decision.status["message"]


def test_refusals_no_longer_count_once_the_job_has_a_pod() -> None:
    view = StageView(
        job=job("run-1-fetcher"),
        pods=[pod("run-1-fetcher-a", "fetcher")],
        refusals=[failed_create("run-1-fetcher", POD_SECURITY_REFUSAL)],
    )
    decision = decide(observe(cr(status=running_status()), fetcher=view))
    assert decision.finished is None
    assert decision.status["phase"] == "Fetching"
    assert "cannot create" not in decision.status["message"]


def test_a_job_name_held_by_an_older_namesake_makes_the_run_wait() -> None:
    decision = decide(observe(cr(), fetcher=StageView(blocked_by="run-1-fetcher")))
    assert decision.create is None
    assert decision.status["phase"] == "Pending"
    assert "run-1-fetcher" in decision.status["message"]


def test_a_job_the_api_server_refuses_fails_the_run_with_the_refusal() -> None:
    refusal = 'jobs.batch "run-1-fetcher" is forbidden: exceeded quota: compute'
    obs = observe(cr())
    assert decide(obs).create == "fetcher"
    decision = job_rejected(obs, "fetcher", refusal)
    assert decision.create is None
    assert decision.finished == "Failed"
    assert decision.status["failure"] == {
        "stage": "fetcher",
        "reason": "JobRejected",
        "message": refusal,
    }
    assert conditions(decision)["Succeeded"] == ("False", "JobRejected")
    assert reasons(decision) == ["FetchFailed", "SyncFailed"]


def apply(status: Mapping[str, Any], patch: Mapping[str, Any]) -> dict[str, Any]:
    """A JSON merge patch applied, the way the API server does."""
    return merge_patch(status, patch)


def test_reconciling_converges_without_repeating_events() -> None:
    """Every trigger reconciles, so applying decisions must reach a fixed point, posting each
    event once and creating each Job once."""
    scenarios = [
        (cr(), {}),
        (cr(status=running_status()), {"fetcher": succeeded_fetcher()}),
        (
            cr(status=running_status("maintainer")),
            {"fetcher": succeeded_fetcher(), "maintainer": oom_maintainer(failed=True)},
        ),
    ]
    for body, start_views in scenarios:
        views: dict[str, Any] = dict(start_views)
        status: dict[str, Any] = dict(body.get("status") or {})
        posted: list[str] = []
        created: list[str] = []
        for step in range(4):
            now = NOW + dt.timedelta(seconds=5 * step)
            decision = decide(observe({**body, "status": status}, now=now, **views))
            posted += reasons(decision)
            if decision.create is not None:
                created.append(decision.create)
                views[decision.create] = StageView(job=job(f"run-1-{decision.create}"))
            patch = changed(status, decision.status)
            status = apply(status, decision.status)
            if not patch and not decision.events and decision.create is None:
                break
        else:
            raise AssertionError(f"no fixed point from {body.get('status', {})}")
        assert len(posted) == len(set(posted)), posted
        assert len(created) == len(set(created)), created


def test_a_decision_only_reads_what_it_is_given() -> None:
    """The runtime applies a decision against the body it observed, so deciding must leave that
    body as it was, and give the same answer for the same observation."""
    obs = observe(
        cr(status=running_status("maintainer")),
        fetcher=succeeded_fetcher(),
        maintainer=oom_maintainer(failed=True),
    )
    before = copy.deepcopy(obs)
    first = decide(obs)
    assert first.status
    assert obs == before
    assert decide(copy.deepcopy(obs)) == first


def test_a_failed_or_cancelled_run_clears_its_progress() -> None:
    """A Failed run at "37%" reads like a run still going; the progress is of no stage now."""
    body = cr(status=running_status(progress="37%"))
    failed = StageView(job=job("run-1-fetcher", conditions=[("Failed", "BackoffLimitExceeded")],
                               active=0, failed=3))  # fmt: skip
    decision = decide(observe(body, fetcher=failed))
    assert decision.status["phase"] == "Failed"
    assert changed(body["status"], decision.status)["progress"] is None
    cancelled = cr(spec={"cancel": True}, status=running_status(progress="37%"))
    decision = decide(observe(cancelled, fetcher=StageView(job=job("run-1-fetcher"))))
    assert decision.status["phase"] == "Cancelled"
    assert changed(cancelled["status"], decision.status)["progress"] is None


def test_a_cancelled_maintainer_reports_what_it_had_committed() -> None:
    counts = {"jobName": "run-1-maintainer", "total": 2000, "processed": 1500,
              "inserted": 10, "updated": 90, "skipped": 1400, "deleted": 0, "invalid": 0,
              "chunksDone": 3}  # fmt: skip
    body = cr(spec={"cancel": True}, status=running_status("maintainer", maintainer=counts))
    decision = decide(observe(body, maintainer=StageView(job=job("run-1-maintainer"))))
    assert decision.status["phase"] == "Cancelled"
    assert (
        "committed 1500 of 2000 products (10 inserted, 90 updated, 1400 unchanged"
        in (decision.status["message"])
    )
    assert decision.status.get("maintainer", {}).get("inserted", 10) == 10, "counts kept"
    assert conditions(decision)["Maintained"] == ("False", "Cancelled")


def unschedulable(since: str) -> StageView:
    waiting = pod("run-1-maintainer-a", "maintainer", phase="Pending", created=since)
    waiting["status"]["conditions"] = [
        {"type": "PodScheduled", "status": "False", "reason": "Unschedulable",
         "message": "0/2 nodes are available: 2 node(s) didn't match Pod's node "
                    "affinity/selector.", "lastTransitionTime": since},
    ]  # fmt: skip
    return StageView(job=job("run-1-maintainer"), pods=[waiting])


def test_a_pod_unschedulable_past_the_grace_fails_the_run_with_the_schedulers_reason() -> None:
    body = cr(status=running_status("maintainer"))
    within = observe(
        body, fetcher=succeeded_fetcher(), maintainer=unschedulable("2026-05-01T11:56:00Z")
    )
    assert within.unschedulable_grace == 900
    assert decide(within).status["phase"] == "Maintaining", "4 minutes: a node may be coming"
    decision = decide(
        replace(
            within, stages={**within.stages, "maintainer": unschedulable("2026-05-01T11:44:00Z")}
        )
    )
    assert decision.status["phase"] == "Failed"
    failure = decision.status["failure"]
    assert (failure["stage"], failure["reason"]) == ("maintainer", "Unschedulable")
    assert "pod run-1-maintainer-a could not be scheduled for 16m0s" in failure["message"]
    assert "didn't match Pod's node affinity/selector" in failure["message"]
    assert "spec.maintainer" in failure["message"]
    assert decision.delete == ("run-1-maintainer",)
    assert decision.events[0].type == "Warning"
    assert "Unschedulable" in decision.events[0].message
    assert reasons(decision) == ["MaintainFailed", "SyncFailed"]


def test_requests_above_limits_fail_a_new_run_before_any_job_naming_the_stage() -> None:
    spec = {"maintainer": {"resources": {"requests": {"memory": "8Gi"},
                                         "limits": {"memory": "1Gi"}}}}  # fmt: skip
    decision = decide(observe(cr(spec=spec)))
    assert decision.create is None
    assert decision.status["phase"] == "Failed"
    failure = decision.status["failure"]
    assert (failure["stage"], failure["reason"]) == ("maintainer", "InvalidConfiguration")
    assert "requests.memory (8Gi) is more than resources.limits.memory (1Gi)" in failure["message"]
    assert "FetcherJobCreated" not in reasons(decision)
    # A FetchOnly run never starts a maintainer, so its maintainer settings do not matter.
    decision = decide(observe(cr(spec={**spec, "mode": "FetchOnly"})))
    assert decision.create == "fetcher"


def test_the_operators_own_stage_defaults_are_checked_too() -> None:
    limits = '{"resources": {"requests": {"cpu": "2"}, "limits": {"cpu": "500m"}}}'
    decision = decide(observe(cr(), CATALOGSYNC_FETCHER=limits))
    failure = decision.status["failure"]
    assert (failure["stage"], failure["reason"]) == ("fetcher", "InvalidConfiguration")
    assert "requests.cpu (2) is more than resources.limits.cpu (500m)" in failure["message"]
