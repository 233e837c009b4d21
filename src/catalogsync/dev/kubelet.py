"""The process kubelet: Nodes whose Pods run as local processes, for tests with a real API server.

The harness registers Node objects (capacity, allocatable, labels and taints chosen by the test),
watches the Pods the real scheduler binds to them, and runs each container's command as a local
subprocess. It writes pod status the way a kubelet does, so the real Job, CronJob and garbage
collector controllers see the lifecycle they expect: Pending (``ContainerCreating``) → Running
(``startTime``, Ready conditions, ``state.running``) → Succeeded / Failed (``state.terminated`` with
``exitCode``, ``reason`` Completed / Error / OOMKilled, the termination message, ``startedAt`` and
``finishedAt``).

Images. There are no containers. A container whose image repository's last path component is one
of ``project_images`` (default ``catalogsync``, so ``catalogsync``, ``ghcr.io/x/catalogsync:1.2``)
runs locally; the image's entrypoint is the ``catalogsync`` console script, so ``args`` alone run
``catalogsync <args>``. With ``command`` the command runs as given; a bare or absolute program name
is looked up in the virtualenv's ``bin`` first (``catalogsync``, ``python``, ``sh``), ``python`` and
``python3`` are this interpreter. Any other image is refused: the container waits with reason
``ErrImagePull`` and a message naming the rule, and the pod stays Pending like on a real node that
cannot pull.

Environment. ``env`` and ``envFrom`` are resolved like the kubelet does: values with ``$(VAR)``
expansion, ``secretKeyRef`` / ``configMapKeyRef`` (``optional`` honoured; a missing object or key
keeps the container waiting with ``CreateContainerConfigError`` and is retried), ``fieldRef``
(``metadata.name|namespace|uid``, ``metadata.labels['k']``, ``metadata.annotations['k']``,
``spec.nodeName``, ``spec.serviceAccountName``, ``status.podIP``, ``status.hostIP``) and
``resourceFieldRef`` (unset limits default to the Node's allocatable). The process also gets
``PATH`` (virtualenv first), and ``HOME``, ``TMPDIR``, ``HOSTNAME`` for the pod's directory.

Credentials. Unless automounting is disabled (pod or ServiceAccount), the harness mints a token for
the pod's ServiceAccount through TokenRequest (bound to the pod), writes a kubeconfig for it and
sets ``KUBECONFIG``; the project's code prefers ``KUBECONFIG`` over in-cluster configuration.

Termination messages. A process cannot write the container's ``terminationMessagePath`` (usually
``/dev/termination-log``), so each container gets ``CATALOGSYNC_TERMINATION_MESSAGE_PATH`` set to a
file in the pod's directory; the project's code writes its summary there when the variable is set.
After exit the file is read (at most 4096 bytes) into ``state.terminated.message``;
``FallbackToLogsOnError`` uses the log tail when the file is empty and the exit code is non-zero.

Deletion. When a pod gets a ``deletionTimestamp`` (the Job controller removing surplus pods, an
``activeDeadlineSeconds`` or ``FailJob`` outcome, a namespace going away) its processes get SIGTERM,
then SIGKILL after the grace period; the pod is reported terminal (Failed unless every container
exited 0) and then deleted with grace 0. Finalizers such as ``batch.kubernetes.io/job-tracking``
are never touched: the Job controller removes its own. A pod's own ``activeDeadlineSeconds`` stops
it the same way (without the deletion), with reason ``DeadlineExceeded``.

Not emulated: container isolation, cgroups and real memory limits (``oom_kill`` simulates an OOM
kill), networking (every pod's IP is 127.0.0.1), volumes (``emptyDir`` volumes become directories;
one mounted at ``/tmp`` becomes ``TMPDIR``; mount paths are not honoured), probes (containers are
Ready once started), sidecar semantics of restartable init containers (they run like ordinary init
containers), image pull policies, ``kubectl exec`` / ``logs`` through the API (use ``logs``), node
heartbeats (the node-lifecycle controller is off), and the kubelet's 10 s crash-loop back-off
(``restart_backoff`` is shorter by default).
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import datetime as dt
import json
import math
import os
import re
import shutil
import signal
import ssl
import sys
import tempfile
import threading
import uuid
from collections.abc import AsyncIterator, Callable, Coroutine, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import httpx
from aiohttp import web

from catalogsync.dev.controlplane import ClusterAccess, write_kubeconfig
from catalogsync.dev.processes import die_with_parent

Obj = dict[str, Any]
T = TypeVar("T")

TERMINATION_ENV = "CATALOGSYNC_TERMINATION_MESSAGE_PATH"
TERMINATION_MESSAGE_LIMIT = 4096
FALLBACK_LOG_LINES = 80
FALLBACK_LOG_BYTES = 2048
OOM_EXIT_CODE = 137
POD_IP = "127.0.0.1"
NOT_READY_TAINT = "node.kubernetes.io/not-ready"
SMP = "application/strategic-merge-patch+json"
MERGE = "application/merge-patch+json"


def now() -> str:
    """RFC 3339 timestamp with second precision, as the API stores them."""
    return dt.datetime.now(dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


# --------------------------------------------------------------------------------------------
# API access


class ApiError(RuntimeError):
    """A non-2xx answer from the apiserver."""

    def __init__(self, status: int, body: str) -> None:
        super().__init__(f"HTTP {status}: {body[:500]}")
        self.status = status


class Api:
    """The few REST calls a kubelet makes, over one HTTP/1.1 connection pool."""

    def __init__(self, access: ClusterAccess) -> None:
        self.access = access
        self.client = httpx.AsyncClient(
            base_url=access.server,
            verify=access.ssl_context(),
            timeout=httpx.Timeout(30.0),
            limits=httpx.Limits(max_connections=50),
        )

    async def close(self) -> None:
        await self.client.aclose()

    async def request(
        self,
        method: str,
        path: str,
        body: Any = None,
        content_type: str = "application/json",
        params: Mapping[str, str] | None = None,
    ) -> Obj:
        content = None if body is None else json.dumps(body).encode()
        headers = {"Content-Type": content_type} if content is not None else {}
        response = await self.client.request(
            method, path, content=content, headers=headers, params=params
        )
        if response.status_code >= 300:
            raise ApiError(response.status_code, response.text)
        result: Obj = response.json() if response.content else {}
        return result

    async def get(self, path: str, params: Mapping[str, str] | None = None) -> Obj:
        return await self.request("GET", path, params=params)

    async def get_optional(self, path: str) -> Obj | None:
        """The object, or None on 404."""
        try:
            return await self.get(path)
        except ApiError as exc:
            if exc.status == 404:
                return None
            raise

    async def watch(self, path: str, resource_version: str) -> AsyncIterator[Obj]:
        """Events of one watch request, until the server closes it."""
        params = {
            "watch": "true",
            "resourceVersion": resource_version,
            "allowWatchBookmarks": "true",
            "timeoutSeconds": "240",
        }
        async with self.client.stream(
            "GET", path, params=params, timeout=httpx.Timeout(30.0, read=300.0)
        ) as response:
            if response.status_code >= 300:
                raise ApiError(response.status_code, (await response.aread()).decode())
            async for line in response.aiter_lines():
                if line.strip():
                    yield json.loads(line)


# --------------------------------------------------------------------------------------------
# Nodes


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


# --------------------------------------------------------------------------------------------
# Quantities and $(VAR) expansion


_SUFFIXES = {
    "Ki": 2**10,
    "Mi": 2**20,
    "Gi": 2**30,
    "Ti": 2**40,
    "Pi": 2**50,
    "Ei": 2**60,
    "n": 1e-9,
    "u": 1e-6,
    "m": 1e-3,
    "": 1,
    "k": 1e3,
    "M": 1e6,
    "G": 1e9,
    "T": 1e12,
    "P": 1e15,
    "E": 1e18,
}
_QUANTITY = re.compile(r"^([+-]?[0-9.]+(?:[eE][+-]?[0-9]+)?)([a-zA-Z]*)$")


def parse_quantity(value: str | int | float) -> float:
    """A resource quantity (``500m``, ``8Gi``, ``1e3``) as a number of base units."""
    match = _QUANTITY.match(str(value).strip())
    if not match or match.group(2) not in _SUFFIXES:
        raise ValueError(f"invalid quantity {value!r}")
    return float(match.group(1)) * _SUFFIXES[match.group(2)]


def expand(text: str, variables: Mapping[str, str]) -> str:
    """Kubernetes ``$(VAR)`` expansion: ``$$`` escapes, unknown references stay as written."""
    out: list[str] = []
    i = 0
    while i < len(text):
        char = text[i]
        if char == "$" and i + 1 < len(text):
            nxt = text[i + 1]
            if nxt == "$":
                out.append("$")
                i += 2
                continue
            if nxt == "(":
                end = text.find(")", i + 2)
                if end != -1:
                    name = text[i + 2 : end]
                    out.append(variables.get(name, text[i : end + 1]))
                    i = end + 1
                    continue
        out.append(char)
        i += 1
    return "".join(out)


# --------------------------------------------------------------------------------------------
# Pod preparation


class ContainerConfigError(Exception):
    """The container cannot be created yet (kubelet reason ``CreateContainerConfigError``)."""


class ImageRefused(Exception):
    """The image is not the project's; the process kubelet cannot run it."""


