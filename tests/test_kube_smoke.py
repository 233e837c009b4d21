"""The test control plane and the process kubelet behave like a cluster where it matters to us.

Each test drives real controllers (Job, CronJob, garbage collector, scheduler, RBAC) through pods
that the process kubelet runs as local processes.
"""

from __future__ import annotations

import dataclasses
import json
import os
import subprocess
import sys
import textwrap
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

import psutil
import pytest

from catalogsync.dev.controlplane import ControlPlane, sweep_stale_workdirs
from catalogsync.dev.kubelet import KubeletThread, NodeConfig
from tests.plugins.kube import Kubectl, wait_until

pytestmark = pytest.mark.kube

IMAGE = "ghcr.io/example/catalogsync:test"
StartKubelet = Callable[..., KubeletThread]


def python_container(script: str, **extra: Any) -> dict[str, Any]:
    """A container of the project image running ``python -c script``."""
    return {
        "name": "main",
        "image": IMAGE,
        "command": ["python", "-c", textwrap.dedent(script)],
        **extra,
    }


def job_manifest(name: str, container: dict[str, Any], **spec: Any) -> dict[str, Any]:
    return {
        "apiVersion": "batch/v1",
        "kind": "Job",
        "metadata": {"name": name},
        "spec": {
            "template": {"spec": {"restartPolicy": "Never", "containers": [container]}},
            **spec,
        },
    }


def job_condition(kubectl: Kubectl, namespace: str, name: str, kind: str) -> Any:
    """The Job's condition ``kind`` if it is True, else None."""
    job = kubectl.json("get", "job", name, "-n", namespace)
    for condition in job.get("status", {}).get("conditions", []):
        if condition["type"] == kind and condition["status"] == "True":
            return condition
    return None


def job_pods(kubectl: Kubectl, namespace: str, job: str) -> list[Any]:
    selector = f"batch.kubernetes.io/job-name={job}"
    return list(kubectl.json("get", "pods", "-n", namespace, "-l", selector)["items"])


