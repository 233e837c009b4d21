"""Pod status as a kubelet reports it, built from what the harness knows about the containers."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from catalogsync.dev.kubelet.api import Obj, now
from catalogsync.dev.kubelet.containers import OOM_EXIT_CODE, ContainerRun
from catalogsync.dev.kubelet.nodes import POD_IP


def condition(
    previous: Obj | None,
    kind: str,
    status: str,
    reason: str | None = None,
    message: str | None = None,
) -> Obj:
    """A pod condition; ``lastTransitionTime`` moves only when the status changes."""
    transition = (
        previous["lastTransitionTime"] if previous and previous["status"] == status else now()
    )
    return {
        "type": kind,
        "status": status,
        "reason": reason,
        "message": message,
        "lastProbeTime": None,
        "lastTransitionTime": transition,
    }


def readiness_conditions(
    previous: Mapping[str, Obj],
    init_runs: Sequence[ContainerRun],
    runs: Sequence[ContainerRun],
    phase: str,
) -> dict[str, Obj]:
    """The pod's conditions by type, updated for the containers' states and the ``phase``."""
    conditions = dict(previous)

    def set_condition(
        kind: str, status: str, reason: str | None = None, message: str | None = None
    ) -> None:
        conditions[kind] = condition(conditions.get(kind), kind, status, reason, message)

    unready = [r.name for r in runs if not (r.ready and "running" in r.state)]
    set_condition(
        "PodReadyToStartContainers", "False" if phase in ("Succeeded", "Failed") else "True"
    )
    inits_done = all((r.terminated or {}).get("exitCode") == 0 for r in init_runs)
    if inits_done:
        set_condition("Initialized", "True")
    else:
        waiting = [r.name for r in init_runs if (r.terminated or {}).get("exitCode") != 0]
        set_condition(
            "Initialized",
            "False",
            "ContainersNotInitialized",
            f"containers with incomplete status: [{' '.join(waiting)}]",
        )
    if phase in ("Succeeded", "Failed"):
        for kind in ("Ready", "ContainersReady"):
            set_condition(kind, "False", "PodCompleted")
    elif unready:
        message = f"containers with unready status: [{' '.join(unready)}]"
        for kind in ("Ready", "ContainersReady"):
            set_condition(kind, "False", "ContainersNotReady", message)
    else:
        for kind in ("Ready", "ContainersReady"):
            set_condition(kind, "True")
    return conditions


def pod_status(
    phase: str,
    reason: str | None,
    message: str | None,
    *,
    start_time: str,
    conditions: Mapping[str, Obj],
    init_runs: Sequence[ContainerRun],
    runs: Sequence[ContainerRun],
) -> Obj:
    """The whole kubelet-owned part of the pod's status."""
    status: Obj = {
        "phase": phase,
        "reason": reason,
        "message": message,
        "hostIP": POD_IP,
        "hostIPs": [{"ip": POD_IP}],
        "podIP": POD_IP,
        "podIPs": [{"ip": POD_IP}],
        "startTime": start_time,
        "conditions": list(conditions.values()),
        "containerStatuses": [r.status() for r in runs],
    }
    if init_runs:
        status["initContainerStatuses"] = [r.status() for r in init_runs]
    return status


def never_started() -> Obj:
    """The state the kubelet reports for a container the pod's termination caught unstarted."""
    return {
        "terminated": {
            "exitCode": OOM_EXIT_CODE,
            "reason": "ContainerStatusUnknown",
            "message": "The container could not be located when the pod was terminated",
            "startedAt": None,
            "finishedAt": now(),
        }
    }
