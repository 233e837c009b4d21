"""Node objects the harness registers: labels, taints, capacity, a Ready status, the Lease."""

from __future__ import annotations

import datetime as dt
import os
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

from catalogsync.dev.kubelet.api import Obj, now

POD_IP = "127.0.0.1"


@dataclass
class NodeConfig:
    """A Node the harness registers; ``capacity``/``allocatable`` override the shorthand fields."""

    name: str
    cpu: str = "8"
    memory: str = "32Gi"
    pods: int = 110
    ephemeral_storage: str = "100Gi"
    labels: Mapping[str, str] = field(default_factory=dict)
    taints: Sequence[Mapping[str, str]] = ()
    capacity: Mapping[str, str] | None = None
    allocatable: Mapping[str, str] | None = None

    def resources(self) -> tuple[dict[str, str], dict[str, str]]:
        """(capacity, allocatable) as the Node status carries them."""
        capacity = dict(
            self.capacity
            or {
                "cpu": self.cpu,
                "memory": self.memory,
                "pods": str(self.pods),
                "ephemeral-storage": self.ephemeral_storage,
            }
        )
        return capacity, dict(self.allocatable or capacity)


def node_object(config: NodeConfig) -> Obj:
    labels = {
        "kubernetes.io/hostname": config.name,
        "kubernetes.io/os": "linux",
        "kubernetes.io/arch": "amd64" if os.uname().machine == "x86_64" else "arm64",
        **config.labels,
    }
    return {
        "apiVersion": "v1",
        "kind": "Node",
        "metadata": {"name": config.name, "labels": labels},
        "spec": {"taints": [dict(t) for t in config.taints]},
    }


def node_status(config: NodeConfig, kubelet_version: str, port: int) -> Obj:
    capacity, allocatable = config.resources()
    stamp = now()

    def condition(kind: str, status: str, reason: str, message: str) -> Obj:
        return {
            "type": kind,
            "status": status,
            "reason": reason,
            "message": message,
            "lastHeartbeatTime": stamp,
            "lastTransitionTime": stamp,
        }

    return {
        "capacity": capacity,
        "allocatable": allocatable,
        "phase": "Running",
        "conditions": [
            condition("MemoryPressure", "False", "KubeletHasSufficientMemory", "sufficient memory"),
            condition("DiskPressure", "False", "KubeletHasNoDiskPressure", "no disk pressure"),
            condition("PIDPressure", "False", "KubeletHasSufficientPID", "sufficient PID"),
            condition("Ready", "True", "KubeletReady", "process kubelet is posting ready status"),
        ],
        "addresses": [
            {"type": "InternalIP", "address": POD_IP},
            {"type": "Hostname", "address": config.name},
        ],
        "daemonEndpoints": {"kubeletEndpoint": {"Port": port}},
        "nodeInfo": {
            "machineID": uuid.uuid4().hex,
            "systemUUID": str(uuid.uuid4()),
            "bootID": str(uuid.uuid4()),
            "kernelVersion": os.uname().release,
            "osImage": "process kubelet",
            "containerRuntimeVersion": "process://0",
            "kubeletVersion": kubelet_version,
            "operatingSystem": "linux",
            "architecture": "amd64" if os.uname().machine == "x86_64" else "arm64",
        },
    }


def lease_object(name: str, node_uid: str) -> Obj:
    """The node's heartbeat Lease, owned by the Node so it goes away with it."""
    return {
        "apiVersion": "coordination.k8s.io/v1",
        "kind": "Lease",
        "metadata": {
            "name": name,
            "ownerReferences": [
                {
                    "apiVersion": "v1",
                    "kind": "Node",
                    "name": name,
                    "uid": node_uid,
                }
            ],
        },
        "spec": {
            "holderIdentity": name,
            "leaseDurationSeconds": 40,
            "renewTime": dt.datetime.now(dt.UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ"),
        },
    }