def create_pod(kubectl: Kubectl, namespace: str, name: str, spec: dict[str, Any]) -> None:
    body = {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": name}, "spec": spec}
    kubectl("create", "-n", namespace, "-f", "-", input=json.dumps(body))


def read_pod(kubectl: Kubectl, namespace: str, name: str) -> Any:
    return kubectl.json("get", "pod", name, "-n", namespace)


def terminated(pod: Any) -> Any:
    return pod["status"]["containerStatuses"][0]["state"]["terminated"]


CRD = {
    "apiVersion": "apiextensions.k8s.io/v1",
    "kind": "CustomResourceDefinition",
    "metadata": {"name": "widgets.smoke.catalogsync.io"},
    "spec": {
        "group": "smoke.catalogsync.io",
        "names": {"plural": "widgets", "singular": "widget", "kind": "Widget"},
        "scope": "Namespaced",
        "versions": [
            {
                "name": "v1",
                "served": True,
                "storage": True,
                "subresources": {"status": {}},
                "additionalPrinterColumns": [
                    {"name": "Colour", "type": "string", "jsonPath": ".spec.colour"},
                    {"name": "Phase", "type": "string", "jsonPath": ".status.phase"},
                    {"name": "Age", "type": "date", "jsonPath": ".metadata.creationTimestamp"},
                ],
                "schema": {
                    "openAPIV3Schema": {
                        "type": "object",
                        "properties": {
                            "spec": {
                                "type": "object",
                                "properties": {"colour": {"type": "string", "default": "red"}},
                            },
                            "status": {
                                "type": "object",
                                "properties": {"phase": {"type": "string"}},
                            },
                        },
                    }
                },
            }
        ],
    },
}


def test_crd_printer_columns(kubectl: Kubectl, namespace: str) -> None:
    kubectl.apply(json.dumps(CRD))
    kubectl("wait", "--for=condition=Established", "crd/widgets.smoke.catalogsync.io")
    widget = {
        "apiVersion": "smoke.catalogsync.io/v1",
        "kind": "Widget",
        "metadata": {"name": "w1"},
        "spec": {},
    }
    kubectl.apply(json.dumps(widget), namespace)
    kubectl(
        "patch",
        "widget",
        "w1",
        "-n",
        namespace,
        "--subresource=status",
        "--type=merge",
        "-p",
        '{"status": {"phase": "Ready"}}',
    )

    table = kubectl("get", "widgets", "-n", namespace).splitlines()

    assert table[0].split() == ["NAME", "COLOUR", "PHASE", "AGE"]
    assert table[1].split()[:3] == ["w1", "red", "Ready"]


def test_job_succeeds_with_kubelet_style_status(
    kubelet: StartKubelet, kubectl: Kubectl, namespace: str
) -> None:
    node = kubelet("node-a")
    kubectl("create", "secret", "generic", "creds", "-n", namespace, "--from-literal=key=s3cret")
    script = """
        import os
        print("hello from", os.environ["POD_NAME"], os.environ["NODE"], os.environ["SECRET"])
        with open(os.environ["CATALOGSYNC_TERMINATION_MESSAGE_PATH"], "w") as f:
            f.write('{"records": 3}')
    """
    env = [
        {"name": "POD_NAME", "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}}},
        {"name": "NODE", "valueFrom": {"fieldRef": {"fieldPath": "spec.nodeName"}}},
        {"name": "SECRET", "valueFrom": {"secretKeyRef": {"name": "creds", "key": "key"}}},
    ]
    kubectl.apply(json.dumps(job_manifest("ok", python_container(script, env=env))), namespace)

    wait_until(lambda: job_condition(kubectl, namespace, "ok", "Complete"), message="Complete")

    (pod,) = job_pods(kubectl, namespace, "ok")
    assert pod["status"]["phase"] == "Succeeded"
    assert pod["status"]["startTime"]
    state = terminated(pod)
    assert (state["exitCode"], state["reason"]) == (0, "Completed")
    assert json.loads(state["message"]) == {"records": 3}
    assert state["startedAt"] <= state["finishedAt"]
    name = pod["metadata"]["name"]
    assert node.logs(namespace, name).strip() == f"hello from {name} node-a s3cret"
    assert kubectl("logs", "-n", namespace, name).strip() == f"hello from {name} node-a s3cret"


def test_job_fails_after_backoff_limit(
    kubelet: StartKubelet, kubectl: Kubectl, namespace: str
) -> None:
    kubelet("node-a")
    job = job_manifest("flaky", python_container("raise SystemExit(1)"), backoffLimit=1)
    kubectl.apply(json.dumps(job), namespace)

    failed = wait_until(
        lambda: job_condition(kubectl, namespace, "flaky", "Failed"), timeout=90, message="Failed"
    )

    assert failed["reason"] == "BackoffLimitExceeded"
    pods = job_pods(kubectl, namespace, "flaky")
    assert len(pods) == 2
    for pod in pods:
        assert pod["status"]["phase"] == "Failed"
        assert (terminated(pod)["exitCode"], terminated(pod)["reason"]) == (1, "Error")


def test_pod_failure_policy_fails_job_at_once(
    kubelet: StartKubelet, kubectl: Kubectl, namespace: str
) -> None:
    kubelet("node-a")
    policy = {"rules": [{"action": "FailJob", "onExitCodes": {"operator": "In", "values": [2]}}]}
    job = job_manifest(
        "permanent",
        python_container("raise SystemExit(2)"),
        backoffLimit=5,
        podFailurePolicy=policy,
    )
    kubectl.apply(json.dumps(job), namespace)

    failed = wait_until(
        lambda: job_condition(kubectl, namespace, "permanent", "Failed"), message="Failed"
    )

    assert failed["reason"] == "PodFailurePolicy"
    assert len(job_pods(kubectl, namespace, "permanent")) == 1


def test_active_deadline_stops_the_running_pod(
    kubelet: StartKubelet, kubectl: Kubectl, namespace: str
) -> None:
    node = kubelet("node-a")
    job = job_manifest(
        "slow", python_container("import time; time.sleep(600)"), activeDeadlineSeconds=2
    )
    kubectl.apply(json.dumps(job), namespace)

    failed = wait_until(
        lambda: job_condition(kubectl, namespace, "slow", "Failed"), message="Failed"
    )

    assert failed["reason"] == "DeadlineExceeded"
    assert not node.running()


def test_pod_active_deadline_is_enforced_by_the_kubelet(
    kubelet: StartKubelet, kubectl: Kubectl, namespace: str
) -> None:
    node = kubelet("node-a")
    spec = {
        "restartPolicy": "Never",
        "activeDeadlineSeconds": 1,
        "terminationGracePeriodSeconds": 1,
        "containers": [python_container("import time; time.sleep(600)")],
    }
    create_pod(kubectl, namespace, "bounded", spec)

    status = wait_until(
        lambda: (s := read_pod(kubectl, namespace, "bounded")["status"])["phase"] == "Failed" and s,
        message="the pod to fail",
    )

    assert status["reason"] == "DeadlineExceeded"
    assert status["containerStatuses"][0]["state"]["terminated"]["exitCode"] == 143
    assert not node.running()


def test_cronjob_creates_a_job(kubelet: StartKubelet, kubectl: Kubectl, namespace: str) -> None:
    kubelet("node-a")
    cronjob = {
        "apiVersion": "batch/v1",
        "kind": "CronJob",
        "metadata": {"name": "tick"},
        "spec": {
            "schedule": "* * * * *",
            "jobTemplate": {"spec": job_manifest("tick", python_container("print(1)"))["spec"]},
        },
    }
    kubectl.apply(json.dumps(cronjob), namespace)

    def completed_job() -> str | None:
        jobs = kubectl.json("get", "jobs", "-n", namespace)["items"]
        done = [j["metadata"]["name"] for j in jobs if j["status"].get("succeeded")]
        return done[0] if done else None

    name = wait_until(completed_job, timeout=90, message="a Job from the CronJob")

    assert name.startswith("tick-")


def test_deleting_the_owner_collects_jobs_and_kills_pods(
    kubelet: StartKubelet, kubectl: Kubectl, namespace: str
) -> None:
    node = kubelet("node-a")
    kubectl("create", "configmap", "owner", "-n", namespace)
    owner = kubectl.json("get", "configmap", "owner", "-n", namespace)
    job = job_manifest("child", python_container("import time; time.sleep(600)"))
    job["metadata"]["ownerReferences"] = [
        {
            "apiVersion": "v1",
            "kind": "ConfigMap",
            "name": "owner",
            "uid": owner["metadata"]["uid"],
        }
    ]
    kubectl.apply(json.dumps(job), namespace)
    wait_until(node.running, message="the Job's process")

    kubectl("delete", "configmap", "owner", "-n", namespace)

    wait_until(lambda: not node.running(), message="the process to be killed")
    wait_until(lambda: not job_pods(kubectl, namespace, "child"), message="pods collected")
    wait_until(
        lambda: not kubectl.json("get", "jobs", "-n", namespace)["items"], message="Job collected"
    )


def test_service_account_without_permission_gets_403(
    kubelet: StartKubelet, kubectl: Kubectl, namespace: str
) -> None:
    kubelet("node-a")
    kubectl("create", "serviceaccount", "limited", "-n", namespace)
    kubectl(
        "create",
        "role",
        "read-configmaps",
        "--verb=get,list",
        "--resource=configmaps",
        "-n",
        namespace,
    )
    kubectl(
        "create",
        "rolebinding",
        "limited",
        "--role=read-configmaps",
        f"--serviceaccount={namespace}:limited",
        "-n",
        namespace,
    )
    script = """
        import os
        from kubernetes import client, config
        from kubernetes.client.rest import ApiException
        config.load_kube_config()
        api = client.CoreV1Api()
        namespace = os.environ["NS"]
        api.list_namespaced_config_map(namespace)
        try:
            api.list_namespaced_secret(namespace)
        except ApiException as exc:
            raise SystemExit(0 if exc.status == 403 else 10)
        raise SystemExit(11)
    """
    env = [{"name": "NS", "valueFrom": {"fieldRef": {"fieldPath": "metadata.namespace"}}}]
    create_pod(
        kubectl,
        namespace,
        "probe",
        {
            "serviceAccountName": "limited",
            "restartPolicy": "Never",
            "containers": [python_container(script, env=env)],
        },
    )

    def finished() -> Any:
        pod = read_pod(kubectl, namespace, "probe")
        return pod if pod["status"]["phase"] in ("Succeeded", "Failed") else None

    pod = wait_until(finished, message="the probe pod to finish")

    assert pod["status"]["phase"] == "Succeeded", terminated(pod)


def test_node_selector_and_toleration_pick_the_tainted_node(
    kubelet: StartKubelet, kubectl: Kubectl, namespace: str
) -> None:
    special = NodeConfig(
        name="node-special",
        labels={"pool": "special"},
        taints=[{"key": "dedicated", "value": "special", "effect": "NoSchedule"}],
    )
    kubelet(NodeConfig(name="node-plain"), special)
    for i in range(3):
        create_pod(
            kubectl,
            namespace,
            f"picky-{i}",
            {
                "restartPolicy": "Never",
                "nodeSelector": {"pool": "special"},
                "tolerations": [
                    {
                        "key": "dedicated",
                        "operator": "Equal",
                        "value": "special",
                        "effect": "NoSchedule",
                    }
                ],
                "containers": [python_container("pass")],
            },
        )
    create_pod(
        kubectl,
        namespace,
        "plain",
        {
            "restartPolicy": "Never",
            "containers": [python_container("pass")],
        },
    )

    def placements() -> dict[str, str] | None:
        pods = kubectl.json("get", "pods", "-n", namespace)["items"]
        done = {
            p["metadata"]["name"]: p["spec"]["nodeName"]
            for p in pods
            if p["status"]["phase"] == "Succeeded"
        }
        return done if len(done) == 4 else None

    nodes = wait_until(placements, message="all pods to run")

    assert nodes == {
        "picky-0": "node-special",
        "picky-1": "node-special",
        "picky-2": "node-special",
        "plain": "node-plain",
    }


def test_pod_larger_than_any_node_stays_pending(
    kubelet: StartKubelet, kubectl: Kubectl, namespace: str
) -> None:
    kubelet(NodeConfig(name="node-small", memory="4Gi"))
    resources = {"requests": {"memory": "8Gi"}}
    create_pod(
        kubectl,
        namespace,
        "huge",
        {
            "restartPolicy": "Never",
            "containers": [python_container("pass", resources=resources)],
        },
    )

    def unschedulable() -> Any:
        pod = read_pod(kubectl, namespace, "huge")
        conditions = {c["type"]: c for c in pod["status"].get("conditions", [])}
        scheduled = conditions.get("PodScheduled")
        return scheduled if scheduled and scheduled.get("reason") == "Unschedulable" else None

    condition = wait_until(unschedulable, message="PodScheduled=False/Unschedulable")

    assert condition["status"] == "False"
    assert "Insufficient memory" in condition["message"]
    assert read_pod(kubectl, namespace, "huge")["status"]["phase"] == "Pending"


def test_harness_refuses_foreign_images_and_reports_missing_secrets(
    kubelet: StartKubelet, kubectl: Kubectl, namespace: str
) -> None:
    kubelet("node-a")
    create_pod(
        kubectl,
        namespace,
        "foreign",
        {
            "restartPolicy": "Never",
            "containers": [{"name": "main", "image": "busybox:1.36", "command": ["true"]}],
        },
    )
    secret_env = [{"name": "X", "valueFrom": {"secretKeyRef": {"name": "absent", "key": "k"}}}]
    create_pod(
        kubectl,
        namespace,
        "no-secret",
        {
            "restartPolicy": "Never",
            "containers": [python_container("pass", env=secret_env)],
        },
    )

    def waiting(name: str) -> Any:
        statuses = read_pod(kubectl, namespace, name)["status"].get("containerStatuses", [])
        state = statuses[0]["state"].get("waiting") if statuses else None
        return state if state and state["reason"] != "ContainerCreating" else None

    foreign = wait_until(lambda: waiting("foreign"), message="foreign image refused")
    missing = wait_until(lambda: waiting("no-secret"), message="missing secret reported")

    assert foreign["reason"] == "ErrImagePull"
    assert "busybox:1.36" in foreign["message"]
    assert missing["reason"] == "CreateContainerConfigError"
    assert missing["message"] == 'secret "absent" not found'


def test_oom_kill_hook_reports_oomkilled(
    kubelet: StartKubelet, kubectl: Kubectl, namespace: str
) -> None:
    node = kubelet("node-a")
    job = job_manifest("hungry", python_container("import time; time.sleep(600)"), backoffLimit=0)
    kubectl.apply(json.dumps(job), namespace)
    wait_until(node.running, message="the Job's process")
    (pod,) = job_pods(kubectl, namespace, "hungry")

    node.oom_kill(namespace, pod["metadata"]["name"])

    wait_until(lambda: job_condition(kubectl, namespace, "hungry", "Failed"), message="Failed")
    state = terminated(read_pod(kubectl, namespace, pod["metadata"]["name"]))
    assert (state["exitCode"], state["reason"]) == (137, "OOMKilled")


def test_project_image_without_command_runs_the_console_script(
    kubelet: StartKubelet, kubectl: Kubectl, namespace: str
) -> None:
    node = kubelet("node-a")
    create_pod(
        kubectl,
        namespace,
        "cli",
        {
            "restartPolicy": "Never",
            "containers": [{"name": "main", "image": IMAGE, "args": ["--help"]}],
        },
    )

    wait_until(
        lambda: read_pod(kubectl, namespace, "cli")["status"]["phase"] == "Succeeded",
        message="catalogsync --help to succeed",
    )

    assert "usage: catalogsync" in node.logs(namespace, "cli")


def test_remove_node_kills_its_processes_silently(
    kubelet: StartKubelet, kubectl: Kubectl, namespace: str
) -> None:
    node = kubelet("node-a", "node-b")
    spec = {
        "restartPolicy": "Never",
        "nodeName": "node-b",
        "containers": [python_container("import time; time.sleep(600)")],
    }
    create_pod(kubectl, namespace, "doomed", spec)
    wait_until(node.running, message="the pod's process")

    node.remove_node("node-b")

    assert node.running() == []
    nodes = kubectl.json("get", "nodes")["items"]
    assert [n["metadata"]["name"] for n in nodes] == ["node-a"]
    assert read_pod(kubectl, namespace, "doomed")["status"]["phase"] == "Running"


def test_a_control_plane_that_cannot_start_leaves_nothing_running(
    control_plane: ControlPlane,
) -> None:
    broken = dataclasses.replace(
        control_plane.binaries, kube_apiserver=Path("/nonexistent/kube-apiserver")
    )
    plane = ControlPlane(binaries=broken)
    before = set(psutil.Process().children(recursive=True))

    with pytest.raises(FileNotFoundError):
        plane.start()  # etcd is up by the time the apiserver fails to exec

    assert set(psutil.Process().children(recursive=True)) - before == set()
    assert plane.workdir is None


def listening_ports(connections: Iterable[Any]) -> set[int]:
    return {int(c.laddr[1]) for c in connections if c.status == psutil.CONN_LISTEN}


def test_stop_leaves_no_process_port_or_directory(control_plane: ControlPlane) -> None:
    plane = ControlPlane(binaries=control_plane.binaries)
    with plane:
        workdir = plane.workdir
        processes = [psutil.Process(c.process.pid) for c in plane.components if c.process]
        ports = listening_ports(conn for p in processes for conn in p.net_connections("tcp"))
        assert len(processes) == 4
        assert ports

    assert workdir is not None
    assert not workdir.exists()
    assert not any(process.is_running() for process in processes)
    ours = {process.pid for process in psutil.Process().children(recursive=True)}
    held = listening_ports(c for c in psutil.net_connections("tcp") if c.pid in ours)
    assert ports.isdisjoint(held)


def test_env_from_config_maps_and_optional_references(
    kubelet: StartKubelet, kubectl: Kubectl, namespace: str
) -> None:
    node = kubelet("node-a")
    kubectl("create", "configmap", "settings", "-n", namespace, "--from-literal=MODE=fast")
    script = """
        import os
        print(os.environ["CFG_MODE"], os.environ["MODE"], "ABSENT" in os.environ)
    """
    container = python_container(
        script,
        envFrom=[
            {"configMapRef": {"name": "settings"}, "prefix": "CFG_"},
            {"secretRef": {"name": "missing", "optional": True}},
        ],
        env=[
            {"name": "MODE", "valueFrom": {"configMapKeyRef": {"name": "settings", "key": "MODE"}}},
            {
                "name": "ABSENT",
                "valueFrom": {"secretKeyRef": {"name": "missing", "key": "k", "optional": True}},
            },
        ],
    )
    create_pod(kubectl, namespace, "env", {"restartPolicy": "Never", "containers": [container]})

    wait_until(
        lambda: read_pod(kubectl, namespace, "env")["status"]["phase"] == "Succeeded",
        message="the pod to succeed",
    )

    assert node.logs(namespace, "env").split() == ["fast", "fast", "False"]


def test_a_killed_owner_takes_its_control_plane_along(control_plane: ControlPlane) -> None:
    """SIGKILL gives no chance to stop: the kernel kills the components, the next start sweeps."""
    script = textwrap.dedent(
        """
        import time
        from catalogsync.dev.controlplane import ControlPlane
        plane = ControlPlane()
        plane.start()
        print(plane.workdir, *(c.process.pid for c in plane.components), flush=True)
        time.sleep(600)
        """
    )
    env = {**os.environ, "CATALOGSYNC_K8S_BIN": str(control_plane.binaries.etcd.parent)}
    with subprocess.Popen(
        [sys.executable, "-c", script], stdout=subprocess.PIPE, text=True, env=env
    ) as owner:
        assert owner.stdout is not None
        workdir, *pids = owner.stdout.readline().split()
        components = [psutil.Process(int(pid)) for pid in pids]
        owner.kill()

    assert len(components) == 4
    wait_until(
        lambda: not any(p.is_running() and p.status() != "zombie" for p in components),
        timeout=30,
        message="the components to die with their owner",
    )
    assert Path(workdir).exists()
    sweep_stale_workdirs()
    assert not Path(workdir).exists()
    assert control_plane.workdir is not None
    assert control_plane.workdir.exists(), "a live owner's work directory stays"
