"""The operator's brain, as one pure function: what a run should look like now, and what to do.

:func:`decide` takes a CatalogSync together with the Jobs and Pods that exist for it (and the
``FailedCreate`` events of a Job that has no pods) and returns the status it should have, the Job
to create or delete, and the events to post. It reads the Jobs first and the recorded status
second, so an operator that restarts (or missed watch events) finds the same answer from the
cluster alone: a Job that exists is adopted, never created again.
Nothing here talks to the API, which is what lets every transition be unit-tested.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any, Literal

from catalogsync.common import summaries
from catalogsync.operator import failure as failures
from catalogsync.operator.credentials import SecretProblem
from catalogsync.operator.failure import Failure
from catalogsync.operator.jobs import job_name
from catalogsync.operator.spec import STAGES, RunSpec, Stage
from catalogsync.operator.status import (
    RUNNING_PHASES,
    TERMINAL_PHASES,
    condition,
    format_duration,
    format_time,
    merge_conditions,
    one_line,
    parse_time,
    percent,
)

EventType = Literal["Normal", "Warning"]

PHASE_OF: dict[Stage, str] = {"fetcher": "Fetching", "maintainer": "Maintaining"}
CONDITION_OF: dict[Stage, str] = {"fetcher": "Fetched", "maintainer": "Maintained"}
VERB_OF: dict[Stage, str] = {"fetcher": "Fetch", "maintainer": "Maintain"}
JOB_CREATED_OF: dict[Stage, str] = {
    "fetcher": "FetcherJobCreated",
    "maintainer": "MaintainerJobCreated",
}

COUNT_FIELDS: dict[Stage, tuple[str, ...]] = {
    "fetcher": summaries.FROM_SUMMARY["fetcher"],
    "maintainer": summaries.FROM_SUMMARY["maintainer"],
}
"""The counts a stage's termination message may carry into ``status.<stage>``."""

PROGRESS_OF: dict[Stage, tuple[str, str]] = {
    "fetcher": summaries.PROGRESS_OF["fetcher"],
    "maintainer": summaries.PROGRESS_OF["maintainer"],
}


@dataclass(frozen=True)
class StageView:
    """What exists in the cluster for one stage of the run."""

    job: Mapping[str, Any] | None = None
    pods: Sequence[Mapping[str, Any]] = ()
    blocked_by: str | None = None
    """A Job with this stage's name that belongs to another (older, deleted) CatalogSync."""
    refusals: Sequence[Mapping[str, Any]] = ()
    """The Job's ``FailedCreate`` events; looked up only while the Job has no pods."""


@dataclass(frozen=True)
class Observation:
    cr: Mapping[str, Any]
    run: RunSpec
    stages: Mapping[Stage, StageView]
    now: dt.datetime
    rivals: Sequence[Mapping[str, Any]] = ()
    """Other CatalogSyncs of the namespace (any catalog; :func:`active_rival` filters)."""
    secret_problems: Sequence[SecretProblem] | None = None
    """None: not looked at yet. Filled by the caller when a decision asks for it."""
    deadline_grace: float = 120.0
    pod_creation_grace: float = 60.0
    """Seconds a Job may go on being refused its pods (a quota may free up) before the run fails."""
    unschedulable_grace: float = 900.0
    """Seconds a stage's pod may stay unschedulable (a node may be added) before the run fails."""


@dataclass(frozen=True)
class Event:
    type: EventType
    reason: str
    message: str


@dataclass
class Decision:
    status: dict[str, Any] = field(default_factory=dict)
    """A merge patch for ``.status`` (the caller drops what would not change)."""
    create: Stage | None = None
    delete: tuple[str, ...] = ()
    """Job names to delete (with their pods)."""
    events: list[Event] = field(default_factory=list)
    finished: str | None = None
    """The terminal phase the run reached in this decision (prune history, notify)."""
    failure: Failure | None = None
    needs_secrets: tuple[Stage, ...] = ()
    """Decide again with ``secret_problems`` checked for these stages before going on."""


