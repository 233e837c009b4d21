"""The reconcile loop: read the cluster, ask :func:`decide`, carry out what it says.

Every trigger (a new CR, an operator restart, a Job or Pod event, the CR's own status moving, the
periodic resync) ends in :meth:`Reconciler.reconcile`, which is serialised per CatalogSync and
always starts from fresh reads of the API, never from the event that woke it. Order of effects:
create the Job or delete Jobs, patch the status, post events, then (once per run) prune history
and notify. A crash between two steps is repaired by the next reconcile, because :func:`decide`
re-derives everything from what exists.

The loop knows Kubernetes only through :class:`~catalogsync.operator.cluster.Cluster`, so its
orchestration is tested against an in-memory cluster; :mod:`catalogsync.operator.runtime` wires it
to the API server.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import datetime as dt
import logging
import socket
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import replace
from typing import Any

from catalogsync.common import redact
from catalogsync.common.kube import API_VERSION, GROUP, KIND
from catalogsync.operator import credentials, history
from catalogsync.operator.cluster import Cluster, JobRejected
from catalogsync.operator.decide import (
    Decision,
    Observation,
    StageView,
    decide,
    is_running,
    job_rejected,
    job_state,
)
from catalogsync.operator.failure import POD_CREATION_FAILED
from catalogsync.operator.jobs import RUN_LABEL, build_job, job_name
from catalogsync.operator.metrics import OperatorMetrics
from catalogsync.operator.settings import OperatorSettings
from catalogsync.operator.spec import STAGES, RunSpec, Stage, resolve
from catalogsync.operator.status import changed, format_time, one_line

log = logging.getLogger(__name__)

COMPONENT = "catalogsync-operator"

FinishedHook = Callable[[Mapping[str, Any]], object]
"""Called with the CatalogSync body once its run has ended (after the final status patch).

