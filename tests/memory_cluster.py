"""An in-memory :class:`~catalogsync.operator.cluster.Cluster`: the reconciler's tests run on it.

It keeps CatalogSyncs, Jobs, Pods, Events and Secrets as the API's JSON, answers exactly as the
protocol says (None for absent, False for a taken Job name, :class:`JobRejected` for a refused
Job), and records every effect in ``effects`` so a test can assert their order. Faults are put in
by name: ``cluster.faults["list_events"] = RuntimeError("boom")`` makes that call raise.
"""

from __future__ import annotations

import base64
import copy
import itertools
from collections.abc import Mapping
from typing import Any

from catalogsync.operator.cluster import JobRejected
from catalogsync.operator.status import merge_patch

Key = tuple[str, str]


def _dig(obj: Mapping[str, Any], path: str) -> Any:
    value: Any = obj
    for part in path.split("."):
        value = value.get(part) if isinstance(value, Mapping) else None
    return value


def _selects(obj: Mapping[str, Any], selector: str, *, labels: bool) -> bool:
    """``k=v,k=v`` against labels (label selector) or dotted fields (field selector)."""
    for term in filter(None, selector.split(",")):
        key, _, want = term.partition("=")
        got = (obj.get("metadata", {}).get("labels") or {}).get(key) if labels else _dig(obj, key)
        if str(got) != want:
            return False
    return True


def secret_data(**values: str) -> dict[str, str]:
    """A Secret's ``data`` as the API returns it (base64 values)."""
    return {k: base64.b64encode(v.encode()).decode() for k, v in values.items()}