def job_state(job: Mapping[str, Any]) -> Literal["running", "succeeded", "failed"]:
    conditions = job.get("status", {}).get("conditions") or []
    true = {c.get("type") for c in conditions if c.get("status") == "True"}
    if true & {"Failed", "FailureTarget"}:
        return "failed"
    if true & {"Complete", "SuccessCriteriaMet"}:
        return "succeeded"
    return "running"


def _sort_key(body: Mapping[str, Any]) -> tuple[str, str]:
    metadata = body.get("metadata") or {}
    return (str(metadata.get("creationTimestamp") or ""), str(metadata.get("name") or ""))


def active_rival(cr: Mapping[str, Any], catalog: str, others: Sequence[Mapping[str, Any]]) -> Any:
    """Another run of ``catalog`` that holds the catalog, or None.

    A run holds it once started; among runs not yet started the oldest wins, so two CRs created
    at once cannot both start (nor both skip).
    """
    me = _sort_key(cr)
    uid = cr.get("metadata", {}).get("uid")
    for other in sorted(others, key=_sort_key):
        metadata = other.get("metadata") or {}
        if metadata.get("uid") == uid or metadata.get("deletionTimestamp"):
            continue
        if (other.get("spec") or {}).get("catalog", "medipim-au") != catalog:
            continue
        phase = (other.get("status") or {}).get("phase") or ""
        if phase in ("Fetching", "Maintaining"):
            return other
        if phase in ("", "Pending") and _sort_key(other) < me:
            return other
    return None


def stage_done_pod(pods: Sequence[Mapping[str, Any]], stage: Stage) -> Mapping[str, Any] | None:
    done = [p for p in pods if p.get("status", {}).get("phase") == "Succeeded"]
    return max(done, key=_sort_key) if done else None