def image_repository(image: str) -> str:
    """``registry/path/name`` of an image reference, without tag or digest."""
    name = image.split("@", 1)[0]
    last_slash = name.rfind("/")
    colon = name.rfind(":")
    return name[:colon] if colon > last_slash else name


@dataclass(frozen=True)
class ImageRule:
    """Which images map to local commands, and how programs are found."""

    project_images: Sequence[str] = ("catalogsync",)
    entrypoint: str = "catalogsync"
    bin_dir: Path = Path(sys.executable).parent

    @property
    def search_path(self) -> str:
        return os.pathsep.join([str(self.bin_dir), os.environ.get("PATH", os.defpath)])

    def accepts(self, image: str) -> bool:
        return image_repository(image).rsplit("/", 1)[-1] in self.project_images

    def argv(self, container: Obj, variables: Mapping[str, str]) -> list[str]:
        """The process's argv: the image entrypoint unless ``command`` replaces it."""
        image = container.get("image", "")
        if not self.accepts(image):
            raise ImageRefused(
                f'image "{image}" cannot be run by the process kubelet: only images whose '
                f"repository ends with {' or '.join(self.project_images)} map to local commands"
            )
        command = [expand(c, variables) for c in container.get("command") or []]
        args = [expand(a, variables) for a in container.get("args") or []]
        argv = (command or [self.entrypoint]) + args
        return [self.program(argv[0]), *argv[1:]]

    def program(self, name: str) -> str:
        """An executable for ``name``; absolute image paths fall back to their basename."""
        base = os.path.basename(name)
        if base in ("python", "python3"):
            return sys.executable
        if "/" in name and os.access(name, os.X_OK):
            return name
        return shutil.which(base, path=self.search_path) or name


# --------------------------------------------------------------------------------------------
# Pod workers


@dataclass
class ContainerRun:
    """What the harness knows about one container of a pod."""

    spec: Obj
    init: bool = False
    restart_count: int = 0
    state: Obj = field(default_factory=lambda: {"waiting": {"reason": "ContainerCreating"}})
    last_state: Obj = field(default_factory=dict)
    process: asyncio.subprocess.Process | None = None
    oom_killed: bool = False
    ready: bool = False

    @property
    def name(self) -> str:
        return str(self.spec["name"])

    def status(self) -> Obj:
        running = "running" in self.state
        state = {"waiting": None, "running": None, "terminated": None, **self.state}
        image = self.spec.get("image", "")
        result: Obj = {
            "name": self.name,
            "image": image,
            "imageID": image if not self.state.get("waiting") else "",
            "ready": self.ready and running,
            "restartCount": self.restart_count,
            "started": running,
            "state": state,
            "lastState": self.last_state or {},
        }
        if self.process is not None:
            result["containerID"] = f"process://{self.process.pid}"
        return result

    @property
    def terminated(self) -> Obj | None:
        value = self.state.get("terminated")
        return value if isinstance(value, dict) else None


