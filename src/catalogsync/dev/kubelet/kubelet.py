"""The process kubelet: registers Nodes, watches the Pods bound to them, runs a worker per pod."""

from __future__ import annotations

import asyncio
import contextlib
import json
import tempfile
from collections.abc import Coroutine, Iterable, Mapping
from pathlib import Path
from typing import Any

import httpx

from catalogsync.common.quantities import parse_quantity
from catalogsync.dev.controlplane import ClusterAccess
from catalogsync.dev.kubelet.api import MERGE, Api, ApiError, Obj
from catalogsync.dev.kubelet.credentials import Credentials, pod_credentials
from catalogsync.dev.kubelet.env import base_environment, declared_environment
from catalogsync.dev.kubelet.host import PodSetup
from catalogsync.dev.kubelet.images import ImageRule
from catalogsync.dev.kubelet.logs import LogServer
from catalogsync.dev.kubelet.nodes import NodeConfig, lease_object, node_object, node_status
from catalogsync.dev.kubelet.pods import PodWorker
from catalogsync.dev.kubelet.sandbox import ImageSandbox


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
        sandbox: ImageSandbox | None = None,
        base_env: Mapping[str, str] | None = None,
        restart_backoff: float = 1.0,
        retry_interval: float = 1.0,
    ) -> None:
        self.access = access
        self.workdir = workdir or Path(tempfile.mkdtemp(prefix="catalogsync-kubelet-"))
        self.pods_dir = self.workdir / "pods"
        self.pods_dir.mkdir(parents=True, exist_ok=True)
        self.images = images or ImageRule()
        self.sandbox = sandbox
        """When set, containers run inside the built image rather than from the checkout."""
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
        lease = lease_object(name, node["metadata"]["uid"])
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

    async def credentials(self, worker: PodSetup) -> Credentials:
        """A kubeconfig with a bound token of the pod's ServiceAccount, unless automount is off."""
        return await pod_credentials(self.api, self.access, worker.pod, worker.directory)

    async def environment(
        self, worker: PodSetup, container: Obj, credentials: Credentials
    ) -> dict[str, str]:
        """The container's environment, resolved in kubelet order (envFrom, then env)."""
        node = self.nodes.get(worker.node)
        allocatable = node.resources()[1] if node else {}
        declared = await declared_environment(self.api, worker.pod, container, allocatable)
        if self.sandbox is not None:
            return self.sandbox.environment(
                worker.pod,
                container,
                declared,
                self.base_env,
                credentials=credentials.kubeconfig is not None,
            )
        base = base_environment(
            worker.directory,
            worker.pod,
            self.images.search_path,
            self.base_env,
            credentials.kubeconfig,
        )
        return {**base, **declared}

    async def argv(self, worker: PodSetup, container: Obj, env: Mapping[str, str]) -> list[str]:
        """What to execute for the container: a checkout command, or the image's, sandboxed."""
        if self.sandbox is not None:
            return await self.sandbox.argv(self.api, worker.pod, worker.directory, container, env)
        return self.images.argv(container, env)

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
