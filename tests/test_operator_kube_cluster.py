"""What the operator relies on from the real API server, with no operator running.

The reconciler's tests run on an in-memory cluster that honours the uid of every write; these
prove the API server does the same for the requests :class:`KubeCluster` sends: a status patch
or a delete made for one run never lands on a run created again under its name. And a new run
reads ``Pending`` before any operator has seen it (the CRD's default for ``status``).
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from catalogsync.dev.controlplane import ControlPlane
from catalogsync.operator.runtime import KubeCluster
from tests.plugins.kube import Kubectl

pytestmark = pytest.mark.kube

CRD_FILE = Path(__file__).parent.parent / "deploy" / "crds" / "catalogsync.io_catalogsyncs.yaml"


@pytest.fixture
async def cluster(
    control_plane: ControlPlane, kubectl: Kubectl, monkeypatch: pytest.MonkeyPatch
) -> AsyncIterator[KubeCluster]:
    kubectl("apply", "-f", str(CRD_FILE))
    kubectl("wait", "--for=condition=Established", "crd/catalogsyncs.catalogsync.io",
            "--timeout=60s")  # fmt: skip
    monkeypatch.setenv("KUBECONFIG", str(control_plane.kubeconfig))
    kube = KubeCluster()
    await kube.open()
    yield kube
    await kube.close()


def create(kubectl: Kubectl, namespace: str, name: str) -> dict[str, Any]:
    manifest = {"apiVersion": "catalogsync.io/v1alpha1", "kind": "CatalogSync",
                "metadata": {"name": name}, "spec": {}}  # fmt: skip
    kubectl.apply(json.dumps(manifest), namespace)
    body: dict[str, Any] = kubectl.json("get", "csync", name, "-n", namespace)
    return body


async def test_status_patch_and_delete_land_only_on_the_run_they_were_made_for(
    cluster: KubeCluster, kubectl: Kubectl, namespace: str
) -> None:
    first = create(kubectl, namespace, "guarded")["metadata"]["uid"]
    assert await cluster.patch_run_status(namespace, "guarded", {"message": "one"}, first)
    assert (await cluster.get_run(namespace, "guarded") or {})["status"]["message"] == "one"

    kubectl("delete", "csync", "guarded", "-n", namespace)
    assert not await cluster.patch_run_status(namespace, "guarded", {"message": "x"}, first)
    second = create(kubectl, namespace, "guarded")["metadata"]["uid"]
    assert second != first
    assert not await cluster.patch_run_status(namespace, "guarded", {"message": "x"}, first)
    assert not await cluster.delete_run(namespace, "guarded", first)
    again = await cluster.get_run(namespace, "guarded")
    assert again is not None, "the new run under the old name survives"
    assert (again.get("status") or {}).get("message") != "x"

    assert await cluster.delete_run(namespace, "guarded", second)
    assert await cluster.get_run(namespace, "guarded") is None
    assert not await cluster.delete_run(namespace, "guarded", second)


async def test_a_job_delete_with_another_uid_leaves_the_job(
    cluster: KubeCluster, kubectl: Kubectl, namespace: str
) -> None:
    job = {"apiVersion": "batch/v1", "kind": "Job", "metadata": {"name": "kept"},
           "spec": {"suspend": True, "template": {"spec": {"restartPolicy": "Never",
                    "containers": [{"name": "c", "image": "none"}]}}}}  # fmt: skip
    kubectl.apply(json.dumps(job), namespace)
    uid = kubectl.json("get", "job", "kept", "-n", namespace)["metadata"]["uid"]
    await cluster.delete_job(namespace, "kept", "not-" + uid)
    assert kubectl.json("get", "job", "kept", "-n", namespace)["metadata"]["uid"] == uid
    await cluster.delete_job(namespace, "kept", uid)
    gone = kubectl.run("get", "job", "kept", "-n", namespace, check=False)
    assert gone.returncode != 0 or json.loads(gone.stdout or "{}").get("metadata", {}).get(
        "deletionTimestamp"
    )


async def test_a_new_run_is_pending_before_any_operator_has_seen_it(
    cluster: KubeCluster, kubectl: Kubectl, namespace: str
) -> None:
    body = create(kubectl, namespace, "unseen")
    assert body["status"]["phase"] == "Pending"
    assert "waiting for the catalogsync operator" in body["status"]["message"]
    table = kubectl("get", "csync", "unseen", "-n", namespace)
    assert "Pending" in table.splitlines()[1]
    uid = body["metadata"]["uid"]
    assert await cluster.patch_run_status(namespace, "unseen", {"phase": "Fetching"}, uid)
    status = (await cluster.get_run(namespace, "unseen") or {})["status"]
    assert status["phase"] == "Fetching"