class PodWorker:
    """Runs one pod from acceptance to its terminal status and final deletion."""

    def __init__(self, kubelet: ProcessKubelet, pod: Obj) -> None:
        self.kubelet = kubelet
        self.pod = pod
        meta = pod["metadata"]
        self.uid: str = meta["uid"]
        self.namespace: str = meta["namespace"]
        self.name: str = meta["name"]
        self.node: str = pod["spec"]["nodeName"]
        self.directory = kubelet.pods_dir / f"{self.namespace}_{self.name}_{self.uid[:8]}"
        self.directory.mkdir(parents=True, exist_ok=True)
        self.deleting = asyncio.Event()
        """The pod has a deletionTimestamp."""
        self.stopping = asyncio.Event()
        """Processes must stop: deletion, or the pod's activeDeadlineSeconds ran out."""
        self.deadline_exceeded = False
        self.silent = False
        self.finished = False
        self.final_delete_sent = False
        self.conditions: dict[str, Obj] = {}
        self.start_time = now()
        spec = pod["spec"]
        self.init_runs = [ContainerRun(c, init=True) for c in spec.get("initContainers") or []]
        self.runs = [ContainerRun(c) for c in spec.get("containers") or []]
        self.task: asyncio.Task[None] | None = None
        self.update(pod)

    @property
    def path(self) -> str:
        return f"/api/v1/namespaces/{self.namespace}/pods/{self.name}"

    @property
    def restart_policy(self) -> str:
        return str(self.pod["spec"].get("restartPolicy", "Always"))

    def log_file(self, container: str) -> Path:
        return self.directory / f"{container}.log"

    def update(self, pod: Obj) -> None:
        """A newer version of the pod from the watch; deletion starts the shutdown."""
        self.pod = pod
        if pod["metadata"].get("deletionTimestamp"):
            self.deleting.set()
            self.stopping.set()

    # -- status ------------------------------------------------------------------------------

    def _condition(
        self, kind: str, status: str, reason: str | None = None, message: str | None = None
    ) -> None:
        old = self.conditions.get(kind)
        transition = old["lastTransitionTime"] if old and old["status"] == status else now()
        self.conditions[kind] = {
            "type": kind,
            "status": status,
            "reason": reason,
            "message": message,
            "lastProbeTime": None,
            "lastTransitionTime": transition,
        }

    def _readiness_conditions(self, phase: str) -> None:
        containers = self.runs
        unready = [r.name for r in containers if not (r.ready and "running" in r.state)]
        self._condition(
            "PodReadyToStartContainers", "False" if phase in ("Succeeded", "Failed") else "True"
        )
        inits_done = all((r.terminated or {}).get("exitCode") == 0 for r in self.init_runs)
        if inits_done:
            self._condition("Initialized", "True")
        else:
            waiting = [r.name for r in self.init_runs if (r.terminated or {}).get("exitCode") != 0]
            self._condition(
                "Initialized",
                "False",
                "ContainersNotInitialized",
                f"containers with incomplete status: [{' '.join(waiting)}]",
            )
        if phase in ("Succeeded", "Failed"):
            for kind in ("Ready", "ContainersReady"):
                self._condition(kind, "False", "PodCompleted")
        elif unready:
            message = f"containers with unready status: [{' '.join(unready)}]"
            for kind in ("Ready", "ContainersReady"):
                self._condition(kind, "False", "ContainersNotReady", message)
        else:
            for kind in ("Ready", "ContainersReady"):
                self._condition(kind, "True")

    async def report(
        self, phase: str, reason: str | None = None, message: str | None = None
    ) -> None:
        """Write the whole kubelet-owned part of the status (strategic merge on /status)."""
        if self.silent:
            return
        self._readiness_conditions(phase)
        status: Obj = {
            "phase": phase,
            "reason": reason,
            "message": message,
            "hostIP": POD_IP,
            "hostIPs": [{"ip": POD_IP}],
            "podIP": POD_IP,
            "podIPs": [{"ip": POD_IP}],
            "startTime": self.start_time,
            "conditions": list(self.conditions.values()),
            "containerStatuses": [r.status() for r in self.runs],
        }
        if self.init_runs:
            status["initContainerStatuses"] = [r.status() for r in self.init_runs]
        try:
            await self.kubelet.api.request("PATCH", f"{self.path}/status", {"status": status}, SMP)
        except ApiError as exc:
            if exc.status != 404:
                raise
            self.silent = True  # the pod is gone; nobody reads its status any more

    # -- lifecycle ---------------------------------------------------------------------------

    async def run(self) -> None:
        """Accept, prepare, run containers, report the outcome, finish a pending deletion."""
        try:
            if await self._admit():
                await self._run_admitted()
        except asyncio.CancelledError:
            await self.kill_all()
            raise
        except Exception as exc:  # recorded for the test to see, not lost in a dead task
            self.kubelet.errors.append(f"{self.namespace}/{self.name}: {exc!r}")
            await self.kill_all()
            return
        finally:
            self.finished = True
        await self.finish_deletion()

    async def _admit(self) -> bool:
        """Kubelet admission: refuse the pod when the Node's ``pods`` allocatable is used up."""
        capacity = self.kubelet.node_pod_capacity(self.node)
        used = self.kubelet.active_pods(self.node, exclude=self.uid)
        if capacity is not None and used >= capacity:
            for run in self.runs:
                run.state = {"waiting": {"reason": "ContainerCreating"}}
            await self.report(
                "Failed",
                "OutOfpods",
                f"Pod was rejected: Node didn't have enough resource: pods, requested: 1, "
                f"used: {used}, capacity: {capacity}",
            )
            return False
        await self.report("Pending")
        return True

    async def _run_admitted(self) -> None:
        deadline = self.pod["spec"].get("activeDeadlineSeconds")
        if deadline is not None:
            timer = asyncio.get_running_loop().call_later(float(deadline), self._deadline)
        try:
            await self._run_containers()
        finally:
            if deadline is not None:
                timer.cancel()

    def _deadline(self) -> None:
        self.deadline_exceeded = True
        self.stopping.set()

    def _terminal_reason(self) -> tuple[str | None, str | None]:
        if self.deadline_exceeded:
            return (
                "DeadlineExceeded",
                "Pod was active on the node longer than the specified deadline",
            )
        return None, None

    async def _run_containers(self) -> None:
        prepared = await self._prepare_all()
        if prepared is None:
            await self._report_killed_before_start()
            return
        for run in self.init_runs:
            ok = await self._run_container(run, prepared[run.name])
            if not ok:
                await self._report_final()
                return
        await asyncio.gather(*(self._run_container(r, prepared[r.name]) for r in self.runs))
        await self._report_final()

    async def _prepare_all(self) -> dict[str, tuple[list[str], dict[str, str]]] | None:
        """argv and environment of every container; None if the pod is deleted meanwhile."""
        while not self.stopping.is_set():
            try:
                credentials = await self.kubelet.credentials(self)
                result = {}
                for run in [*self.init_runs, *self.runs]:
                    env = await self.kubelet.environment(self, run.spec, credentials)
                    argv = self.kubelet.images.argv(run.spec, env)
                    result[run.name] = (argv, env)
                return result
            except ImageRefused as exc:
                await self._waiting("ErrImagePull", str(exc))
            except ContainerConfigError as exc:
                await self._waiting("CreateContainerConfigError", str(exc))
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.stopping.wait(), self.kubelet.retry_interval)
        return None

    async def _waiting(self, reason: str, message: str) -> None:
        changed = False
        for run in [*self.init_runs, *self.runs]:
            state = {"waiting": {"reason": reason, "message": message}}
            changed |= run.state != state
            run.state = state
        if changed:
            await self.report("Pending")

    async def _report_killed_before_start(self) -> None:
        """Deleted while waiting: the kubelet marks never-started containers as unknown."""
        for run in [*self.init_runs, *self.runs]:
            if run.terminated is None:
                run.state = _never_started()
        await self.report("Failed", *self._terminal_reason())

    def _should_restart(self, run: ContainerRun, exit_code: int) -> bool:
        if self.stopping.is_set():
            return False
        policy = self.restart_policy
        if run.init:  # init containers are retried on failure only, under Always too
            return policy != "Never" and exit_code != 0
        return policy == "Always" or (policy == "OnFailure" and exit_code != 0)

    async def _run_container(
        self, run: ContainerRun, prepared: tuple[list[str], dict[str, str]]
    ) -> bool:
        """Run (and restart per policy) one container; True when it ended with exit code 0."""
        argv, env = prepared
        backoff = self.kubelet.restart_backoff
        while True:
            exit_code = await self._run_once(run, argv, env)
            if not self._should_restart(run, exit_code):
                return exit_code == 0
            run.last_state = {"terminated": run.state["terminated"]}
            run.restart_count += 1
            run.state = {
                "waiting": {
                    "reason": "CrashLoopBackOff",
                    "message": f"back-off {backoff:g}s restarting failed container={run.name} "
                    f"pod={self.name}_{self.namespace}({self.uid})",
                }
            }
            await self.report("Running" if not run.init else "Pending")
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.stopping.wait(), backoff)
            backoff = min(backoff * 2, 300.0)

    async def _run_once(self, run: ContainerRun, argv: list[str], env: dict[str, str]) -> int:
        if self.stopping.is_set():
            run.state = _never_started()
            return OOM_EXIT_CODE
        termination_file = self.directory / f"{run.name}.termination-log"
        termination_file.write_bytes(b"")
        env = {**env, TERMINATION_ENV: str(termination_file)}
        started = now()
        try:
            with self.log_file(run.name).open("ab") as log:
                run.process = await asyncio.create_subprocess_exec(
                    *argv,
                    env=env,
                    cwd=self._working_dir(run.spec),
                    stdin=asyncio.subprocess.DEVNULL,
                    stdout=log,
                    stderr=asyncio.subprocess.STDOUT,
                    start_new_session=True,
                    preexec_fn=die_with_parent(),
                )
        except OSError as exc:
            run.state = {
                "terminated": {
                    "exitCode": 128,
                    "reason": "StartError",
                    "message": f"exec: {argv[0]}: {exc}",
                    "startedAt": started,
                    "finishedAt": now(),
                }
            }
            return 128
        run.oom_killed = False
        run.ready = True
        run.state = {"running": {"startedAt": started}}
        await self.report("Pending" if run.init else "Running")
        exit_code = await self._wait_process(run.process)
        run.ready = False
        run.state = {"terminated": self._terminated(run, exit_code, started, termination_file)}
        return exit_code

    def _working_dir(self, container: Obj) -> str:
        wanted = container.get("workingDir")
        if wanted and os.path.isdir(wanted):
            return str(wanted)
        return str(self.directory)

    async def _wait_process(self, process: asyncio.subprocess.Process) -> int:
        """The exit code (128+signal when killed); deletion turns into SIGTERM, then SIGKILL."""
        waiter = asyncio.ensure_future(process.wait())
        deleted = asyncio.ensure_future(self.stopping.wait())
        try:
            await asyncio.wait({waiter, deleted}, return_when=asyncio.FIRST_COMPLETED)
        except asyncio.CancelledError:
            waiter.cancel()
            raise
        finally:
            deleted.cancel()
        if not waiter.done():
            _killpg(process.pid, signal.SIGTERM)
            try:
                await asyncio.wait_for(asyncio.shield(waiter), self._grace_period())
            except TimeoutError:
                _killpg(process.pid, signal.SIGKILL)
        code = await waiter
        _killpg(process.pid, signal.SIGKILL)  # leftovers of the process group
        return code if code >= 0 else 128 - code

    def _grace_period(self) -> float:
        meta = self.pod["metadata"]
        grace = meta.get("deletionGracePeriodSeconds")
        if grace is None:
            grace = self.pod["spec"].get("terminationGracePeriodSeconds", 30)
        return float(grace)

    def _terminated(self, run: ContainerRun, exit_code: int, started: str, file: Path) -> Obj:
        if run.oom_killed:
            exit_code, reason = OOM_EXIT_CODE, "OOMKilled"
        else:
            reason = "Completed" if exit_code == 0 else "Error"
        message = _read_limited(file)
        policy = run.spec.get("terminationMessagePolicy", "File")
        if not message and exit_code != 0 and policy == "FallbackToLogsOnError":
            message = _log_tail(self.log_file(run.name))
        terminated: Obj = {
            "exitCode": exit_code,
            "reason": reason,
            "startedAt": started,
            "finishedAt": now(),
        }
        if message:
            terminated["message"] = message
        return terminated

    def phase(self) -> str:
        """Terminal phase once every container has terminated: Failed if any exit is non-zero."""
        failed_init = any((r.terminated or {}).get("exitCode", 0) != 0 for r in self.init_runs)
        failed = any((r.terminated or {}).get("exitCode", 0) != 0 for r in self.runs)
        return "Failed" if failed or failed_init else "Succeeded"

    async def _report_final(self) -> None:
        for run in self.runs:
            if run.terminated is None:  # never started because an init container failed
                run.state = {"waiting": {"reason": "PodInitializing"}}
        phase = "Failed" if self.deadline_exceeded else self.phase()
        await self.report(phase, *self._terminal_reason())

    async def finish_deletion(self) -> None:
        """Complete a graceful deletion once the pod is terminal (grace 0, uid precondition)."""
        if self.silent or self.final_delete_sent or not self.deleting.is_set():
            return
        self.final_delete_sent = True
        body = {"gracePeriodSeconds": 0, "preconditions": {"uid": self.uid}}
        with contextlib.suppress(ApiError):
            await self.kubelet.api.request("DELETE", self.path, body)

    async def kill_all(self) -> None:
        """SIGKILL every live process of the pod and reap it."""
        for run in [*self.init_runs, *self.runs]:
            if run.process is not None and run.process.returncode is None:
                _killpg(run.process.pid, signal.SIGKILL)
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(run.process.wait(), 10)

    async def oom_kill(self, container: str | None) -> None:
        """Simulate the kernel OOM killer on one container (default: the first running one)."""
        for run in self.runs:
            alive = run.process is not None and run.process.returncode is None
            if alive and (container is None or run.name == container):
                run.oom_killed = True
                assert run.process is not None
                _killpg(run.process.pid, signal.SIGKILL)
                return
        raise LookupError(f"no running container {container or ''} in {self.namespace}/{self.name}")