This is the notification seam. A coroutine result is awaited; anything else (a scheduled task,
as the webhook notifier returns) is left alone, so a slow receiver never holds up the operator.
"""


def utcnow() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


def _owned_by(obj: Mapping[str, Any], uid: str) -> bool:
    owners = obj.get("metadata", {}).get("ownerReferences") or []
    return any(owner.get("uid") == uid for owner in owners)


def _decoded(data: Any) -> str | None:
    """A Secret value as text, so that :mod:`redact` masks it (None if it is not text)."""
    try:
        return base64.b64decode(str(data), validate=True).decode()
    except (binascii.Error, UnicodeDecodeError):
        return None


class Reconciler:
    """Drives CatalogSync runs through a :class:`Cluster`; one per operator process."""

    def __init__(
        self,
        cluster: Cluster,
        settings: OperatorSettings,
        *,
        finished_hooks: Sequence[FinishedHook] = (),
        clock: Callable[[], dt.datetime] = utcnow,
        instance: str | None = None,
        metrics: OperatorMetrics | None = None,
    ) -> None:
        self.cluster = cluster
        self.settings = settings
        self.finished_hooks = list(finished_hooks)
        self.metrics = metrics or OperatorMetrics()
        self.clock = clock
        self._locks: dict[tuple[str, str], asyncio.Lock] = {}
        self._prune_locks: dict[tuple[str, str], asyncio.Lock] = {}
        self._last_event = 0
        self._instance = instance or socket.gethostname()

    # -- reads

    async def observe(self, run: RunSpec) -> dict[Stage, StageView]:
        """The run's Jobs and their Pods, split by stage; same-named Jobs of others block."""
        selector = f"{RUN_LABEL}={run.name}"
        jobs = await self.cluster.list_jobs(run.namespace, selector)
        pods = await self.cluster.list_pods(run.namespace, selector)
        views: dict[Stage, StageView] = {}
        for stage in STAGES:
            name = job_name(run.name, stage)
            job = next((j for j in jobs if j["metadata"]["name"] == name), None)
            if job is not None and not _owned_by(job, run.uid):
                views[stage] = StageView(blocked_by=name)
                continue
            job_uid = job["metadata"]["uid"] if job is not None else None
            stage_pods = [p for p in pods if job_uid and _owned_by(p, job_uid)]
            refusals: list[dict[str, Any]] = []
            if job is not None and not stage_pods and job_state(job) == "running":
                refusals = await self.pod_refusals(run.namespace, job)
            views[stage] = StageView(job=job, pods=stage_pods, refusals=refusals)
        return views

    async def pod_refusals(self, namespace: str, job: Mapping[str, Any]) -> list[dict[str, Any]]:
        """The Job controller's ``FailedCreate`` events on ``job`` (its pods were refused).

        Asked only for a running Job without pods, so a healthy run costs no extra call. A failed
        lookup is logged and treated as none: the run then falls back on its deadline.
        """
        metadata = job["metadata"]
        selector = ",".join(
            [
                "involvedObject.kind=Job",
                f"involvedObject.name={metadata['name']}",
                f"involvedObject.uid={metadata['uid']}",
                f"reason={POD_CREATION_FAILED}",
            ]
        )
        try:
            return await self.cluster.list_events(namespace, selector)
        except Exception as exc:
            log.warning(
                "could not list the events of Job %s/%s: %s", namespace, metadata["name"], exc
            )
            return []

    async def read_secrets(self, namespace: str, names: Iterable[str]) -> dict[str, Any]:
        """``name -> data`` (None when absent). Values stay base64 and go nowhere but the check."""
        found = {
            name: await self.cluster.read_secret_data(namespace, name)
            for name in dict.fromkeys(names)
        }
        for data in found.values():
            redact.register(*map(_decoded, (data or {}).values()))
        return found

    # -- reconcile

    def _lock(self, namespace: str, name: str) -> asyncio.Lock:
        return self._locks.setdefault((namespace, name), asyncio.Lock())

    async def reconcile(self, namespace: str, name: str) -> None:
        """Bring one CatalogSync a step closer to done; safe to call any time, any number of
        times, from any trigger."""
        async with self._lock(namespace, name):
            body = await self.cluster.get_run(namespace, name)
            if body is None or not is_running(body) or body["metadata"].get("deletionTimestamp"):
                self._locks.pop((namespace, name), None)
                return
            run = resolve(body, self.settings)
            phase = (body.get("status") or {}).get("phase") or ""
            rivals = await self.cluster.list_runs(namespace) if phase in ("", "Pending") else []
            obs = Observation(
                cr=body,
                run=run,
                stages=await self.observe(run),
                now=self.clock(),
                rivals=rivals,
                deadline_grace=self.settings.deadline_grace,
                pod_creation_grace=self.settings.pod_creation_grace,
                unschedulable_grace=self.settings.unschedulable_grace,
            )
            decision = decide(obs)
            if decision.needs_secrets:
                needed = [k for s in decision.needs_secrets for k in credentials.required(run, s)]
                secrets = await self.read_secrets(namespace, (k.secret for k in needed))
                problems = credentials.problems(needed, secrets, namespace)
                decision = decide(replace(obs, secret_problems=problems))
            if decision.create is not None:
                try:
                    if not await self.create_job(run, decision.create):
                        return  # a stranger holds the name; the next reconcile reports the wait
                except JobRejected as exc:
                    decision = job_rejected(obs, decision.create, str(exc))
            observed = {
                str(view.job["metadata"]["name"]): str(view.job["metadata"]["uid"])
                for view in obs.stages.values()
                if view.job is not None
            }
            await self.apply(body, run, decision, observed)

    async def apply(
        self,
        body: Mapping[str, Any],
        run: RunSpec,
        decision: Decision,
        job_uids: Mapping[str, str] | None = None,
    ) -> None:
        """Carry out a decision whose Job, if any, exists already.

        Every write names the object the decision was made for: Jobs by the uid observed
        (``job_uids``, name -> uid), the status by the run's uid. A refused status patch means
        the run was deleted (or replaced under its name) since it was read, so its events, its
        history pruning and its notice are dropped: they would describe a run nobody has.
        """
        uids = job_uids or {}
        for name in decision.delete:
            await self.cluster.delete_job(run.namespace, name, uids.get(name))
        current = body.get("status") or {}
        patch = changed(current, redact.value(decision.status))
        # An empty patch still checks the uid before the events and the notice go out.
        wanted = bool(patch or decision.events or decision.finished)
        if wanted and not await self.cluster.patch_run_status(
            run.namespace, run.name, patch, run.uid
        ):
            log.info(
                "run %s/%s was deleted while it was reconciled; nothing more is written "
                "for it (dropped: %s)",
                run.namespace,
                run.name,
                ", ".join(e.reason for e in decision.events) or "no events",
            )
            return
        if patch:
            self.metrics.applied(body, patch)
        for event in decision.events:
            await self.post_event(body, event.type, event.reason, event.message)
        if decision.finished:
            log.info(
                "run %s/%s %s",
                run.namespace,
                run.name,
                decision.finished,
                extra={"catalog": run.catalog, "phase": decision.finished},
            )
            await self.prune(body, run)
            final = {**body, "status": {**current, **decision.status}}
            await self.notify(final)

    async def create_job(self, run: RunSpec, stage: Stage) -> bool:
        """Create the stage's Job; False if its name belongs to another owner (409, not ours).

        Raises :class:`JobRejected` when the API server refuses the Job itself.
        """
        manifest = build_job(run, stage, self.settings)
        name = manifest["metadata"]["name"]
        try:
            created = await self.cluster.create_job(run.namespace, manifest)
        except JobRejected as exc:
            refusal = f"the API server refused Job {run.namespace}/{name}: {exc}"
            log.warning("%s", refusal)
            raise JobRejected(refusal) from None
        if created:
            log.info("created Job %s/%s", run.namespace, name, extra={"stage": stage})
            return True
        existing = await self.cluster.read_job(run.namespace, name)
        if _owned_by(existing, run.uid):
            log.info("adopted existing Job %s/%s", run.namespace, name)
            return True
        log.warning("Job %s/%s exists and belongs to another owner; waiting", run.namespace, name)
        return False

    async def post_event(
        self, body: Mapping[str, Any], type_: str, reason: str, message: str
    ) -> None:
        """A core/v1 Event on the CatalogSync; a lost event is logged, never fatal."""
        metadata = body["metadata"]
        now = format_time(self.clock())
        event = {
            "metadata": {
                "name": f"{metadata['name']}.{self._event_stamp():x}",
                "namespace": metadata["namespace"],
            },
            "involvedObject": {
                "apiVersion": API_VERSION,
                "kind": KIND,
                "name": metadata["name"],
                "namespace": metadata["namespace"],
                "uid": metadata["uid"],
            },
            "reason": reason,
            "message": one_line(redact.text(message), 1024),
            "type": type_,
            "source": {"component": COMPONENT},
            "reportingComponent": f"{GROUP}/operator",
            "reportingInstance": self._instance,
            "firstTimestamp": now,
            "lastTimestamp": now,
            "count": 1,
        }
        try:
            await self.cluster.create_event(metadata["namespace"], event)
        except Exception as exc:
            log.warning("could not post event %s on %s: %s", reason, metadata["name"], exc)
        log.info(
            "%s: %s",
            reason,
            message,
            extra={"run": metadata["name"], "namespace": metadata["namespace"], "reason": reason},
        )

    def _event_stamp(self) -> int:
        """Nanoseconds since the epoch, strictly increasing: the suffix of an event's name.

        The API lists events by name and ``kubectl describe`` sorts them by a timestamp of whole
        seconds, so events of one reconcile would come out shuffled under random names. Like
        client-go's recorder (``<object>.<unix nanoseconds, hex>``), names that grow with time
        list them in the order they happened.
        """
        self._last_event = max(time.time_ns(), self._last_event + 1)
        return self._last_event

    async def prune(self, body: Mapping[str, Any], run: RunSpec) -> None:
        """Delete finished runs of the catalog beyond the history limits (Jobs go with them).

        Prunes of one catalog take turns, each listing the runs afresh, so runs ending together
        never DELETE the same run twice. The event names only the runs this prune deleted (by
        uid: a run deleted by someone else, or re-created under its name, is not counted).
        """
        async with self._prune_locks.setdefault((run.namespace, run.catalog), asyncio.Lock()):
            await self._prune(body, run)

    async def _prune(self, body: Mapping[str, Any], run: RunSpec) -> None:
        runs = await self.cluster.list_runs(run.namespace)
        uids = {str(b["metadata"]["name"]): str(b["metadata"].get("uid")) for b in runs}
        doomed = history.runs_to_prune(
            runs,
            catalog=run.catalog,
            successful_limit=self.settings.successful_runs_history_limit,
            failed_limit=self.settings.failed_runs_history_limit,
            skipped_limit=self.settings.skipped_runs_history_limit,
            keep=run.uid,
        )
        deleted = [
            name
            for name in doomed
            if await self.cluster.delete_run(run.namespace, name, uids[name])
        ]
        if not deleted:
            return
        await self.post_event(
            body,
            "Normal",
            "HistoryPruned",
            f"deleted {len(deleted)} finished run(s) of catalog {run.catalog} beyond the history "
            f"limits ({self.settings.successful_runs_history_limit} succeeded, "
            f"{self.settings.failed_runs_history_limit} failed or cancelled, "
            f"{self.settings.skipped_runs_history_limit} skipped): {', '.join(deleted)}",
        )

    async def notify(self, body: Mapping[str, Any]) -> None:
        for hook in self.finished_hooks:
            try:
                result = hook(body)
                if asyncio.iscoroutine(result):
                    await result
            except Exception:
                log.exception("finished-run hook %r failed", hook)

    # -- resync

    async def resync(self, namespaces: Sequence[str] | None) -> None:
        """Reconcile every unfinished run once (``None``: all namespaces)."""
        scopes: Sequence[str | None] = namespaces if namespaces else [None]
        for scope in scopes:
            runs = await self.cluster.list_runs(scope)
            self.metrics.observed(scope, runs)
            for body in runs:
                if not is_running(body):
                    continue
                metadata = body["metadata"]
                try:
                    await self.reconcile(metadata["namespace"], metadata["name"])
                except Exception:
                    log.exception("resync of %s/%s failed", metadata["namespace"], metadata["name"])

    async def resync_forever(self, namespaces: Sequence[str] | None) -> None:
        """Re-derive unfinished runs every ``resync_interval``: covers missed watch events and
        enforces deadlines even when nothing else happens. The first one runs at once, so the
        metrics' view of the runs is complete right after a start."""
        while True:
            try:
                await self.resync(namespaces)
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("resync failed")
            await asyncio.sleep(self.settings.resync_interval)
