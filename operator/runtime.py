"""The operator's hands on the API server: :class:`KubeCluster`, and :class:`Runtime` wiring it to
the reconcile loop.

:class:`KubeCluster` is the real :class:`~catalogsync.operator.cluster.Cluster`: one
kubernetes-asyncio call per method, with the API's answers turned into the protocol's (404 into
None or a no-op, 409 into False, a refused Job into :class:`JobRejected`). Everything the operator
decides lives in :mod:`catalogsync.operator.reconciler` and :mod:`catalogsync.operator.decide`.
"""

from __future__ import annotations

import datetime as dt
import logging
from collections.abc import Awaitable, Callable, Mapping, Sequence
from typing import Any

from catalogsync.common.kube import GROUP, PLURAL, VERSION, api_client, status_message
from catalogsync.operator.cluster import JobRejected
from catalogsync.operator.metrics import OperatorMetrics
from catalogsync.operator.reconciler import FinishedHook, Reconciler, utcnow
from catalogsync.operator.settings import OperatorSettings

__all__ = ["REJECTED", "FinishedHook", "JobRejected", "KubeCluster", "Runtime"]

log = logging.getLogger(__name__)

MERGE_PATCH = "application/merge-patch+json"

REJECTED = (400, 403, 404, 422)
"""Answers to a Job create that the same request would get again: fail the run, say why."""


def _status_code(exc: BaseException) -> int | None:
    status = getattr(exc, "status", None)
    return status if isinstance(status, int) else None


STATUS_PATCH_ATTEMPTS = 5


def _delete_options(uid: str | None) -> dict[str, Any]:
    """Background propagation; with a uid, only the object that has it is deleted (else 409)."""
    options: dict[str, Any] = {"propagationPolicy": "Background"}
    if uid:
        options["preconditions"] = {"uid": uid}
    return options


class KubeCluster:
    """:class:`~catalogsync.operator.cluster.Cluster` on kubernetes-asyncio."""

    def __init__(self) -> None:
        self._client: Any = None

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

    async def delete_run(self, namespace: str, name: str, uid: str) -> bool:
        custom, _, _ = self._apis
        try:
            await custom.delete_namespaced_custom_object(
                GROUP,
                VERSION,
                namespace,
                PLURAL,
                name,
                body=_delete_options(uid),
            )
        except Exception as exc:
            if _status_code(exc) in (404, 409):  # gone, or the name is another run's now
                return False
            raise
        return True

    async def patch_run_status(
        self, namespace: str, name: str, patch: Mapping[str, Any], uid: str
    ) -> bool:
        """A merge patch with the resourceVersion of a read that showed ``uid`` as precondition.

        The status subresource ignores ``metadata`` in a patch, uid included, so the uid cannot
        guard the patch itself; a resourceVersion can (a run created again under the name has
        another one). A conflict (the jobs patch their progress meanwhile) reads again.
        """
        custom, _, _ = self._apis
        for _ in range(STATUS_PATCH_ATTEMPTS):
            body = await self.get_run(namespace, name)
            if body is None or body["metadata"].get("uid") != uid:
                return False
            version = body["metadata"]["resourceVersion"]
            try:
                await custom.patch_namespaced_custom_object_status(
                    GROUP,
                    VERSION,
                    namespace,
                    PLURAL,
                    name,
                    {"metadata": {"resourceVersion": version}, "status": dict(patch)},
                    _content_type=MERGE_PATCH,
                )
            except Exception as exc:
                status = _status_code(exc)
                if status == 404:
                    return False
                if status == 409:
                    continue
                raise
            return True
        raise RuntimeError(
            f"the status of {namespace}/{name} kept changing; "
            f"{STATUS_PATCH_ATTEMPTS} patches met a conflict"
        )

    async def list_jobs(self, namespace: str, label_selector: str) -> list[dict[str, Any]]:
        _, batch, _ = self._apis
        jobs = await self._raw(
            batch.list_namespaced_job(
                namespace, label_selector=label_selector, _preload_content=False
            )
        )
        items: list[dict[str, Any]] = jobs.get("items") or []
        return items

    async def read_job(self, namespace: str, name: str) -> dict[str, Any]:
        _, batch, _ = self._apis
        job: dict[str, Any] = await self._raw(
            batch.read_namespaced_job(name, namespace, _preload_content=False)
        )
        return job

    async def create_job(self, namespace: str, manifest: Mapping[str, Any]) -> bool:
        _, batch, _ = self._apis
        try:
            await batch.create_namespaced_job(namespace, manifest)
        except Exception as exc:
            status = _status_code(exc)
            if status in REJECTED:
                raise JobRejected(status_message(exc)) from None
            if status != 409:
                raise
            return False
        return True

    async def delete_job(self, namespace: str, name: str, uid: str | None) -> None:
        _, batch, _ = self._apis
        try:
            await batch.delete_namespaced_job(name, namespace, body=_delete_options(uid))
            log.info("deleted Job %s/%s", namespace, name)
        except Exception as exc:
            if _status_code(exc) not in (404, 409):  # gone, or another Job has the name now
                raise

    async def list_pods(self, namespace: str, label_selector: str) -> list[dict[str, Any]]:
        _, _, core = self._apis
        pods = await self._raw(
            core.list_namespaced_pod(
                namespace, label_selector=label_selector, _preload_content=False
            )
        )
        items: list[dict[str, Any]] = pods.get("items") or []
        return items

    async def list_events(self, namespace: str, field_selector: str) -> list[dict[str, Any]]:
        _, _, core = self._apis
        events = await self._raw(
            core.list_namespaced_event(
                namespace, field_selector=field_selector, _preload_content=False
            )
        )
        items: list[dict[str, Any]] = events.get("items") or []
        return items

    async def create_event(self, namespace: str, event: Mapping[str, Any]) -> None:
        _, _, core = self._apis
        await core.create_namespaced_event(namespace, event)

    async def read_secret_data(self, namespace: str, name: str) -> dict[str, Any] | None:
        _, _, core = self._apis
        try:
            secret = await self._raw(
                core.read_namespaced_secret(name, namespace, _preload_content=False)
            )
        except Exception as exc:
            if _status_code(exc) == 404:
                return None
            raise
        data: dict[str, Any] = secret.get("data") or {}
        return data


class Runtime(Reconciler):
    """The reconcile loop on the API server; one per operator process."""

    def __init__(
        self,
        settings: OperatorSettings,
        *,
        finished_hooks: Sequence[FinishedHook] = (),
        clock: Callable[[], dt.datetime] = utcnow,
        metrics: OperatorMetrics | None = None,
    ) -> None:
        self.kube = KubeCluster()
        super().__init__(
            self.kube, settings, finished_hooks=finished_hooks, clock=clock, metrics=metrics
        )

    async def open(self) -> None:
        await self.kube.open()

    async def close(self) -> None:
        await self.kube.close()