def final_counts(stage: Stage, pods: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
    """Counts from the succeeded pod's termination message (what the live patches may have lost)."""
    pod = stage_done_pod(pods, stage)
    reported = failures.summary(pod, stage) if pod is not None else None
    if not reported:
        return {}
    return {k: reported[k] for k in COUNT_FIELDS[stage] if reported.get(k) is not None}


def attempts(view: StageView) -> int:
    counted = view.job.get("status", {}) if view.job else {}
    by_job = sum(int(counted.get(k) or 0) for k in ("active", "succeeded", "failed"))
    return max(by_job, len(view.pods))


class _Plan:
    """Accumulates one decision; each method is one kind of transition."""

    def __init__(self, obs: Observation) -> None:
        self.obs = obs
        self.run = obs.run
        self.status: Mapping[str, Any] = obs.cr.get("status") or {}
        self.generation = obs.cr.get("metadata", {}).get("generation")
        self.decision = Decision()
        self.patch = self.decision.status
        self.conditions: list[dict[str, Any]] = []

    # -- building blocks

    def set_condition(self, type_: str, status: str, reason: str, message: str) -> None:
        self.conditions.append(
            condition(
                type_,
                status,
                reason,
                message,
                now=self.obs.now,
                generation=self.generation,
                previous=self.status.get("conditions") or [],
            )
        )

    def event(self, type_: EventType, reason: str, message: str) -> None:
        self.decision.events.append(Event(type_, reason, one_line(message, 1000)))

    def stage_patch(self, stage: Stage) -> dict[str, Any]:
        sub: dict[str, Any] = self.patch.setdefault(stage, {})
        return sub

    def condition_is(self, type_: str, status: str) -> bool:
        current = self.status.get("conditions") or []
        return any(c.get("type") == type_ and c.get("status") == status for c in current)

    def counts(self, stage: Stage) -> Mapping[str, Any]:
        live = dict(self.status.get(stage) or {})
        live.update(self.patch.get(stage) or {})
        return live

    def started(self) -> None:
        if not self.status.get("startTime"):
            self.patch["startTime"] = format_time(self.obs.now)

    def finish(self, phase: str, message: str) -> Decision:
        start = parse_time(self.patch.get("startTime") or self.status.get("startTime"))
        self.patch["phase"] = phase
        self.patch["completionTime"] = format_time(self.obs.now)
        if start is not None:
            self.patch["duration"] = format_duration((self.obs.now - start).total_seconds())
        self.patch["message"] = one_line(message)
        self.decision.finished = phase
        return self.done()

    def done(self) -> Decision:
        if self.conditions:
            self.patch["conditions"] = merge_conditions(
                self.status.get("conditions") or [], self.conditions
            )
        if self.patch and self.generation is not None:
            self.patch["observedGeneration"] = self.generation
        return self.decision

    def report_oom(self, stage: Stage, view: StageView) -> None:
        """One ``ContainerOOMKilled`` event per OOM-killed pod, counted in ``status.<stage>``."""
        killed = failures.oom_killed(view.pods, stage)
        seen = int((self.status.get(stage) or {}).get("oomKilled") or 0)
        for pod in killed[seen:]:
            limit = self.run.pods[stage].resources.get("limits", {}).get("memory", "unset")
            self.event(
                "Warning",
                "ContainerOOMKilled",
                f"the {stage} container of pod {pod} was killed for using more memory than its "
                f"limit ({limit})",
            )
        if len(killed) > seen:
            self.stage_patch(stage)["oomKilled"] = len(killed)

    # -- transitions

    def skip(self, rival: Mapping[str, Any]) -> Decision:
        other = rival["metadata"]["name"]
        phase = (rival.get("status") or {}).get("phase") or "waiting to start"
        message = (
            f"run {other} of catalog {self.run.catalog} is still active ({phase}); "
            "this run was skipped, not queued"
        )
        self.set_condition("Skipped", "True", "ConcurrentRunActive", message)
        self.set_condition("Succeeded", "False", "Skipped", message)
        self.event("Normal", "SyncSkipped", message)
        return self.finish("Skipped", message)

    def fail(self, failure: Failure, *, delete: Sequence[str] = ()) -> Decision:
        stage = failure.stage
        self.patch["failure"] = failure.to_status()
        self.patch["progress"] = None  # a percentage of no stage; "37%" would read as running
        summary = f"{stage} failed: {failure.reason}: {failure.message}"
        if stage in self.run.stages:
            self.set_condition(CONDITION_OF[stage], "False", failure.reason, failure.message)
        self.set_condition("Succeeded", "False", failure.reason, summary)
        self.decision.delete = tuple(delete)
        self.event("Warning", f"{VERB_OF[stage]}Failed", f"{failure.reason}: {failure.message}")
        self.event("Warning", "SyncFailed", summary)
        return self.finish("Failed", summary)

    def cancel(self) -> Decision:
        active = [
            str(view.job["metadata"]["name"])
            for view in self.obs.stages.values()
            if view.job is not None and job_state(view.job) == "running"
        ]
        message = "cancelled through spec.cancel"
        if active:
            message += f"; deleted Job {', '.join(active)}"
        phase = self.status.get("phase") or ""
        if phase == PHASE_OF["maintainer"]:
            # Each chunk commits on its own, so what the maintainer counted is in the table.
            counts = self.counts("maintainer")
            message += (
                f"; the maintainer had committed {counts.get('processed', 0)} of "
                f"{counts.get('total', '?')} products ({counts.get('inserted', 0)} inserted, "
                f"{counts.get('updated', 0)} updated, {counts.get('skipped', 0)} unchanged, "
                f"{counts.get('deleted', 0)} deleted, {counts.get('invalid', 0)} invalid)"
            )
        for stage, stage_phase in PHASE_OF.items():
            if phase == stage_phase:
                self.set_condition(CONDITION_OF[stage], "False", "Cancelled", message)
        self.set_condition("Succeeded", "False", "Cancelled", message)
        self.decision.delete = tuple(active)
        self.patch["progress"] = None
        self.event("Normal", "SyncCancelled", message)
        return self.finish("Cancelled", message)

    def start(self, stage: Stage, *, first: bool) -> Decision:
        view = self.obs.stages[stage]
        if view.blocked_by is not None:
            self.patch["phase"] = "Pending" if first else PHASE_OF[stage]
            self.patch["message"] = (
                f"waiting for Job {view.blocked_by} of an earlier CatalogSync named "
                f"{self.run.name} to be deleted"
            )
            return self.done()
        if self.obs.secret_problems is None:
            self.decision.needs_secrets = self.run.stages if first else (stage,)
            return self.decision
        if problems := self.obs.secret_problems:
            text = "; ".join(problem.message for problem in problems)
            missing = any(problem.reason == "SecretNotFound" for problem in problems)
            # The stage that reads the Secret, not the one about to start: a missing database
            # Secret is the maintainer's problem even though the run stops before the fetch.
            user = min((problem.stage for problem in problems), key=STAGES.index)
            return self.fail(Failure(user, "SecretNotFound" if missing else "InvalidSecret", text))
        name = job_name(self.run.name, stage)
        self.decision.create = stage
        self.started()
        self.patch["phase"] = PHASE_OF[stage]
        self.patch["progress"] = "0%"
        self.patch["message"] = f"{PHASE_OF[stage].lower()}: Job {name} created"
        self.stage_patch(stage)["jobName"] = name
        self.set_condition(CONDITION_OF[stage], "Unknown", PHASE_OF[stage], f"Job {name} created")
        self.set_condition("Succeeded", "Unknown", PHASE_OF[stage], f"Job {name} created")
        self.event("Normal", JOB_CREATED_OF[stage], f"created Job {name}")
        return self.done()

    def running(self, stage: Stage, view: StageView) -> Decision:
        assert view.job is not None
        name = str(view.job["metadata"]["name"])
        self.report_oom(stage, view)
        refusal = failures.pod_refusal(view.refusals) if not view.pods else None
        if refusal is not None and (
            refusal.permanent or refusal.lasted(self.obs.now) >= self.obs.pod_creation_grace
        ):
            return self.fail(Failure(stage, "PodCreationFailed", refusal.message), delete=(name,))
        stuck = failures.unschedulable(view.pods, self.obs.now)
        if stuck is not None and stuck.lasted >= self.obs.unschedulable_grace:
            message = (
                f"pod {stuck.pod} could not be scheduled for {format_duration(stuck.lasted)}: "
                f"{stuck.message}; make room or change spec.{stage}.resources, nodeSelector, "
                "tolerations or affinity (or the operator's defaults for the stage)"
            )
            return self.fail(Failure(stage, "Unschedulable", message), delete=(name,))
        job_started = parse_time(view.job.get("status", {}).get("startTime"))
        deadline = self.run.pods[stage].active_deadline_seconds + self.obs.deadline_grace
        if job_started and (self.obs.now - job_started).total_seconds() > deadline:
            message = (
                f"Job {name} ran for more than activeDeadlineSeconds "
                f"({self.run.pods[stage].active_deadline_seconds}s) and was stopped"
            )
            failure = failures.stage_failure(stage, view.job, view.pods)
            failure = replace(
                failure, reason="DeadlineExceeded", message=failures.with_hint(
                    message, "DeadlineExceeded", stage
                ),
            )  # fmt: skip
            return self.fail(failure, delete=(name,))
        self.started()
        counts = self.counts(stage)
        done_field, total_field = PROGRESS_OF[stage]
        progress = percent(counts.get(done_field), counts.get(total_field)) or "0%"
        self.patch["phase"] = PHASE_OF[stage]
        self.patch["progress"] = progress
        sub = self.stage_patch(stage)
        sub["jobName"] = name
        sub["attempts"] = attempts(view)
        unit = "records" if stage == "fetcher" else "products"
        message = f"{PHASE_OF[stage].lower()}: {progress}"
        if counts.get(total_field):
            message += f" ({counts.get(done_field) or 0} of {counts[total_field]} {unit})"
        if sub["attempts"] > 1:
            message += f", attempt {sub['attempts']}"
        if waiting := failures.pending_reason(view.pods):
            message += f"; {waiting}"
        elif refusal is not None:
            message += f"; Job {name} cannot create its pod: {refusal.message}"
        self.patch["message"] = one_line(message)
        self.set_condition(CONDITION_OF[stage], "Unknown", PHASE_OF[stage], f"Job {name} running")
        self.set_condition("Succeeded", "Unknown", PHASE_OF[stage], f"Job {name} running")
        return self.done()

    def stage_succeeded(self, stage: Stage, view: StageView) -> None:
        sub = self.stage_patch(stage)
        sub.update(final_counts(stage, view.pods))
        if view.job is not None:
            sub["jobName"] = str(view.job["metadata"]["name"])
            sub["attempts"] = attempts(view)
        self.report_oom(stage, view)
        if self.condition_is(CONDITION_OF[stage], "True"):
            return
        counts = self.counts(stage)
        if stage == "fetcher":
            text = f"fetched {counts.get('records', 0)} records ({counts.get('bytes', 0)} bytes)"
            if counts.get("since"):
                text += f" updated since {counts['since']}"
            if counts.get("fullBecause"):
                text += f"; {counts['fullBecause']}"
        else:
            text = (
                f"processed {counts.get('processed', 0)} products: "
                f"{counts.get('inserted', 0)} inserted, {counts.get('updated', 0)} updated, "
                f"{counts.get('skipped', 0)} unchanged, {counts.get('deleted', 0)} deleted, "
                f"{counts.get('invalid', 0)} invalid"
            )
            if counts.get("changesFeed"):
                text += (
                    f"; {counts.get('changes', 0)} changes in {counts['changesFeed']} "
                    f"(run_id {self.run.name})"
                )
        self.set_condition(CONDITION_OF[stage], "True", f"{VERB_OF[stage]}Succeeded", text)
        self.event("Normal", f"{VERB_OF[stage]}Succeeded", text)

    def succeed(self) -> Decision:
        last: Stage = self.run.stages[-1]
        text = next(
            (c["message"] for c in self.conditions if c["type"] == CONDITION_OF[last]),
            "all stages succeeded",
        )
        self.patch["progress"] = "100%"
        self.set_condition("Succeeded", "True", "SyncSucceeded", text)
        self.event("Normal", "SyncSucceeded", text)
        return self.finish("Succeeded", text)

    def lost(self, stage: Stage) -> Decision:
        name = job_name(self.run.name, stage)
        return self.fail(
            Failure(
                stage,
                "JobLost",
                f"Job {name} was deleted before it finished; to stop a run set spec.cancel, "
                "to run again create a new CatalogSync",
            )
        )


def decide(obs: Observation) -> Decision:
    """The next step of the run in ``obs``; calling it again with the result applied is a no-op."""
    plan = _Plan(obs)
    status = plan.status
    phase = status.get("phase") or ""
    if phase in TERMINAL_PHASES:
        return Decision()
    run = obs.run
    if run.cancel:
        return plan.cancel()
    for position, stage in enumerate(run.stages):
        view = obs.stages[stage]
        recorded = (status.get(stage) or {}).get("jobName")
        if view.job is None:
            if plan.condition_is(CONDITION_OF[stage], "True"):
                continue  # finished earlier; its Job was removed since, which is fine
            if recorded:
                return plan.lost(stage)
            if position == 0:
                if phase not in ("", "Pending"):
                    return plan.lost(stage)
                if rival := active_rival(obs.cr, run.catalog, obs.rivals):
                    return plan.skip(rival)
                if run.problems:
                    problem = "; ".join(run.problems)
                    return plan.fail(Failure(stage, "InvalidConfiguration", problem))
                if run.pod_problems:
                    # Checked for every stage now, so the maintainer's cannot fail after a fetch.
                    first = next(s for s in run.stages if s in run.pod_problems)
                    problem = "; ".join(p for s in run.stages for p in run.pod_problems.get(s, ()))
                    return plan.fail(Failure(first, "InvalidConfiguration", problem))
            return plan.start(stage, first=position == 0)
        state = job_state(view.job)
        if state == "running":
            return plan.running(stage, view)
        if state == "failed":
            plan.report_oom(stage, view)
            return plan.fail(failures.stage_failure(stage, view.job, view.pods))
        plan.stage_succeeded(stage, view)
    return plan.succeed()


def job_rejected(obs: Observation, stage: Stage, message: str) -> Decision:
    """Fail the run whose Job the API server refused (RBAC, admission, quota, an invalid field).

    The same manifest would be refused again on every reconcile, and a run left waiting would show
    nobody why; the refusal itself names what to fix.
    """
    return _Plan(obs).fail(Failure(stage, "JobRejected", message))


def is_running(body: Mapping[str, Any]) -> bool:
    """Whether the operator still has work on this CatalogSync."""
    return ((body.get("status") or {}).get("phase") or "") in ("", *RUNNING_PHASES)
