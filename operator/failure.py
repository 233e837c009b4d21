"""Why a stage failed, read from its Job and Pods rather than from logs.

A Job's own condition only says *that* it gave up (``BackoffLimitExceeded``, ``DeadlineExceeded``,
``PodFailurePolicy``). The real cause is in the pods: the kubelet's ``OOMKilled``, the exit code,
and the job's termination message (a JSON summary written by ``common/entrypoint.py``). The most
specific of these wins, so ``status.failure`` tells the reader what to change.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import orjson

from catalogsync.common.errors import ExitCode
from catalogsync.operator.spec import Stage
from catalogsync.operator.status import one_line, parse_time

POD_CREATION_FAILED = "FailedCreate"
"""The reason of the Warning event the Job controller records on a Job whose pod was refused."""

UNHEALABLE_POD_REFUSALS = ("violates PodSecurity",)
"""Refusals that retrying cannot lift: the pod template is fixed for the life of the Job."""

_COMBINED = "(combined from similar events): "

GENERIC_REASONS = ("", "Error", "Completed")
"""Reasons that say nothing beyond "it failed"; a more specific one replaces them."""

EXIT_CODE_REASONS = {
    int(ExitCode.PERMANENT): "InvalidConfiguration",
    int(ExitCode.INVALID_DATA): "InvalidData",
}

HINTS = {
    "OOMKilled": "raise spec.{stage}.resources.limits.memory or lower the work per step "
    "(maintainer.chunkSize)",
    "DeadlineExceeded": "raise spec.{stage}.activeDeadlineSeconds if the catalog is this large",
    "BackoffLimitExceeded": "every attempt failed; read the pod logs "
    "(kubectl logs -l catalogsync.io/run={run},catalogsync.io/stage={stage})",
}


@dataclass(frozen=True)
class Failure:
    """The cause of a failed run, in the shape of ``status.failure``."""

    stage: Stage
    reason: str
    message: str
    exit_code: int | None = None
    pod_name: str | None = None

    def to_status(self) -> dict[str, Any]:
        result: dict[str, Any] = {
            "stage": self.stage,
            "reason": self.reason,
            "message": one_line(self.message, 1000),
        }
        if self.exit_code is not None:
            result["exitCode"] = self.exit_code
        if self.pod_name is not None:
            result["podName"] = self.pod_name
        return result


def container_status(pod: Mapping[str, Any], container: str) -> Mapping[str, Any] | None:
    statuses = pod.get("status", {}).get("containerStatuses") or []
    return next((s for s in statuses if s.get("name") == container), None)


def terminated(pod: Mapping[str, Any], container: str) -> Mapping[str, Any] | None:
    """The ``state.terminated`` block of the stage's container, if it has ended."""
    status = container_status(pod, container)
    if status is None:
        return None
    state = status.get("state") or {}
    result = state.get("terminated")
    return dict(result) if isinstance(result, Mapping) else None


def summary(pod: Mapping[str, Any], container: str) -> dict[str, Any] | None:
    """The job's JSON termination message, or None if it left none (or only a log tail)."""
    ended = terminated(pod, container)
    text = ended.get("message") if ended else None
    if not isinstance(text, str) or not text.strip().startswith("{"):
        return None
    try:
        parsed = orjson.loads(text)
    except orjson.JSONDecodeError:
        return None
    return parsed if isinstance(parsed, dict) else None


def _finished_at(pod: Mapping[str, Any], container: str) -> str:
    ended = terminated(pod, container) or {}
    return str(ended.get("finishedAt") or pod.get("metadata", {}).get("creationTimestamp") or "")


def failed_pods(pods: Sequence[Mapping[str, Any]], container: str) -> list[Mapping[str, Any]]:
    """Pods whose stage container ended badly, oldest first."""
    bad = [
        pod
        for pod in pods
        if pod.get("status", {}).get("phase") == "Failed"
        or (terminated(pod, container) or {}).get("exitCode", 0) != 0
    ]
    return sorted(bad, key=lambda pod: _finished_at(pod, container))


def oom_killed(pods: Sequence[Mapping[str, Any]], container: str) -> list[str]:
    """Names of the pods whose stage container the kernel killed for memory, oldest first."""
    return [
        str(pod["metadata"]["name"])
        for pod in failed_pods(pods, container)
        if (terminated(pod, container) or {}).get("reason") == "OOMKilled"
    ]


