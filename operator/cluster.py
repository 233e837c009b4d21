"""What the reconciler asks of Kubernetes, as a protocol: a dozen calls, plain dicts in and out.

The reconcile loop (:mod:`catalogsync.operator.reconciler`) talks to a :class:`Cluster` only, so
its orchestration runs as well against an in-memory cluster in a unit test as against the API
server (:class:`catalogsync.operator.runtime.KubeCluster`). Objects are the API's JSON (camelCase
keys), exactly what the pure :func:`~catalogsync.operator.decide.decide` reads. The answers a
caller acts on are part of the contract, so every implementation gives the same ones: an absent
object is ``None`` (or a no-op for deletes and patches), a name already taken is ``False``, a Job
the API server refuses is :class:`JobRejected`; anything else is raised as it comes.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Protocol


class JobRejected(Exception):
    """The API server refused to create a Job; the message is its reason, for the run's status."""


class Cluster(Protocol):
    """The Kubernetes API as the reconciler uses it."""

    async def get_run(self, namespace: str, name: str) -> dict[str, Any] | None:
        """The CatalogSync, or None if it does not exist."""
        ...

    async def list_runs(self, namespace: str | None) -> list[dict[str, Any]]:
        """The CatalogSyncs of ``namespace`` (None: of every namespace)."""
        ...

    async def delete_run(self, namespace: str, name: str) -> None:
        """Delete a CatalogSync with background propagation; gone already is fine."""
        ...

    async def patch_run_status(self, namespace: str, name: str, patch: Mapping[str, Any]) -> None:
        """Merge-patch ``status`` of a CatalogSync; gone already is fine."""
        ...

    async def list_jobs(self, namespace: str, label_selector: str) -> list[dict[str, Any]]: ...

    async def read_job(self, namespace: str, name: str) -> dict[str, Any]: ...

    async def create_job(self, namespace: str, manifest: Mapping[str, Any]) -> bool:
        """Create a Job: True if created, False if its name is taken (409).

        Raises :class:`JobRejected` with the API server's message when it refuses the Job itself
        (an answer the same request would get again).
        """
        ...

    async def delete_job(self, namespace: str, name: str) -> None:
        """Delete a Job with its Pods (background propagation); gone already is fine."""
        ...

    async def list_pods(self, namespace: str, label_selector: str) -> list[dict[str, Any]]: ...

    async def list_events(self, namespace: str, field_selector: str) -> list[dict[str, Any]]: ...

    async def create_event(self, namespace: str, event: Mapping[str, Any]) -> None: ...

    async def read_secret_data(self, namespace: str, name: str) -> dict[str, Any] | None:
        """A Secret's ``data`` (base64 values, ``{}`` if empty), or None if it does not exist."""
        ...
