"""Kubernetes objects as the API returns them, for the operator's pure tests."""

from __future__ import annotations

import datetime as dt
from typing import Any

import orjson

from catalogsync.operator.settings import OperatorSettings

NOW = dt.datetime(2026, 5, 1, 12, 0, 0, tzinfo=dt.UTC)
CR_UID = "cr-uid-1"
STORAGE_URL = "https://ref.supabase.co"


def settings(**overrides: Any) -> OperatorSettings:
    values: dict[str, Any] = {
        "CATALOGSYNC_STORAGE_URL": STORAGE_URL,
        "CATALOGSYNC_NAMESPACES": "",
    }
    values.update(overrides)
    return OperatorSettings(**values)


def cr(
    name: str = "run-1",
    *,
    spec: dict[str, Any] | None = None,
    status: dict[str, Any] | None = None,
    uid: str = CR_UID,
    generation: int = 1,
    created: str = "2026-05-01T11:00:00Z",
    namespace: str = "ns",
) -> dict[str, Any]:
    body: dict[str, Any] = {
        "apiVersion": "catalogsync.io/v1alpha1",
        "kind": "CatalogSync",
        "metadata": {
            "name": name,
            "namespace": namespace,
            "uid": uid,
            "generation": generation,
            "creationTimestamp": created,
        },
        "spec": {"catalog": "medipim-au", "mode": "Full", "cancel": False, **(spec or {})},
    }
    if status is not None:
        body["status"] = status
    return body


def job(
    name: str,
    *,
    owner: str = CR_UID,
    conditions: list[tuple[str, str]] = (),  # type: ignore[assignment]
    start: str = "2026-05-01T11:58:00Z",
    active: int = 1,
    failed: int = 0,
    succeeded: int = 0,
    message: str = "",
) -> dict[str, Any]:
    return {
        "metadata": {
            "name": name,
            "namespace": "ns",
            "uid": f"{name}-uid",
            "ownerReferences": [{"uid": owner, "kind": "CatalogSync", "name": "run-1"}],
        },
        "status": {
            "startTime": start,
            "active": active,
            "failed": failed,
            "succeeded": succeeded,
            "conditions": [
                {"type": t, "status": "True", "reason": reason, "message": message}
                for t, reason in conditions
            ],
        },
    }


def pod(
    name: str,
    container: str,
    *,
    phase: str = "Running",
    exit_code: int | None = None,
    reason: str | None = None,
    message: str | dict[str, Any] | None = None,
    finished: str = "2026-05-01T11:59:00Z",
    memory_limit: str | None = None,
    created: str = "2026-05-01T11:58:00Z",
) -> dict[str, Any]:
    state: dict[str, Any] = {"running": {"startedAt": created}}
    if exit_code is not None:
        terminated: dict[str, Any] = {
            "exitCode": exit_code,
            "reason": reason or ("Completed" if exit_code == 0 else "Error"),
            "finishedAt": finished,
        }
        if message is not None:
            terminated["message"] = (
                message if isinstance(message, str) else orjson.dumps(message).decode()
            )
        state = {"terminated": terminated}
    resources = {"limits": {"memory": memory_limit}} if memory_limit else {}
    return {
        "metadata": {"name": name, "namespace": "ns", "creationTimestamp": created},
        "spec": {"containers": [{"name": container, "resources": resources}]},
        "status": {
            "phase": phase,
            "containerStatuses": [{"name": container, "state": state}],
        },
    }


def failed_create(
    job_name: str,
    message: str,
    *,
    first: str = "2026-05-01T11:58:00Z",
    last: str = "2026-05-01T11:59:30Z",
    count: int = 5,
) -> dict[str, Any]:
    """A ``FailedCreate`` Warning the Job controller records when the API server refuses a pod."""
    return {
        "metadata": {"name": f"{job_name}.17a", "namespace": "ns", "creationTimestamp": first},
        "involvedObject": {"kind": "Job", "name": job_name, "uid": f"{job_name}-uid"},
        "reason": "FailedCreate",
        "type": "Warning",
        "message": message,
        "firstTimestamp": first,
        "lastTimestamp": last,
        "count": count,
        "source": {"component": "job-controller"},
    }
