"""The operator's hands: read the cluster, ask :func:`decide`, carry out what it says.

Every trigger (a new CR, an operator restart, a Job or Pod event, the CR's own status moving, the
periodic resync) ends in :meth:`Runtime.reconcile`, which is serialised per CatalogSync and always
starts from fresh reads of the API, never from the event that woke it. Order of effects: create
the Job or delete Jobs, patch the status, post events, then (once per run) prune history and notify.
A crash between two steps is repaired by the next reconcile, because :func:`decide` re-derives
everything from what exists.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import json
import logging
import socket
from collections.abc import Awaitable, Callable, Iterable, Mapping, Sequence
from dataclasses import replace
from typing import Any

from catalogsync.common.kube import API_VERSION, GROUP, KIND, PLURAL, VERSION, api_client
from catalogsync.operator import credentials, history
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
from catalogsync.operator.settings import OperatorSettings
from catalogsync.operator.spec import STAGES, RunSpec, Stage, resolve
from catalogsync.operator.status import changed, format_time, one_line

log = logging.getLogger(__name__)

MERGE_PATCH = "application/merge-patch+json"
COMPONENT = "catalogsync-operator"

FinishedHook = Callable[[Mapping[str, Any]], object]
"""Called with the CatalogSync body once its run has ended (after the final status patch).

This is the notification seam. A coroutine result is awaited; anything else (a scheduled task,
as the webhook notifier returns) is left alone, so a slow receiver never holds up the operator.
"""


def _utcnow() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


def _status_code(exc: BaseException) -> int | None:
    status = getattr(exc, "status", None)
    return status if isinstance(status, int) else None


REJECTED = (400, 403, 404, 422)
"""Answers to a Job create that the same request would get again: fail the run, say why."""


class JobRejected(Exception):
    """The API server refused to create a Job; the message is its reason, for the run's status."""


def _api_message(exc: BaseException) -> str:
    """The ``message`` of a Kubernetes ``Status`` answer, else the HTTP reason."""
    body = getattr(exc, "body", None)
    try:
        message = json.loads(body).get("message") if body else None
    except (ValueError, AttributeError):
        message = None
    return str(message or getattr(exc, "reason", "") or exc)


def _owned_by(obj: Mapping[str, Any], uid: str) -> bool:
    owners = obj.get("metadata", {}).get("ownerReferences") or []
    return any(owner.get("uid") == uid for owner in owners)


