"""One pod on a process node: admission, containers run per restart policy, status, deletion."""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
from pathlib import Path

from catalogsync.dev.kubelet.api import SMP, ApiError, Obj, now
from catalogsync.dev.kubelet.containers import (
    OOM_EXIT_CODE,
    TERMINATION_ENV,
    ContainerRun,
    killpg,
    terminated_state,
)
from catalogsync.dev.kubelet.env import ContainerConfigError
from catalogsync.dev.kubelet.host import PodHost
from catalogsync.dev.kubelet.images import ImageRefused
from catalogsync.dev.kubelet.status import never_started, pod_status, readiness_conditions
from catalogsync.dev.processes import die_with_parent


class PodWorker:
    """Runs one pod from acceptance to its terminal status and final deletion."""

    def __init__(self, kubelet: PodHost, pod: Obj) -> None:
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

    async def report(
        self, phase: str, reason: str | None = None, message: str | None = None
    ) -> None:
        """Write the whole kubelet-owned part of the status (strategic merge on /status)."""
        if self.silent:
            return
        self.conditions = readiness_conditions(self.conditions, self.init_runs, self.runs, phase)
        status = pod_status(
            phase,
            reason,
            message,
            start_time=self.start_time,
            conditions=self.conditions,
            init_runs=self.init_runs,
            runs=self.runs,
        )
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
                    argv = await self.kubelet.argv(self, run.spec, env)
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
                run.state = never_started()
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
            run.state = never_started()
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
        run.state = {
            "terminated": terminated_state(
                run, exit_code, started, termination_file, self.log_file(run.name)
            )
        }
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
            killpg(process.pid, signal.SIGTERM)
            try:
                await asyncio.wait_for(asyncio.shield(waiter), self._grace_period())
            except TimeoutError:
                killpg(process.pid, signal.SIGKILL)
        code = await waiter
        killpg(process.pid, signal.SIGKILL)  # leftovers of the process group
        return code if code >= 0 else 128 - code

    def _grace_period(self) -> float:
        meta = self.pod["metadata"]
        grace = meta.get("deletionGracePeriodSeconds")
        if grace is None:
            grace = self.pod["spec"].get("terminationGracePeriodSeconds", 30)
        return float(grace)

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
                killpg(run.process.pid, signal.SIGKILL)
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(run.process.wait(), 10)

    async def oom_kill(self, container: str | None) -> None:
        """Simulate the kernel OOM killer on one container (default: the first running one)."""
        for run in self.runs:
            alive = run.process is not None and run.process.returncode is None
            if alive and (container is None or run.name == container):
                run.oom_killed = True
                assert run.process is not None
                killpg(run.process.pid, signal.SIGKILL)
                return
        raise LookupError(f"no running container {container or ''} in {self.namespace}/{self.name}")