class MemoryCluster:
    """A namespaced store of API objects behind the :class:`Cluster` protocol."""

    def __init__(self) -> None:
        self.runs: dict[Key, dict[str, Any]] = {}
        self.jobs: dict[Key, dict[str, Any]] = {}
        self.pods: dict[Key, dict[str, Any]] = {}
        self.events: list[dict[str, Any]] = []
        self.secrets: dict[Key, dict[str, Any]] = {}
        self.effects: list[tuple[str, ...]] = []
        """Every write, in order: ``("create_job", name)``, ``("patch_status", name)``, ..."""
        self.calls: list[str] = []
        """Every method called, in order (reads too)."""
        self.refuse_jobs: dict[str, str] = {}
        """Job name -> the API server's message when it refuses to create that Job."""
        self.faults: dict[str, BaseException] = {}
        """Method name -> the exception that call raises."""
        self.gone_on_delete: set[str] = set()
        """Runs that someone else deletes just before this cluster's delete of them arrives."""
        self.deleted_job_uids: list[str | None] = []
        """The uid precondition of every Job delete, in order."""
        self._uids = itertools.count(1)

    # -- setup

    def add_run(self, body: Mapping[str, Any]) -> dict[str, Any]:
        stored = copy.deepcopy(dict(body))
        metadata = stored["metadata"]
        self.runs[metadata["namespace"], metadata["name"]] = stored
        return stored

    def add_job(self, job: Mapping[str, Any], namespace: str = "ns") -> dict[str, Any]:
        stored = copy.deepcopy(dict(job))
        self.jobs[namespace, stored["metadata"]["name"]] = stored
        return stored

    def add_pod(self, pod: Mapping[str, Any], namespace: str = "ns") -> dict[str, Any]:
        stored = copy.deepcopy(dict(pod))
        self.pods[namespace, stored["metadata"]["name"]] = stored
        return stored

    def add_secret(self, namespace: str, name: str, data: Mapping[str, str]) -> None:
        self.secrets[namespace, name] = dict(data)

    def run(self, namespace: str, name: str) -> dict[str, Any]:
        return self.runs[namespace, name]

    def _call(self, name: str) -> None:
        self.calls.append(name)
        fault = self.faults.get(name)
        if fault is not None:
            raise fault

    # -- Cluster

    async def get_run(self, namespace: str, name: str) -> dict[str, Any] | None:
        self._call("get_run")
        body = self.runs.get((namespace, name))
        return copy.deepcopy(body) if body is not None else None

    async def list_runs(self, namespace: str | None) -> list[dict[str, Any]]:
        self._call("list_runs")
        return [copy.deepcopy(b) for (ns, _), b in self.runs.items() if namespace in (None, ns)]

    async def delete_run(self, namespace: str, name: str, uid: str) -> bool:
        self._call("delete_run")
        self.effects.append(("delete_run", name))
        if name in self.gone_on_delete:
            self.runs.pop((namespace, name), None)
        body = self.runs.get((namespace, name))
        if body is None or body["metadata"]["uid"] != uid:
            return False
        del self.runs[namespace, name]
        # Background propagation: the run's Jobs and their Pods go too.
        for key, job in list(self.jobs.items()):
            if key[0] == namespace and _owner_uids(job) & {uid}:
                await self._cascade(key)
        return True

    async def patch_run_status(
        self, namespace: str, name: str, patch: Mapping[str, Any], uid: str
    ) -> bool:
        self._call("patch_run_status")
        self.effects.append(("patch_status", name))
        body = self.runs.get((namespace, name))
        if body is None or body["metadata"]["uid"] != uid:
            return False
        body["status"] = merge_patch(body.get("status") or {}, patch)
        return True

    async def list_jobs(self, namespace: str, label_selector: str) -> list[dict[str, Any]]:
        self._call("list_jobs")
        return [
            copy.deepcopy(j)
            for (ns, _), j in self.jobs.items()
            if ns == namespace and _selects(j, label_selector, labels=True)
        ]

    async def read_job(self, namespace: str, name: str) -> dict[str, Any]:
        self._call("read_job")
        return copy.deepcopy(self.jobs[namespace, name])

    async def create_job(self, namespace: str, manifest: Mapping[str, Any]) -> bool:
        self._call("create_job")
        name = manifest["metadata"]["name"]
        if name in self.refuse_jobs:
            raise JobRejected(self.refuse_jobs[name])
        if (namespace, name) in self.jobs:
            return False
        job = copy.deepcopy(dict(manifest))
        job["metadata"] = {
            **job["metadata"],
            "namespace": namespace,
            "uid": f"uid-{next(self._uids)}",
        }
        job["status"] = {}
        self.jobs[namespace, name] = job
        self.effects.append(("create_job", name))
        return True

    async def delete_job(self, namespace: str, name: str, uid: str | None) -> None:
        self._call("delete_job")
        self.effects.append(("delete_job", name))
        self.deleted_job_uids.append(uid)
        job = self.jobs.get((namespace, name))
        if job is not None and uid in (None, job["metadata"].get("uid")):
            await self._cascade((namespace, name))

    async def _cascade(self, key: Key) -> None:
        job = self.jobs.pop(key, None)
        if job is not None:
            uid = job["metadata"].get("uid")
            for pod_key, pod in list(self.pods.items()):
                if pod_key[0] == key[0] and uid in _owner_uids(pod):
                    del self.pods[pod_key]

    async def list_pods(self, namespace: str, label_selector: str) -> list[dict[str, Any]]:
        self._call("list_pods")
        return [
            copy.deepcopy(p)
            for (ns, _), p in self.pods.items()
            if ns == namespace and _selects(p, label_selector, labels=True)
        ]

    async def list_events(self, namespace: str, field_selector: str) -> list[dict[str, Any]]:
        self._call("list_events")
        return [
            copy.deepcopy(e)
            for e in self.events
            if e["metadata"]["namespace"] == namespace and _selects(e, field_selector, labels=False)
        ]

    async def create_event(self, namespace: str, event: Mapping[str, Any]) -> None:
        self._call("create_event")
        stored = copy.deepcopy(dict(event))
        metadata = stored["metadata"]
        metadata.setdefault("name", f"{metadata.pop('generateName', '')}{next(self._uids)}")
        metadata["namespace"] = namespace
        self.events.append(stored)
        self.effects.append(("create_event", stored["reason"]))

    async def read_secret_data(self, namespace: str, name: str) -> dict[str, Any] | None:
        self._call("read_secret_data")
        data = self.secrets.get((namespace, name))
        return dict(data) if data is not None else None


def _owner_uids(obj: Mapping[str, Any]) -> set[str]:
    return {o.get("uid") for o in obj.get("metadata", {}).get("ownerReferences") or []}
