"""Reading the real cause of a failed stage out of its Job and Pods."""

from __future__ import annotations

import datetime as dt

from catalogsync.operator.failure import pending_reason, pod_refusal, stage_failure
from catalogsync.operator.spec import Stage
from tests.operator_objects import NOW, failed_create, job, pod


def failed_job(reason: str, message: str = "") -> dict[str, object]:
    return job("run-1-fetcher", conditions=[("Failed", reason)], active=0, failed=1,
               message=message)  # fmt: skip


def test_oom_killed_wins_over_the_jobs_own_reason() -> None:
    pods = [pod("p1", "maintainer", phase="Failed", exit_code=137, reason="OOMKilled",
                memory_limit="8Gi")]  # fmt: skip
    failure = stage_failure("maintainer", failed_job("BackoffLimitExceeded"), pods)
    assert (failure.reason, failure.exit_code, failure.pod_name) == ("OOMKilled", 137, "p1")
    assert "limit 8Gi" in failure.message
    assert "resources.limits.memory" in failure.message


def test_a_deadline_is_reported_as_such_with_what_to_change() -> None:
    pods = [pod("p1", "fetcher", phase="Failed", exit_code=143)]
    failure = stage_failure("fetcher", failed_job("DeadlineExceeded", "Job was active longer"),
                            pods)  # fmt: skip
    assert failure.reason == "DeadlineExceeded"
    assert "activeDeadlineSeconds" in failure.message


def test_the_jobs_termination_message_names_the_cause() -> None:
    summary = {"stage": "fetcher", "ok": False, "reason": "IncompleteStream",
               "message": "stream ended at 10 of 20", "exitCode": 1}  # fmt: skip
    pods = [
        pod("p1", "fetcher", phase="Failed", exit_code=1, message=summary,
            finished="2026-05-01T11:58:30Z"),
        pod("p2", "fetcher", phase="Failed", exit_code=1, message=summary,
            finished="2026-05-01T11:59:30Z"),
    ]  # fmt: skip
    failure = stage_failure("fetcher", failed_job("BackoffLimitExceeded"), pods)
    assert failure.reason == "IncompleteStream"
    assert failure.pod_name == "p2"
    assert failure.message == "stream ended at 10 of 20 after 2 attempts"


def test_a_generic_crash_after_retries_is_backoff_limit_exceeded_with_the_log_tail() -> None:
    pods = [pod("p1", "fetcher", phase="Failed", exit_code=1,
                message="Traceback (most recent call last):\nRuntimeError: boom\n")]  # fmt: skip
    failure = stage_failure("fetcher", failed_job("BackoffLimitExceeded"), pods)
    assert failure.reason == "BackoffLimitExceeded"
    assert "RuntimeError: boom" in failure.message
    assert "exit code 1" in failure.message


def test_the_log_hint_selects_the_pods_of_this_run_only() -> None:
    pods = [pod("p1", "fetcher", phase="Failed", exit_code=1, message="boom")]
    failure = stage_failure("fetcher", failed_job("BackoffLimitExceeded"), pods)
    assert "kubectl logs -l catalogsync.io/run=run-1,catalogsync.io/stage=fetcher" in (
        failure.message
    )


def test_permanent_exit_codes_without_a_summary_map_to_reasons() -> None:
    pods = [pod("p1", "maintainer", phase="Failed", exit_code=3)]
    assert stage_failure("maintainer", failed_job("PodFailurePolicy"), pods).reason == (
        "InvalidData"
    )
    pods = [pod("p1", "maintainer", phase="Failed", exit_code=2)]
    assert stage_failure("maintainer", failed_job("PodFailurePolicy"), pods).reason == (
        "InvalidConfiguration"
    )


def test_a_failure_without_pods_still_says_which_stage() -> None:
    failure = stage_failure("fetcher", failed_job("BackoffLimitExceeded"), [])
    assert failure.stage == "fetcher"
    assert failure.pod_name is None


def test_pending_reason_explains_unschedulable_and_missing_config() -> None:
    unscheduled = pod("p1", "maintainer", phase="Pending")
    unscheduled["status"]["conditions"] = [
        {"type": "PodScheduled", "status": "False", "message": "0/2 nodes are available"}
    ]
    assert pending_reason([unscheduled]) == "pod p1 cannot be scheduled: 0/2 nodes are available"
    waiting = pod("p2", "maintainer", phase="Pending")
    waiting["status"]["containerStatuses"][0]["state"] = {
        "waiting": {"reason": "CreateContainerConfigError", "message": 'secret "x" not found'}
    }
    assert pending_reason([waiting]) == (
        'pod p2 is waiting: CreateContainerConfigError secret "x" not found'
    )
    assert pending_reason([pod("p3", "maintainer")]) is None


def test_pod_refusals_date_from_the_first_and_quote_the_newest() -> None:
    legacy = failed_create("run-1-fetcher", "(combined from similar events): Error creating: B",
                           first="2026-05-01T11:59:00Z", last="2026-05-01T11:59:40Z")  # fmt: skip
    series = {
        "metadata": {"creationTimestamp": "2026-05-01T11:59:10Z"},
        "reason": "FailedCreate",
        "message": "Error creating: C",
        "eventTime": "2026-05-01T11:58:30.123456Z",
        "series": {"count": 3, "lastObservedTime": "2026-05-01T11:59:50.000000Z"},
    }
    refusal = pod_refusal([legacy, series, {**legacy, "reason": "SuccessfulCreate"}])
    assert refusal is not None
    assert refusal.message == "Error creating: C"
    assert refusal.since == dt.datetime(2026, 5, 1, 11, 58, 30, 123456, tzinfo=dt.UTC)
    assert not refusal.permanent
    only_legacy = pod_refusal([legacy])
    assert only_legacy is not None
    assert only_legacy.message == "Error creating: B"
    assert only_legacy.lasted(NOW) == 60.0
    assert pod_refusal([]) is None
    assert pod_refusal([{**legacy, "reason": "SuccessfulCreate"}]) is None


def test_unreachable_services_reach_the_status_by_name() -> None:
    """The job's own reason, not the Job's ``BackoffLimitExceeded``, is what the CR shows."""
    cases: list[tuple[Stage, str, str]] = [
        ("fetcher", "StorageUnavailable", "Supabase Storage at 127.0.0.1:1 (STORAGE_URL)"),
        ("maintainer", "DatabaseUnavailable", "the database at 127.0.0.1:1/postgres"),
        ("maintainer", "Interrupted", "stopped by SIGTERM after 4 committed chunks"),
    ]
    for stage, reason, text in cases:
        summary = {"stage": stage, "ok": False, "reason": reason, "message": text, "exitCode": 1}
        pods = [
            pod("p1", stage, phase="Failed", exit_code=1, message=summary,
                finished="2026-05-01T11:58:30Z"),
            pod("p2", stage, phase="Failed", exit_code=1, message=summary,
                finished="2026-05-01T11:59:30Z"),
        ]  # fmt: skip
        failure = stage_failure(stage, failed_job("BackoffLimitExceeded"), pods)
        assert failure.reason == reason
        assert failure.message.startswith(text)
        assert "after 2 attempts" in failure.message
