"""What the reconciler asks of Kubernetes, as a protocol: a dozen calls, plain dicts in and out.

The reconcile loop (:mod:`catalogsync.operator.reconciler`) talks to a :class:`Cluster` only, so
its orchestration runs as well against an in-memory cluster in a unit test as against the API
server (:class:`catalogsync.operator.runtime.KubeCluster`). Objects are the API's JSON (camelCase
keys), exactly what the pure :func:`~catalogsync.operator.decide.decide` reads. The answers a
caller acts on are part of the contract, so every implementation gives the same ones: an absent
object is ``None`` (or a no-op for deletes and patches), a name already taken is ``False``, a Job
the API server refuses is :class:`JobRejected`; anything else is raised as it comes. Writes to an
object the reconciler decided about carry its uid, so a run deleted (or deleted and created again
under its name) between the read and the write is never written to.
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

    async def delete_run(self, namespace: str, name: str, uid: str) -> bool:
        """Delete the CatalogSync with this uid (background propagation).

        True if this call deleted it; False if it was gone already or the name now belongs to
        another object (the uid is a precondition of the delete).
        """
        ...

    async def patch_run_status(
        self, namespace: str, name: str, patch: Mapping[str, Any], uid: str
    ) -> bool:
        """Merge-patch ``status`` of the CatalogSync with this uid.

        False, with nothing written, if the run is gone or its name now belongs to another
        object: the decision behind the patch was made for a run that no longer exists.
        """
        ...

    async def list_jobs(self, namespace: str, label_selector: str) -> list[dict[str, Any]]: ...

    async def read_job(self, namespace: str, name: str) -> dict[str, Any]: ...

    async def create_job(self, namespace: str, manifest: Mapping[str, Any]) -> bool:
        """Create a Job: True if created, False if its name is taken (409).

        Raises :class:`JobRejected` with the API server's message when it refuses the Job itself
        (an answer the same request would get again).
        """
        ...

    async def delete_job(self, namespace: str, name: str, uid: str | None) -> None:
        """Delete the Job with this uid (None: whatever has the name) with its Pods (background
        propagation); gone already, or replaced by another Job of the name, is fine."""
        ...

    async def list_pods(self, namespace: str, label_selector: str) -> list[dict[str, Any]]: ...

    async def list_events(self, namespace: str, field_selector: str) -> list[dict[str, Any]]: ...

    async def create_event(self, namespace: str, event: Mapping[str, Any]) -> None: ...

    async def read_secret_data(self, namespace: str, name: str) -> dict[str, Any] | None:
        """A Secret's ``data`` (base64 values, ``{}`` if empty), or None if it does not exist."""
        ...