def _never_started() -> Obj:
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


def _killpg(pid: int, sig: signal.Signals) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pid, sig)


def _read_limited(path: Path) -> str:
    try:
        with path.open("rb") as handle:
            return handle.read(TERMINATION_MESSAGE_LIMIT).decode(errors="replace")
    except OSError:
        return ""


def _log_tail(path: Path) -> str:
    try:
        data = path.read_bytes()
    except OSError:
        return ""
    lines = data.splitlines()[-FALLBACK_LOG_LINES:]
    return b"\n".join(lines)[-FALLBACK_LOG_BYTES:].decode(errors="replace")


# --------------------------------------------------------------------------------------------
# The kubelet


@dataclass
class Credentials:
    """What a pod's processes get for talking to the API."""

    kubeconfig: Path | None


class ProcessKubelet:
    """Registers Nodes and runs the pods bound to them as local processes.

    ``await start(nodes)`` … ``await stop()``; or ``async with ProcessKubelet(...)``.
    """

    def __init__(
        self,
        access: ClusterAccess,
        workdir: Path | None = None,
        *,
        images: ImageRule | None = None,
        base_env: Mapping[str, str] | None = None,
        restart_backoff: float = 1.0,
        retry_interval: float = 1.0,
    ) -> None:
        self.access = access
        self.workdir = workdir or Path(tempfile.mkdtemp(prefix="catalogsync-kubelet-"))
        self.pods_dir = self.workdir / "pods"
        self.pods_dir.mkdir(parents=True, exist_ok=True)
        self.images = images or ImageRule()
        self.base_env = dict(base_env or {})
        self.restart_backoff = restart_backoff
        self.retry_interval = retry_interval
        self.api = Api(access)
        self.nodes: dict[str, NodeConfig] = {}
        self.workers: dict[str, PodWorker] = {}
        self.by_name: dict[tuple[str, str], PodWorker] = {}
        self.errors: list[str] = []
        """Failures while running pods: bugs of the harness or an API that refused a status."""
        self.warnings: list[str] = []
        """Transient trouble (a watch that broke and was re-established)."""
        self._watch_task: asyncio.Task[None] | None = None
        self._synced = asyncio.Event()
        self._tasks: set[asyncio.Task[None]] = set()
        self._version = "v0.0.0"
        self.log_server = LogServer(self, self.workdir / "serving")

    async def __aenter__(self) -> ProcessKubelet:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.stop()

    # -- nodes -------------------------------------------------------------------------------

    async def start(self, nodes: Iterable[NodeConfig] = ()) -> None:
        """Register ``nodes`` and start watching pods."""
        self._version = str((await self.api.get("/version")).get("gitVersion", self._version))
        await self.log_server.start()
        for config in nodes:
            await self.add_node(config)
        self._watch_task = asyncio.create_task(self._watch_pods(), name="process-kubelet-watch")
        await asyncio.wait_for(self._synced.wait(), 30)

    async def add_node(self, config: NodeConfig) -> None:
        """Create (or take over) the Node, mark it Ready and leave exactly the chosen taints."""
        path = f"/api/v1/nodes/{config.name}"
        body = node_object(config)
        try:
            await self.api.request("POST", "/api/v1/nodes", body)
        except ApiError as exc:
            if exc.status != 409:
                raise
            await self.api.request("PATCH", path, {"metadata": body["metadata"]}, MERGE)
        await self.api.request(
            "PATCH",
            f"{path}/status",
            {"status": node_status(config, self._version, self.log_server.port)},
            MERGE,
        )
        # TaintNodesByCondition added node.kubernetes.io/not-ready on create; only the (disabled)
        # node-lifecycle controller would lift it.
        await self.api.request("PATCH", path, {"spec": {"taints": body["spec"]["taints"]}}, MERGE)
        await self._create_lease(config.name)
        self.nodes[config.name] = config

    async def _create_lease(self, name: str) -> None:
        """The node's heartbeat Lease, renewed once: nothing reads it, but tools show it."""
        node = await self.api.get(f"/api/v1/nodes/{name}")
        lease = {
            "apiVersion": "coordination.k8s.io/v1",
            "kind": "Lease",
            "metadata": {
                "name": name,
                "ownerReferences": [
                    {
                        "apiVersion": "v1",
                        "kind": "Node",
                        "name": name,
                        "uid": node["metadata"]["uid"],
                    }
                ],
            },
            "spec": {
                "holderIdentity": name,
                "leaseDurationSeconds": 40,
                "renewTime": dt.datetime.now(dt.UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ"),
            },
        }
        path = "/apis/coordination.k8s.io/v1/namespaces/kube-node-lease/leases"
        try:
            await self.api.request("POST", path, lease)
        except ApiError as exc:
            if exc.status != 409:
                raise
            await self.api.request("PATCH", f"{path}/{name}", lease, MERGE)

    async def remove_node(self, name: str) -> None:
        """The node dies: its processes are killed without a word and the Node is deleted.

        Pods bound to it keep their last status until the pod garbage collector removes them,
        as after a real node loss.
        """
        self.nodes.pop(name, None)
        doomed = [w for w in self.workers.values() if w.node == name]
        for worker in doomed:
            worker.silent = True
            if worker.task is not None:
                worker.task.cancel()
        await asyncio.gather(*(w.task for w in doomed if w.task), return_exceptions=True)
        for worker in doomed:
            await worker.kill_all()
        with contextlib.suppress(ApiError):
            await self.api.request("DELETE", f"/api/v1/nodes/{name}")

    def node_pod_capacity(self, node: str) -> int | None:
        config = self.nodes.get(node)
        if config is None:
            return None
        return int(parse_quantity(config.resources()[1].get("pods", "110")))

    def active_pods(self, node: str, exclude: str) -> int:
        """Pods this node has admitted and not finished (the kubelet's admission count)."""
        return sum(
            1
            for w in self.workers.values()
            if w.node == node and w.uid != exclude and not w.finished
        )

    # -- pods --------------------------------------------------------------------------------

    async def _watch_pods(self) -> None:
        """List+watch all pods; relist whenever a watch ends or fails."""
        while True:
            try:
                listing = await self.api.get("/api/v1/pods")
                for pod in listing.get("items", []):
                    self._observe(pod)
                self._synced.set()
                version = listing["metadata"]["resourceVersion"]
                async for event in self.api.watch("/api/v1/pods", version):
                    if event["type"] == "ERROR":
                        break
                    if event["type"] in ("ADDED", "MODIFIED"):
                        self._observe(event["object"])
                    elif event["type"] == "DELETED":
                        self._forget(event["object"])
            except asyncio.CancelledError:
                raise
            except (httpx.HTTPError, ApiError, json.JSONDecodeError, KeyError) as exc:
                self.warnings.append(f"pod watch: {exc!r}")
                await asyncio.sleep(0.5)

    def _observe(self, pod: Obj) -> None:
        node = pod.get("spec", {}).get("nodeName")
        uid = pod["metadata"]["uid"]
        worker = self.workers.get(uid)
        if worker is not None:
            worker.update(pod)
            if worker.finished and worker.deleting.is_set():
                self._background(worker.finish_deletion())
            return
        if node not in self.nodes:
            return
        if pod.get("status", {}).get("phase") in ("Succeeded", "Failed"):
            # Terminal before we knew it (harness restart): only finish a pending deletion.
            if pod["metadata"].get("deletionTimestamp"):
                worker = PodWorker(self, pod)
                worker.finished = True
                self.workers[uid] = worker
                self._background(worker.finish_deletion())
            return
        worker = PodWorker(self, pod)
        self.workers[uid] = worker
        self.by_name[(worker.namespace, worker.name)] = worker
        label = f"pod {worker.namespace}/{worker.name}"
        worker.task = asyncio.create_task(worker.run(), name=label)

    def _background(self, coroutine: Coroutine[Any, Any, None]) -> None:
        """Run a fire-and-forget call, keeping a reference so it is not garbage collected."""
        task = asyncio.create_task(coroutine)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    def _forget(self, pod: Obj) -> None:
        worker = self.workers.pop(pod["metadata"]["uid"], None)
        if worker is not None:
            worker.deleting.set()
            worker.stopping.set()
            worker.silent = True

    def worker(self, namespace: str, name: str) -> PodWorker:
        try:
            return self.by_name[(namespace, name)]
        except KeyError:
            raise LookupError(f"pod {namespace}/{name} never ran on this kubelet") from None

    # -- environment -------------------------------------------------------------------------

    async def credentials(self, worker: PodWorker) -> Credentials:
        """A kubeconfig with a bound token of the pod's ServiceAccount, unless automount is off."""
        spec = worker.pod["spec"]
        account = spec.get("serviceAccountName") or "default"
        automount = spec.get("automountServiceAccountToken")
        if automount is None:
            sa = await self.api.get_optional(
                f"/api/v1/namespaces/{worker.namespace}/serviceaccounts/{account}"
            )
            if sa is None:
                raise ContainerConfigError(f'serviceaccount "{account}" not found')
            automount = sa.get("automountServiceAccountToken", True)
        if not automount:
            return Credentials(None)
        request = {
            "apiVersion": "authentication.k8s.io/v1",
            "kind": "TokenRequest",
            "spec": {
                "expirationSeconds": 3607,
                "boundObjectRef": {
                    "apiVersion": "v1",
                    "kind": "Pod",
                    "name": worker.name,
                    "uid": worker.uid,
                },
            },
        }
        try:
            answer = await self.api.request(
                "POST",
                f"/api/v1/namespaces/{worker.namespace}/serviceaccounts/{account}/token",
                request,
            )
        except ApiError as exc:
            raise ContainerConfigError(f"cannot mint a token for {account}: {exc}") from exc
        token = answer["status"]["token"]
        secrets = worker.directory / "serviceaccount"
        secrets.mkdir(exist_ok=True)
        (secrets / "token").write_text(token)
        (secrets / "namespace").write_text(worker.namespace)
        shutil.copyfile(self.access.ca_file, secrets / "ca.crt")
        kubeconfig = write_kubeconfig(
            secrets / "kubeconfig",
            self.access.server,
            self.access.ca_file.read_bytes(),
            user=f"system:serviceaccount:{worker.namespace}:{account}",
            token=token,
            namespace=worker.namespace,
        )
        return Credentials(kubeconfig)

    def _base_environment(self, worker: PodWorker, credentials: Credentials) -> dict[str, str]:
        home = worker.directory / "home"
        tmp = self._tmpdir(worker)
        home.mkdir(exist_ok=True)
        env = {
            "PATH": self.images.search_path,
            "HOME": str(home),
            "TMPDIR": str(tmp),
            "HOSTNAME": worker.pod["spec"].get("hostname") or worker.name,
            "LANG": "C.UTF-8",
            "PYTHONUNBUFFERED": "1",
            **self.base_env,
        }
        if credentials.kubeconfig is not None:
            env["KUBECONFIG"] = str(credentials.kubeconfig)
        return env

    def _tmpdir(self, worker: PodWorker) -> Path:
        """The pod's temp dir; an emptyDir volume mounted at /tmp is that same directory."""
        tmp = worker.directory / "tmp"
        tmp.mkdir(exist_ok=True)
        for volume in worker.pod["spec"].get("volumes") or []:
            if "emptyDir" in volume:
                (worker.directory / "volumes" / volume["name"]).mkdir(parents=True, exist_ok=True)
        return tmp

    async def environment(
        self, worker: PodWorker, container: Obj, credentials: Credentials
    ) -> dict[str, str]:
        """The container's environment, resolved in kubelet order (envFrom, then env)."""
        declared: dict[str, str] = {}
        for source in container.get("envFrom") or []:
            declared.update(await self._env_from(worker, source))
        for item in container.get("env") or []:
            value = await self._env_value(worker, container, item, declared)
            if value is not None:
                declared[item["name"]] = value
        return {**self._base_environment(worker, credentials), **declared}

    async def _env_from(self, worker: PodWorker, source: Obj) -> dict[str, str]:
        prefix = source.get("prefix", "")
        _, _, data = await self._referenced(worker, source, "secretRef", "configMapRef")
        if data is None:
            return {}
        valid = re.compile(r"[-._a-zA-Z][-._a-zA-Z0-9]*")
        return {prefix + k: v for k, v in data.items() if valid.fullmatch(prefix + k)}

    async def _referenced(
        self, worker: PodWorker, source: Obj, secret: str, config_map: str
    ) -> tuple[Obj, str, dict[str, str] | None]:
        """(reference, kind, data) of the Secret or ConfigMap that ``source`` names.

        ``data`` is None when the object is missing and the reference ``optional``; a missing
        required object keeps the container waiting, as on a real node.
        """
        if secret in source:
            ref, kind = source[secret], "Secret"
        else:
            ref, kind = source[config_map], "ConfigMap"
        data = await self._object_data(worker.namespace, kind, ref["name"])
        if data is None and not ref.get("optional"):
            raise ContainerConfigError(f'{kind.lower()} "{ref["name"]}" not found')
        return ref, kind, data

    async def _object_data(self, namespace: str, kind: str, name: str) -> dict[str, str] | None:
        plural = "secrets" if kind == "Secret" else "configmaps"
        obj = await self.api.get_optional(f"/api/v1/namespaces/{namespace}/{plural}/{name}")
        if obj is None:
            return None
        if kind == "Secret":
            return {
                k: base64.b64decode(v).decode(errors="replace")
                for k, v in (obj.get("data") or {}).items()
            }
        data = dict(obj.get("data") or {})
        for key, value in (obj.get("binaryData") or {}).items():
            data[key] = base64.b64decode(value).decode(errors="replace")
        return data

    async def _env_value(
        self, worker: PodWorker, container: Obj, item: Obj, declared: Mapping[str, str]
    ) -> str | None:
        if "value" in item or "valueFrom" not in item:
            return expand(str(item.get("value", "")), declared)
        source = item["valueFrom"]
        if "secretKeyRef" in source or "configMapKeyRef" in source:
            return await self._key_ref(worker, source)
        if "fieldRef" in source:
            return field_value(worker.pod, source["fieldRef"]["fieldPath"])
        if "resourceFieldRef" in source:
            return self._resource_value(worker, container, source["resourceFieldRef"])
        raise ContainerConfigError(f"unsupported valueFrom for {item['name']}: {sorted(source)}")

    async def _key_ref(self, worker: PodWorker, source: Obj) -> str | None:
        ref, kind, data = await self._referenced(worker, source, "secretKeyRef", "configMapKeyRef")
        if data is None:
            return None
        if ref["key"] not in data:
            if ref.get("optional"):
                return None
            raise ContainerConfigError(
                f"couldn't find key {ref['key']} in {kind} {worker.namespace}/{ref['name']}"
            )
        return data[ref["key"]]

    def _resource_value(self, worker: PodWorker, container: Obj, ref: Obj) -> str:
        target = ref.get("containerName") or container["name"]
        spec = next(
            (
                c
                for c in [
                    *(worker.pod["spec"].get("initContainers") or []),
                    *worker.pod["spec"]["containers"],
                ]
                if c["name"] == target
            ),
            container,
        )
        kind, _, resource = ref["resource"].partition(".")
        values = (spec.get("resources") or {}).get(kind) or {}
        if resource in values:
            amount = parse_quantity(values[resource])
        elif kind == "limits":
            node = self.nodes.get(worker.node)
            allocatable = node.resources()[1] if node else {}
            amount = parse_quantity(allocatable.get(resource, "0"))
        else:
            amount = 0.0
        divisor = parse_quantity(ref.get("divisor") or "1") or 1.0  # the API defaults it to 0
        if resource == "cpu":
            return str(math.ceil(round(amount * 1000) / round(divisor * 1000)))
        return str(math.ceil(amount / divisor))

    # -- test hooks --------------------------------------------------------------------------

    async def oom_kill(self, namespace: str, name: str, container: str | None = None) -> None:
        """Kill a container like the OOM killer: SIGKILL, reported as exit 137 ``OOMKilled``."""
        await self.worker(namespace, name).oom_kill(container)

    def log_path(self, namespace: str, name: str, container: str | None = None) -> Path:
        worker = self.worker(namespace, name)
        return worker.log_file(container or worker.runs[0].name)

    def logs(self, namespace: str, name: str, container: str | None = None) -> str:
        """Everything the container's processes wrote (stdout and stderr, restarts appended)."""
        try:
            return self.log_path(namespace, name, container).read_text(errors="replace")
        except FileNotFoundError:
            return ""

    def running(self) -> list[tuple[str, str]]:
        """(namespace, name) of pods that currently have a live process."""
        return [
            (w.namespace, w.name)
            for w in self.workers.values()
            if any(
                r.process is not None and r.process.returncode is None
                for r in [*w.init_runs, *w.runs]
            )
        ]

    async def stop(self, *, delete_nodes: bool = True) -> None:
        """Kill every process, stop watching, optionally delete the Nodes, close the client."""
        if self._watch_task is not None:
            self._watch_task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._watch_task
            self._watch_task = None
        tasks = []
        for worker in self.workers.values():
            worker.silent = True
            await worker.kill_all()
            if worker.task is not None and not worker.task.done():
                worker.task.cancel()
                tasks.append(worker.task)
        tasks += self._tasks
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        if delete_nodes:
            for name in list(self.nodes):
                with contextlib.suppress(ApiError, httpx.HTTPError):
                    await self.api.request("DELETE", f"/api/v1/nodes/{name}")
        self.nodes.clear()
        await self.log_server.stop()
        await self.api.close()


def field_value(pod: Obj, path: str) -> str:
    """A ``fieldRef`` value as the kubelet resolves it (downward API)."""
    meta, spec, status = pod["metadata"], pod["spec"], pod.get("status") or {}
    match = re.fullmatch(r"metadata\.(labels|annotations)\['(.+)'\]", path)
    if match:
        return str((meta.get(match.group(1)) or {}).get(match.group(2), ""))
    simple = {
        "metadata.name": meta.get("name"),
        "metadata.namespace": meta.get("namespace"),
        "metadata.uid": meta.get("uid"),
        "spec.nodeName": spec.get("nodeName"),
        "spec.serviceAccountName": spec.get("serviceAccountName"),
        "status.podIP": status.get("podIP") or POD_IP,
        "status.hostIP": status.get("hostIP") or POD_IP,
        "status.podIPs": status.get("podIP") or POD_IP,
        "status.hostIPs": status.get("hostIP") or POD_IP,
    }
    if path in simple:
        return str(simple[path] or "")
    if path in ("metadata.labels", "metadata.annotations"):
        items = meta.get(path.split(".")[1]) or {}
        return "\n".join(f'{k}="{v}"' for k, v in sorted(items.items()))
    raise ContainerConfigError(f"unsupported fieldRef {path}")


# --------------------------------------------------------------------------------------------
# The kubelet's log endpoint


class LogServer:
    """``GET /containerLogs/<ns>/<pod>/<container>`` over HTTPS, so ``kubectl logs`` works.

    The apiserver reaches it at the Node's InternalIP and ``daemonEndpoints`` port (it runs with
    ``--kubelet-preferred-address-types=InternalIP`` and, having no kubelet CA, does not verify
    the self-signed certificate). Supported query parameters: ``follow``, ``tailLines``,
    ``limitBytes``; restarts append to one file, so ``previous`` is not distinguished.
    """

    def __init__(self, kubelet: ProcessKubelet, directory: Path) -> None:
        self.kubelet = kubelet
        self.directory = directory
        self.port = 0
        self._runner: web.AppRunner | None = None

    async def start(self) -> None:
        app = web.Application()
        app.router.add_get("/containerLogs/{namespace}/{pod}/{container}", self._logs)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0, ssl_context=self._ssl_context())
        await site.start()
        server = site._server
        assert isinstance(server, asyncio.Server)
        self.port = int(server.sockets[0].getsockname()[1])

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    def _ssl_context(self) -> ssl.SSLContext:
        self.directory.mkdir(parents=True, exist_ok=True)
        cert, key = self.directory / "kubelet.crt", self.directory / "kubelet.key"
        write_self_signed(cert, key, "process-kubelet", ("127.0.0.1", "localhost"))
        context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        context.load_cert_chain(str(cert), str(key))
        return context

    async def _logs(self, request: web.Request) -> web.StreamResponse:
        info = request.match_info
        try:
            worker = self.kubelet.worker(info["namespace"], info["pod"])
        except LookupError as exc:
            raise web.HTTPNotFound(text=str(exc)) from None
        path = worker.log_file(info["container"])
        data = _read_from(path, 0)
        if tail := request.query.get("tailLines"):
            lines = data.splitlines(keepends=True)
            data = b"".join(lines[-int(tail) :]) if int(tail) > 0 else b""
        if limit := request.query.get("limitBytes"):
            data = data[: int(limit)]
        if request.query.get("follow") not in ("true", "1"):
            return web.Response(body=data, content_type="text/plain")
        response = web.StreamResponse()
        response.content_type = "text/plain"
        await response.prepare(request)
        await response.write(data)
        await self._follow(worker, path, len(_read_from(path, 0)), response)
        await response.write_eof()
        return response

    @staticmethod
    async def _follow(
        worker: PodWorker, path: Path, offset: int, response: web.StreamResponse
    ) -> None:
        """Stream what the container writes until the pod's worker is done."""
        while True:
            done = worker.finished
            chunk = _read_from(path, offset)
            if chunk:
                offset += len(chunk)
                await response.write(chunk)
            if done:
                return
            await asyncio.sleep(0.2)


