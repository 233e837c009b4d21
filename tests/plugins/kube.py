"""Kubernetes for tests: a real control plane per session, process-kubelet Nodes per test.

Fixtures:

* ``control_plane`` (session): etcd, kube-apiserver, kube-controller-manager and kube-scheduler
  built by ``scripts/build-k8s.sh``. Without the binaries the kube tests are skipped, unless
  ``CATALOGSYNC_REQUIRE_K8S`` is set (CI), which turns the skip into a failure.
  ``CATALOGSYNC_KEEP_K8S=1`` keeps the work directory (component logs) after the session.
* ``kube_api``: a synchronous ``kubernetes`` ApiClient as cluster admin.
* ``namespace``: a fresh namespace (with its ``default`` ServiceAccount), deleted afterwards.
* ``kubelet``: a factory ``kubelet(*nodes)`` starting a process kubelet with the given Nodes
  (``NodeConfig`` or plain names); stopped, its Nodes deleted, at the end of the test.
* ``kubectl``: the built kubectl with the admin kubeconfig: ``kubectl("get", "pods", "-n", ns)``
  returns stdout, ``kubectl.json(...)`` parses ``-o json``.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import time
import uuid
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any, TypeVar

import pytest

from catalogsync.dev.controlplane import Binaries, BinariesMissing, ControlPlane
from catalogsync.dev.kubelet import KubeletThread, NodeConfig

T = TypeVar("T")


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "kube: needs the local Kubernetes control plane")


class Kubectl:
    """The built kubectl, bound to one kubeconfig."""

    def __init__(self, binary: Path, kubeconfig: Path) -> None:
        self.binary = binary
        self.kubeconfig = kubeconfig

    def run(
        self, *args: str, input: str | None = None, check: bool = True, timeout: float = 60
    ) -> subprocess.CompletedProcess[str]:
        """Run kubectl; with ``check`` a non-zero exit raises with stderr in the message."""
        result = subprocess.run(
            [str(self.binary), f"--kubeconfig={self.kubeconfig}", *args],
            input=input,
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
        )
        if check and result.returncode != 0:
            raise AssertionError(
                f"kubectl {' '.join(args)} exited {result.returncode}:\n{result.stderr}"
            )
        return result

    def __call__(self, *args: str, input: str | None = None) -> str:
        return self.run(*args, input=input).stdout

    def json(self, *args: str) -> Any:
        return json.loads(self.run(*args, "-o", "json").stdout)

    def apply(self, manifest: str, namespace: str | None = None) -> str:
        """``kubectl apply -f -`` of a YAML or JSON document."""
        extra = ["-n", namespace] if namespace else []
        return self("apply", *extra, "-f", "-", input=manifest)


def wait_until(
    probe: Callable[[], T | None],
    timeout: float = 60.0,
    interval: float = 0.25,
    message: str = "condition",
) -> T:
    """Poll ``probe`` until it returns something truthy; fail with ``message`` after ``timeout``."""
    deadline = time.monotonic() + timeout
    while True:
        value = probe()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout:g}s waiting for {message}")
        time.sleep(interval)


@pytest.fixture(scope="session")
def control_plane() -> Iterator[ControlPlane]:
    """The session's control plane (skipped or failed when the binaries are missing)."""
    try:
        binaries = Binaries.find()
    except BinariesMissing as exc:
        if os.environ.get("CATALOGSYNC_REQUIRE_K8S"):
            pytest.fail(f"CATALOGSYNC_REQUIRE_K8S is set but {exc}", pytrace=False)
        pytest.skip(f"Kubernetes control plane unavailable: {exc}")
    keep = bool(os.environ.get("CATALOGSYNC_KEEP_K8S"))
    with ControlPlane(binaries=binaries, keep_workdir=keep) as plane:
        yield plane


@pytest.fixture(scope="session")
def kubectl(control_plane: ControlPlane) -> Kubectl:
    return Kubectl(control_plane.binaries.kubectl, control_plane.kubeconfig)


@pytest.fixture(scope="session")
def kube_api(control_plane: ControlPlane) -> Iterator[Any]:
    """A synchronous ``kubernetes.client.ApiClient`` authenticated as cluster admin."""
    from kubernetes import config

    kubeconfig = str(control_plane.kubeconfig)
    client = config.new_client_from_config(config_file=kubeconfig)  # type: ignore[no-untyped-call]
    yield client
    client.close()


def _namespace_name(request: pytest.FixtureRequest) -> str:
    base = re.sub(r"[^a-z0-9]+", "-", request.node.name.lower()).strip("-")[:40].strip("-")
    return f"{base or 'test'}-{uuid.uuid4().hex[:6]}"


@pytest.fixture
def namespace(request: pytest.FixtureRequest, kubectl: Kubectl) -> Iterator[str]:
    """A fresh namespace; returns once its ``default`` ServiceAccount exists (pods need it)."""
    name = _namespace_name(request)
    kubectl("create", "namespace", name)
    wait_until(
        lambda: (
            kubectl.run("get", "serviceaccount", "default", "-n", name, check=False).returncode == 0
        ),
        timeout=30,
        message=f"ServiceAccount {name}/default",
    )
    yield name
    kubectl("delete", "namespace", name, "--wait=false", "--ignore-not-found")


@pytest.fixture
def kubelet(
    control_plane: ControlPlane, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Callable[..., KubeletThread]]:
    """``kubelet(*nodes, **options)`` starts a process kubelet; all are stopped after the test.

    ``nodes`` are ``NodeConfig`` objects or names (8 CPUs, 32Gi, 110 pods, no taints);
    ``options`` go to ``ProcessKubelet`` (``images``, ``base_env``, ``restart_backoff``, ...).
    """
    started: list[KubeletThread] = []

    def start(*nodes: NodeConfig | str, **options: Any) -> KubeletThread:
        configs: Sequence[NodeConfig] = [
            n if isinstance(n, NodeConfig) else NodeConfig(name=n) for n in nodes
        ] or [NodeConfig(name="node-1")]
        workdir = tmp_path_factory.mktemp("kubelet")
        harness = KubeletThread(control_plane.admin, workdir, **options)
        started.append(harness)
        return harness.start(configs)

    yield start
    errors = []
    for harness in reversed(started):
        errors += harness.errors
        harness.stop()
    assert not errors, f"process kubelet errors: {errors}"
