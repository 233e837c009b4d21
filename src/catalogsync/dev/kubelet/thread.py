"""A ProcessKubelet driven from synchronous code or another event loop."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Callable, Coroutine, Iterable
from pathlib import Path
from typing import Any, TypeVar

from catalogsync.dev.controlplane import ClusterAccess
from catalogsync.dev.kubelet.api import Obj
from catalogsync.dev.kubelet.kubelet import ProcessKubelet
from catalogsync.dev.kubelet.nodes import NodeConfig

T = TypeVar("T")


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