def job_failure_condition(job: Mapping[str, Any]) -> Mapping[str, Any] | None:
    """The Job's ``Failed`` (or the earlier ``FailureTarget``) condition when it is True."""
    conditions: list[Mapping[str, Any]] = job.get("status", {}).get("conditions") or []
    for wanted in ("Failed", "FailureTarget"):
        for cond in conditions:
            if cond.get("type") == wanted and cond.get("status") == "True":
                return cond
    return None


def _log_tail(text: str) -> str:
    lines = [line for line in text.strip().splitlines() if line.strip()]
    return lines[-1] if lines else ""


def stage_failure(
    stage: Stage, job: Mapping[str, Any] | None, pods: Sequence[Mapping[str, Any]]
) -> Failure:
    """The most specific cause of ``stage``'s failure that the Job and its pods reveal."""
    condition = job_failure_condition(job) if job is not None else None
    job_reason = str(condition.get("reason", "")) if condition else ""
    job_message = str(condition.get("message", "")) if condition else ""
    bad = failed_pods(pods, stage)
    last = bad[-1] if bad else None
    ended = terminated(last, stage) if last is not None else None
    pod_name = str(last["metadata"]["name"]) if last is not None else None
    exit_code = int(ended["exitCode"]) if ended and "exitCode" in ended else None
    reported = summary(last, stage) if last is not None else None
    attempts = f" after {len(bad)} attempts" if len(bad) > 1 else ""

    if ended and ended.get("reason") == "OOMKilled":
        limit = _memory_limit(last, stage) if last is not None else None
        within = f" (limit {limit})" if limit else ""
        message = f"the {stage} container of pod {pod_name} ran out of memory{within}{attempts}"
        return Failure(
            stage, "OOMKilled", with_hint(message, "OOMKilled", stage), exit_code, pod_name
        )

    pod_reason = str(last.get("status", {}).get("reason", "")) if last is not None else ""
    if "DeadlineExceeded" in (job_reason, pod_reason):
        message = job_message or f"the {stage} did not finish within its deadline"
        return Failure(
            stage, "DeadlineExceeded", with_hint(message, "DeadlineExceeded", stage),
            exit_code, pod_name,
        )  # fmt: skip

    if reported and str(reported.get("reason", "")) not in GENERIC_REASONS:
        message = str(reported.get("message", "")) + attempts
        return Failure(stage, str(reported["reason"]), message, exit_code, pod_name)

    detail = ""
    if reported and reported.get("message"):
        detail = str(reported["message"])
    elif ended and isinstance(ended.get("message"), str):
        detail = _log_tail(ended["message"])
    exit_text = f"exit code {exit_code}" if exit_code is not None else "no exit code"
    message = f"pod {pod_name} failed ({exit_text})" if pod_name else f"the {stage} Job failed"
    if detail:
        message = f"{message}: {detail}"

    if exit_code in EXIT_CODE_REASONS:
        return Failure(stage, EXIT_CODE_REASONS[exit_code], message, exit_code, pod_name)
    if job_reason == "BackoffLimitExceeded":
        message = with_hint(message + attempts, "BackoffLimitExceeded", stage, _run_of(job, stage))
        return Failure(stage, "BackoffLimitExceeded", message, exit_code, pod_name)
    reason = job_reason if job_reason and job_reason != "PodFailurePolicy" else "Error"
    return Failure(stage, reason, message or job_message, exit_code, pod_name)


def with_hint(message: str, reason: str, stage: Stage, run: str | None = None) -> str:
    """``message`` with what to do about ``reason``; ``run`` narrows a log selector to one run."""
    return f"{message}; {HINTS[reason].format(stage=stage, run=run or '<name>')}"


def _run_of(job: Mapping[str, Any] | None, stage: Stage) -> str | None:
    """The run a stage's Job belongs to: its name is ``<run>-<stage>``."""
    name = str((job or {}).get("metadata", {}).get("name") or "")
    return name.removesuffix(f"-{stage}") if name.endswith(f"-{stage}") else None


def _memory_limit(pod: Mapping[str, Any], container: str) -> str | None:
    for spec in pod.get("spec", {}).get("containers") or []:
        if spec.get("name") == container:
            limit = (spec.get("resources") or {}).get("limits", {}).get("memory")
            return str(limit) if limit else None
    return None