class Runtime:
    """Kubernetes access for the handlers; one per operator process."""

    def __init__(
        self,
        settings: OperatorSettings,
        *,
        finished_hooks: Sequence[FinishedHook] = (),
        clock: Callable[[], dt.datetime] = _utcnow,
    ) -> None:
        self.settings = settings
        self.finished_hooks = list(finished_hooks)
        self.clock = clock
        self._locks: dict[tuple[str, str], asyncio.Lock] = {}
        self._client: Any = None
        self._instance = socket.gethostname()

    # -- API plumbing

    async def open(self) -> None:
        if self._client is None:
            self._client = await api_client()

    async def close(self) -> None:
        if self._client is not None:
            await self._client.close()
            self._client = None

    @property
    def _apis(self) -> tuple[Any, Any, Any]:
        from kubernetes_asyncio import client

        if self._client is None:
            raise RuntimeError("Runtime.open() was not awaited")
        return (
            client.CustomObjectsApi(self._client),
            client.BatchV1Api(self._client),
            client.CoreV1Api(self._client),
        )

    async def _raw(self, call: Awaitable[Any]) -> Any:
        """A typed API call's JSON as plain dicts (camelCase keys, like the pure code expects)."""
        from kubernetes_asyncio.client.exceptions import ApiException

        response = await call
        try:
            if not 200 <= response.status <= 299:
                # Unlike preloaded calls, raw ones do not raise on their own.
                raise ApiException(status=response.status, reason=await response.text())
            return await response.json()
        finally:
            response.release()

    async def get_run(self, namespace: str, name: str) -> dict[str, Any] | None:
        custom, _, _ = self._apis
        try:
            body: dict[str, Any] = await custom.get_namespaced_custom_object(
                GROUP, VERSION, namespace, PLURAL, name
            )
        except Exception as exc:
            if _status_code(exc) == 404:
                return None
            raise
        return body

    async def list_runs(self, namespace: str | None) -> list[dict[str, Any]]:
        custom, _, _ = self._apis
        if namespace is None:
            result = await custom.list_cluster_custom_object(GROUP, VERSION, PLURAL)
        else:
            result = await custom.list_namespaced_custom_object(GROUP, VERSION, namespace, PLURAL)
        items: list[dict[str, Any]] = result.get("items") or []
        return items

    async def observe(self, run: RunSpec) -> dict[Stage, StageView]:
        """The run's Jobs and their Pods, split by stage; same-named Jobs of others block."""
        _, batch, core = self._apis
        selector = f"{RUN_LABEL}={run.name}"
        jobs = await self._raw(
            batch.list_namespaced_job(
                run.namespace, label_selector=selector, _preload_content=False
            )
        )
        pods = await self._raw(
            core.list_namespaced_pod(run.namespace, label_selector=selector, _preload_content=False)
        )
        views: dict[Stage, StageView] = {}
        for stage in STAGES:
            name = job_name(run.name, stage)
            job = next((j for j in jobs.get("items") or [] if j["metadata"]["name"] == name), None)
            if job is not None and not _owned_by(job, run.uid):
                views[stage] = StageView(blocked_by=name)
                continue
            job_uid = job["metadata"]["uid"] if job is not None else None
            stage_pods = [p for p in pods.get("items") or [] if job_uid and _owned_by(p, job_uid)]
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
        _, _, core = self._apis
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
            events = await self._raw(
                core.list_namespaced_event(
                    namespace, field_selector=selector, _preload_content=False
                )
            )
        except Exception as exc:
            log.warning(
                "could not list the events of Job %s/%s: %s", namespace, metadata["name"], exc
            )
            return []
        items: list[dict[str, Any]] = events.get("items") or []
        return items

    async def read_secrets(self, namespace: str, names: Iterable[str]) -> dict[str, Any]:
        """``name -> data`` (None when absent). Values stay base64 and go nowhere but the check."""
        _, _, core = self._apis
        found: dict[str, Any] = {}
        for name in dict.fromkeys(names):
            try:
                secret = await self._raw(
                    core.read_namespaced_secret(name, namespace, _preload_content=False)
                )
            except Exception as exc:
                if _status_code(exc) == 404:
                    found[name] = None
                    continue
                raise
            found[name] = secret.get("data") or {}
        return found

    # -- reconcile

    def _lock(self, namespace: str, name: str) -> asyncio.Lock:
        return self._locks.setdefault((namespace, name), asyncio.Lock())

    async def reconcile(self, namespace: str, name: str) -> None:
        """Bring one CatalogSync a step closer to done; safe to call any time, any number of
        times, from any trigger."""
        async with self._lock(namespace, name):
            body = await self.get_run(namespace, name)
            if body is None or not is_running(body) or body["metadata"].get("deletionTimestamp"):
                self._locks.pop((namespace, name), None)
                return
            run = resolve(body, self.settings)
            phase = (body.get("status") or {}).get("phase") or ""
            rivals = await self.list_runs(namespace) if phase in ("", "Pending") else []
            obs = Observation(
                cr=body,
                run=run,
                stages=await self.observe(run),
                now=self.clock(),
                rivals=rivals,
                deadline_grace=self.settings.deadline_grace,
                pod_creation_grace=self.settings.pod_creation_grace,
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
            await self.apply(body, run, decision)

    async def apply(self, body: Mapping[str, Any], run: RunSpec, decision: Decision) -> None:
        """Carry out a decision whose Job, if any, exists already."""
        for name in decision.delete:
            await self.delete_job(run.namespace, name)
        current = body.get("status") or {}
        patch = changed(current, decision.status)
        if patch:
            await self.patch_status(run.namespace, run.name, patch)
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
        _, batch, _ = self._apis
        manifest = build_job(run, stage, self.settings)
        name = manifest["metadata"]["name"]
        try:
            await batch.create_namespaced_job(run.namespace, manifest)
            log.info("created Job %s/%s", run.namespace, name, extra={"stage": stage})
            return True
        except Exception as exc:
            status = _status_code(exc)
            if status in REJECTED:
                refusal = f"the API server refused Job {run.namespace}/{name}: {_api_message(exc)}"
                log.warning("%s", refusal)
                raise JobRejected(refusal) from None
            if status != 409:
                raise
        existing = await self._raw(
            batch.read_namespaced_job(name, run.namespace, _preload_content=False)
        )
        if _owned_by(existing, run.uid):
            log.info("adopted existing Job %s/%s", run.namespace, name)
            return True
        log.warning("Job %s/%s exists and belongs to another owner; waiting", run.namespace, name)
        return False

    async def delete_job(self, namespace: str, name: str) -> None:
        """Delete a Job with its Pods (background propagation); gone already is fine."""
        _, batch, _ = self._apis
        try:
            await batch.delete_namespaced_job(name, namespace, propagation_policy="Background")
            log.info("deleted Job %s/%s", namespace, name)
        except Exception as exc:
            if _status_code(exc) != 404:
                raise

    async def patch_status(self, namespace: str, name: str, patch: Mapping[str, Any]) -> None:
        custom, _, _ = self._apis
        try:
            await custom.patch_namespaced_custom_object_status(
                GROUP,
                VERSION,
                namespace,
                PLURAL,
                name,
                {"status": dict(patch)},
                _content_type=MERGE_PATCH,
            )
        except Exception as exc:
            if _status_code(exc) != 404:
                raise

    async def post_event(
        self, body: Mapping[str, Any], type_: str, reason: str, message: str
    ) -> None:
        """A core/v1 Event on the CatalogSync; a lost event is logged, never fatal."""
        _, _, core = self._apis
        metadata = body["metadata"]
        now = format_time(self.clock())
        event = {
            "metadata": {
                "generateName": f"{metadata['name']}.",
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
            "message": one_line(message, 1024),
            "type": type_,
            "source": {"component": COMPONENT},
            "reportingComponent": f"{GROUP}/operator",
            "reportingInstance": self._instance,
            "firstTimestamp": now,
            "lastTimestamp": now,
            "count": 1,
        }
        try:
            await core.create_namespaced_event(metadata["namespace"], event)
        except Exception as exc:
            log.warning("could not post event %s on %s: %s", reason, metadata["name"], exc)
        log.info(
            "%s: %s",
            reason,
            message,
            extra={"run": metadata["name"], "namespace": metadata["namespace"], "reason": reason},
        )

    async def prune(self, body: Mapping[str, Any], run: RunSpec) -> None:
        """Delete finished runs of the catalog beyond the history limits (Jobs go with them)."""
        runs = await self.list_runs(run.namespace)
        doomed = history.runs_to_prune(
            runs,
            catalog=run.catalog,
            successful_limit=self.settings.successful_runs_history_limit,
            failed_limit=self.settings.failed_runs_history_limit,
        )
        if not doomed:
            return
        custom, _, _ = self._apis
        for name in doomed:
            try:
                await custom.delete_namespaced_custom_object(
                    GROUP, VERSION, run.namespace, PLURAL, name, propagation_policy="Background"
                )
            except Exception as exc:
                if _status_code(exc) != 404:
                    raise
        await self.post_event(
            body,
            "Normal",
            "HistoryPruned",
            f"deleted {len(doomed)} finished run(s) of catalog {run.catalog} beyond the history "
            f"limits ({self.settings.successful_runs_history_limit} succeeded, "
            f"{self.settings.failed_runs_history_limit} other): {', '.join(doomed)}",
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
            for body in await self.list_runs(scope):
                if not is_running(body):
                    continue
                metadata = body["metadata"]
                try:
                    await self.reconcile(metadata["namespace"], metadata["name"])
                except Exception:
                    log.exception("resync of %s/%s failed", metadata["namespace"], metadata["name"])

    async def resync_forever(self, namespaces: Sequence[str] | None) -> None:
        """Re-derive unfinished runs every ``resync_interval``: covers missed watch events and
        enforces deadlines even when nothing else happens."""
        while True:
            await asyncio.sleep(self.settings.resync_interval)
            try:
                await self.resync(namespaces)
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("resync failed")