def _read_from(path: Path, offset: int) -> bytes:
    try:
        with path.open("rb") as handle:
            handle.seek(offset)
            return handle.read()
    except FileNotFoundError:
        return b""


def write_self_signed(cert_file: Path, key_file: Path, name: str, hosts: Sequence[str]) -> None:
    """A self-signed serving certificate (the apiserver does not verify kubelets here)."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    from catalogsync.dev.controlplane import subject_alt_names

    key = ec.generate_private_key(ec.SECP256R1())
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
    start = dt.datetime.now(dt.UTC) - dt.timedelta(minutes=5)
    cert = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(start)
        .not_valid_after(start + dt.timedelta(days=7))
        .add_extension(x509.SubjectAlternativeName(subject_alt_names(hosts)), critical=False)
        .sign(key, hashes.SHA256())
    )
    cert_file.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_file.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )


# --------------------------------------------------------------------------------------------
# Running the kubelet beside synchronous code


class KubeletThread:
    """A ProcessKubelet on its own event loop in a daemon thread.

    Tests may be synchronous (sleeping, blocking clients) or run on another event loop; pods keep
    progressing either way. Methods block until the kubelet has done the work.
    """

    def __init__(self, access: ClusterAccess, workdir: Path | None = None, **options: Any) -> None:
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(
            target=self._loop.run_forever, name="process-kubelet", daemon=True
        )
        self._thread.start()
        self.kubelet: ProcessKubelet = self._call(self._create(access, workdir, options))

    @staticmethod
    async def _create(access: ClusterAccess, workdir: Path | None, options: Obj) -> ProcessKubelet:
        return ProcessKubelet(access, workdir, **options)

    def _call(self, coroutine: Coroutine[Any, Any, T], timeout: float = 120.0) -> T:
        return asyncio.run_coroutine_threadsafe(coroutine, self._loop).result(timeout)

    def start(self, nodes: Iterable[NodeConfig] = ()) -> KubeletThread:
        self._call(self.kubelet.start(list(nodes)))
        return self

    def add_node(self, config: NodeConfig) -> None:
        self._call(self.kubelet.add_node(config))

    def remove_node(self, name: str) -> None:
        self._call(self.kubelet.remove_node(name))

    def oom_kill(self, namespace: str, name: str, container: str | None = None) -> None:
        self._call(self.kubelet.oom_kill(namespace, name, container))

    def logs(self, namespace: str, name: str, container: str | None = None) -> str:
        return self.kubelet.logs(namespace, name, container)

    def log_path(self, namespace: str, name: str, container: str | None = None) -> Path:
        return self.kubelet.log_path(namespace, name, container)

    def running(self) -> list[tuple[str, str]]:
        return self._call(_async_value(self.kubelet.running))

    @property
    def errors(self) -> list[str]:
        """Unexpected failures inside the harness (a test may assert this stays empty)."""
        return list(self.kubelet.errors)

    def stop(self, *, delete_nodes: bool = True) -> None:
        """Stop the kubelet (processes killed, Nodes deleted) and its thread."""
        if not self._thread.is_alive():
            return
        try:
            self._call(self.kubelet.stop(delete_nodes=delete_nodes))
        finally:
            self._loop.call_soon_threadsafe(self._loop.stop)
            self._thread.join(10)
            self._loop.close()


async def _async_value(function: Callable[[], T]) -> T:
    return function()


# --------------------------------------------------------------------------------------------
# Command line


def parse_node(spec: str) -> NodeConfig:
    """``name[,cpu=8][,memory=32Gi][,pods=110][,label=k=v][,taint=k=v:Effect]`` as a NodeConfig."""
    name, *items = spec.split(",")
    options: dict[str, Any] = {}
    labels: dict[str, str] = {}
    taints: list[dict[str, str]] = []
    for item in items:
        key, _, value = item.partition("=")
        if key == "label":
            label, _, label_value = value.partition("=")
            labels[label] = label_value
        elif key == "taint":
            body, _, effect = value.rpartition(":")
            taint_key, _, taint_value = body.partition("=")
            taints.append({"key": taint_key, "value": taint_value, "effect": effect})
        elif key in ("cpu", "memory", "ephemeral_storage"):
            options[key] = value
        elif key == "pods":
            options[key] = int(value)
        else:
            raise ValueError(f"unknown node option {key!r} in {spec!r}")
    return NodeConfig(name=name, labels=labels, taints=taints, **options)


def main(argv: Sequence[str] | None = None) -> int:
    """``catalogsync kubelet``: register Nodes on a (local) cluster and run their pods."""
    import argparse

    parser = argparse.ArgumentParser(
        prog="catalogsync kubelet",
        description="Run pods bound to the given Nodes as local processes (see the module docs). "
        "Needs a client-certificate kubeconfig with rights over nodes and pods, such as the one "
        "`python -m catalogsync.dev.controlplane` prints.",
    )
    parser.add_argument("--kubeconfig", type=Path, default=os.environ.get("KUBECONFIG"))
    parser.add_argument(
        "--node",
        action="append",
        type=parse_node,
        default=[],
        metavar="SPEC",
        help="name[,cpu=8][,memory=32Gi][,pods=110][,label=k=v][,taint=k=v:Effect]; repeatable",
    )
    parser.add_argument("--workdir", type=Path, help="pod directories and logs (default: temp)")
    parser.add_argument(
        "--image",
        action="append",
        default=[],
        metavar="NAME",
        help="image repository name that maps to local commands (default: catalogsync)",
    )
    args = parser.parse_args(argv)
    if args.kubeconfig is None:
        parser.error("--kubeconfig or KUBECONFIG is required")
    workdir = args.workdir or Path(tempfile.mkdtemp(prefix="catalogsync-kubelet-"))
    access = ClusterAccess.from_kubeconfig(args.kubeconfig, workdir / "credentials")
    images = ImageRule(project_images=tuple(args.image or ["catalogsync"]))
    nodes = args.node or [NodeConfig(name="node-1")]
    asyncio.run(_serve(access, workdir, images, nodes))
    return 0


async def _serve(
    access: ClusterAccess, workdir: Path, images: ImageRule, nodes: Sequence[NodeConfig]
) -> None:
    kubelet = ProcessKubelet(access, workdir, images=images)
    await kubelet.start(nodes)
    print(f"nodes {', '.join(n.name for n in nodes)} ready; pod logs in {workdir}", flush=True)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    try:
        await stop.wait()
    finally:
        await kubelet.stop()
