"""What the pieces of the process kubelet need of each other, as protocols.

A :class:`~catalogsync.dev.kubelet.pods.PodWorker` runs inside a :class:`PodHost` (the
:class:`~catalogsync.dev.kubelet.kubelet.ProcessKubelet`), and the log server reads a pod's logs
through :class:`PodLookup`. Typing against these instead of the classes themselves keeps the
modules in one direction: ``kubelet`` imports ``pods`` and ``logs``, and neither imports it back.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Protocol

from catalogsync.dev.kubelet.api import Api, Obj
from catalogsync.dev.kubelet.credentials import Credentials
from catalogsync.dev.kubelet.images import ImageRule


class PodSetup(Protocol):
    """What the kubelet reads of a pod to set up its containers."""

    @property
    def pod(self) -> Obj: ...

    @property
    def node(self) -> str: ...

    @property
    def directory(self) -> Path: ...


class PodHost(Protocol):
    """What a pod worker uses of the kubelet that runs it."""

    @property
    def api(self) -> Api: ...

    @property
    def pods_dir(self) -> Path: ...

    @property
    def images(self) -> ImageRule: ...

    @property
    def errors(self) -> list[str]:
        """Failures to report at the end of the test (bugs of the harness, refused statuses)."""
        ...

    @property
    def retry_interval(self) -> float: ...

    @property
    def restart_backoff(self) -> float: ...

    def node_pod_capacity(self, node: str) -> int | None: ...

    def active_pods(self, node: str, exclude: str) -> int: ...

    async def credentials(self, worker: PodSetup) -> Credentials: ...

    async def environment(
        self, worker: PodSetup, container: Obj, credentials: Credentials
    ) -> dict[str, str]: ...

    async def argv(self, worker: PodSetup, container: Obj, env: Mapping[str, str]) -> list[str]: ...


class PodLogs(Protocol):
    """A pod's container logs, as the log server serves them."""

    @property
    def finished(self) -> bool:
        """The pod has reached its terminal status: a follower may stop."""
        ...

    def log_file(self, container: str) -> Path: ...


class PodLookup(Protocol):
    def worker(self, namespace: str, name: str) -> PodLogs:
        """The pod's worker; raises LookupError if the pod never ran here."""
        ...