def pending_reason(pods: Sequence[Mapping[str, Any]]) -> str | None:
    """Why the newest pod has not started yet (unschedulable, image pull), for ``message``."""
    waiting = [pod for pod in pods if pod.get("status", {}).get("phase") in (None, "Pending")]
    if not waiting:
        return None
    pod = max(waiting, key=lambda p: str(p.get("metadata", {}).get("creationTimestamp", "")))
    name = pod["metadata"]["name"]
    for cond in pod.get("status", {}).get("conditions") or []:
        if cond.get("type") == "PodScheduled" and cond.get("status") == "False":
            return f"pod {name} cannot be scheduled: {cond.get('message') or cond.get('reason')}"
    for status in pod.get("status", {}).get("containerStatuses") or []:
        waiting_state = (status.get("state") or {}).get("waiting") or {}
        if waiting_state.get("reason") not in (None, "ContainerCreating"):
            detail = waiting_state.get("message") or ""
            return f"pod {name} is waiting: {waiting_state['reason']} {detail}".strip()
    return None


@dataclass(frozen=True)
class Unschedulable:
    """The scheduler has found no node for the newest pod of a stage."""

    pod: str
    lasted: float
    """Seconds since the scheduler first said so (or since the pod was created)."""
    message: str
    """The scheduler's reason, e.g. ``0/3 nodes are available: 3 Insufficient memory.``"""


def unschedulable(pods: Sequence[Mapping[str, Any]], now: dt.datetime) -> Unschedulable | None:
    """Whether the newest pending pod is marked ``PodScheduled=False`` (``Unschedulable``)."""
    waiting = [pod for pod in pods if pod.get("status", {}).get("phase") in (None, "Pending")]
    if not waiting:
        return None
    pod = max(waiting, key=lambda p: str(p.get("metadata", {}).get("creationTimestamp", "")))
    for cond in pod.get("status", {}).get("conditions") or []:
        if (cond.get("type"), cond.get("status"), cond.get("reason")) == (
            "PodScheduled",
            "False",
            "Unschedulable",
        ):
            since = parse_time(cond.get("lastTransitionTime")) or parse_time(
                pod.get("metadata", {}).get("creationTimestamp")
            )
            lasted = (now - since).total_seconds() if since is not None else 0.0
            message = one_line(str(cond.get("message") or "no node fits the pod"), 1000)
            return Unschedulable(str(pod["metadata"]["name"]), lasted, message)
    return None


@dataclass(frozen=True)
class PodRefusal:
    """The API server has been refusing the pods of a Job (admission, quota, PriorityClass)."""

    since: dt.datetime | None
    """When the first refusal was recorded (None if no event says)."""
    message: str
    """The newest refusal, as the Job controller worded it."""

    @property
    def permanent(self) -> bool:
        return any(marker in self.message for marker in UNHEALABLE_POD_REFUSALS)

    def lasted(self, now: dt.datetime) -> float:
        return (now - self.since).total_seconds() if self.since is not None else 0.0


def _event_time(event: Mapping[str, Any], *fields: str) -> dt.datetime | None:
    for name in fields:
        if moment := parse_time(event.get(name)):
            return moment
    return parse_time(event.get("metadata", {}).get("creationTimestamp"))


def pod_refusal(events: Sequence[Mapping[str, Any]]) -> PodRefusal | None:
    """What the Job's ``FailedCreate`` events say, or None when there are none.

    Events come in both API shapes: the legacy one (``firstTimestamp``/``lastTimestamp``) and
    the series one (``eventTime``, ``series.lastObservedTime``).
    """
    refused = [e for e in events if e.get("reason") == POD_CREATION_FAILED and e.get("message")]
    if not refused:
        return None
    starts = [t for e in refused if (t := _event_time(e, "firstTimestamp", "eventTime"))]
    epoch = dt.datetime.min.replace(tzinfo=dt.UTC)

    def last_seen(event: Mapping[str, Any]) -> dt.datetime:
        series = event.get("series") or {}
        latest = parse_time(series.get("lastObservedTime"))
        return latest or _event_time(event, "lastTimestamp", "eventTime") or epoch

    newest = max(refused, key=last_seen)
    message = str(newest["message"]).removeprefix(_COMBINED)
    return PodRefusal(min(starts) if starts else None, one_line(message, 1000))
