"""The chart end to end on a real control plane: CronJob → create-run → operator → Jobs → webhook.

The chart is applied as rendered, into a namespace that enforces the restricted Pod Security
profile; only the operator's health endpoint moves to a free loopback port (pods share the host's
network here). Every pod runs from the built image (scripts/build-image.sh), inside its root
filesystem, as the chart's uid with a read-only root, its volumes and a token of its
ServiceAccount (tests/image.py, catalogsync.dev.kubelet.sandbox): the operator Deployment's pod
(operator ServiceAccount, so it works with the chart's RBAC and nothing more), the CronJob's
creator pod (scheduler ServiceAccount) and the fetcher and maintainer Jobs (jobs ServiceAccount),
against the MediPim simulator, the storage server and PostgreSQL. Taking one verb
away from the operator's Role then makes exactly the step that needs it fail with 403.
"""

from __future__ import annotations

import asyncio
import json
import os
import re
import subprocess
import sys
import urllib.request
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import asyncpg
import pytest
from aiohttp import web

from catalogsync.dev.controlplane import ControlPlane
from catalogsync.dev.kubelet import KubeletThread, NodeConfig
from catalogsync.dev.kubelet.sandbox import ImageRoot, ImageSandbox
from catalogsync.dev.processes import free_port
from catalogsync.dev.simulator import SimulatorServer
from catalogsync.dev.storage_server import StorageServer
from catalogsync.operator.settings import CPU_CLASS_LABEL, PERFORMANCE
from tests.chart import Helm, Manifest, documents, helm_binary, one
from tests.image import IMAGE, built_image_dir
from tests.plugins.kube import Kubectl
from tests.polling import until

pytestmark = [pytest.mark.kube, pytest.mark.slow]

T = TypeVar("T")
RELEASE = "e2e"
FULLNAME = "e2e-catalogsync"
PRODUCTS = 2_000  # the medipim fixture's catalog, of which the active ones are synced


@dataclass
class OperatorPod:
    """The operator Deployment's pod on the process kubelet, and its log."""

    kubelet: KubeletThread
    kubectl: Kubectl
    namespace: str

    def name(self) -> str | None:
        pods = self.kubectl.json(
            "get", "pods", "-n", self.namespace, "-l", "app.kubernetes.io/component=operator"
        )["items"]
        return str(pods[0]["metadata"]["name"]) if pods else None

    def output(self) -> str:
        name = self.name()
        return self.kubelet.logs(self.namespace, name) if name else ""

    def state(self) -> str:
        """The pod's container states, for a failure report."""
        pods = self.kubectl.json(
            "get", "pods", "-n", self.namespace, "-l", "app.kubernetes.io/component=operator"
        )["items"]
        return json.dumps([p.get("status", {}).get("containerStatuses") for p in pods], indent=1)


@dataclass
class Cluster:
    plane: ControlPlane
    kubectl: Kubectl
    kubelet: Callable[..., KubeletThread]
    namespace: str


@pytest.fixture
def cluster(
    control_plane: ControlPlane,
    kubectl: Kubectl,
    kubelet: Callable[..., KubeletThread],
    namespace: str,
) -> Cluster:
    kubectl("label", "namespace", namespace, "pod-security.kubernetes.io/enforce=restricted")
    return Cluster(control_plane, kubectl, kubelet, namespace)


@dataclass
class Workdir:
    """The test's directory, and the operator whose log to show when the test fails."""

    path: Path
    operators: list[OperatorPod]


@pytest.fixture
def workdir(tmp_path: Path) -> Iterator[Workdir]:
    work = Workdir(tmp_path, [])
    yield work
    for operator in work.operators:
        # Shown by pytest only when the test failed ("Captured stdout teardown").
        print(f"--- operator pod {operator.name()} (last 200 lines) ---")
        print("\n".join(operator.output().splitlines()[-200:]))
        print(operator.state())


@pytest.fixture
async def webhook() -> AsyncIterator[tuple[str, list[Any]]]:
    """A local webhook receiver: its URL and the JSON bodies it was sent."""
    received: list[Any] = []

    async def hook(request: web.Request) -> web.Response:
        received.append(await request.json())
        return web.Response(status=204)

    app = web.Application()
    app.router.add_post("/hook", hook)
    runner = web.AppRunner(app)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", 0).start()
    yield f"http://127.0.0.1:{runner.addresses[0][1]}/hook", received
    await runner.cleanup()


@dataclass
class Backends:
    """What a run talks to: MediPim, storage, PostgreSQL, and the webhook receiver."""

    medipim: SimulatorServer
    storage: StorageServer
    dsn: str
    webhook_url: str
    notices: list[Any]


@pytest.fixture
def backends(
    medipim: SimulatorServer,
    storage_server: StorageServer,
    pg_dsn: str,
    webhook: tuple[str, list[Any]],
) -> Backends:
    return Backends(medipim, storage_server, pg_dsn, *webhook)


def chart_values(medipim: SimulatorServer, storage: StorageServer) -> dict[str, Any]:
    return {
        "defaults": {"medipim": {"url": medipim.url}, "storage": {"url": storage.url}},
        "schedule": {"schedule": "* * * * *", "startingDeadlineSeconds": 120},
        "operator": {"resyncIntervalSeconds": 5},
        "jobs": {"progressIntervalSeconds": 1},
        "notifications": {"webhook": {"secretName": "sync-webhook"}},
        # Small enough for the test node; placement stays the chart's default (performance CPUs).
        "maintainer": {
            "resources": {"requests": {"cpu": "500m", "memory": "1Gi"}, "limits": {"memory": "1Gi"}}
        },
    }


def runs(kubectl: Kubectl, namespace: str, selector: str) -> list[Manifest]:
    items: list[Manifest] = kubectl.json("get", "catalogsyncs", "-n", namespace, "-l", selector)[
        "items"
    ]
    return items


def can_i(kubectl: Kubectl, user: str, namespace: str, verb: str, resource: str) -> bool:
    answer = kubectl.run(
        "auth", "can-i", verb, resource, "--as", user, "-n", namespace, check=False
    )
    return answer.stdout.strip() == "yes"


def plugin(kubectl: Kubectl, *args: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    """``kubectl catalogsync ...``: the package's ``kubectl-catalogsync``, as kubectl runs it."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("CATALOGSYNC_", "KUBE"))}
    return subprocess.run(
        [str(Path(sys.executable).with_name("kubectl-catalogsync")),
         f"--kubeconfig={kubectl.kubeconfig}", *args],
        env={**env, "COLUMNS": "200"},
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )  # fmt: skip


def healthy(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=2) as response:
            return bool(response.status == 200)
    except OSError:
        return False


async def test_scheduled_run_completes_under_the_charts_rbac_and_pod_security(
    cluster: Cluster, backends: Backends, workdir: Workdir
) -> None:
    image = built_image_dir()
    ns, kubectl = cluster.namespace, cluster.kubectl
    medipim, storage_server, pg_dsn = backends.medipim, backends.storage, backends.dsn
    for name, data in {
        "medipim-credentials": {"apiKeyId": medipim.key_id, "apiKeySecret": medipim.key_secret},
        "supabase-storage": {"serviceRoleKey": storage_server.service_key},
        "catalog-database": {"url": pg_dsn},
        "sync-webhook": {"url": backends.webhook_url},
    }.items():
        literals = [f"--from-literal={key}={value}" for key, value in data.items()]
        kubectl("create", "secret", "generic", name, "-n", ns, *literals)

    helm = Helm(helm_binary(), workdir.path / "helm")
    rendered = documents(
        helm.template_text(chart_values(medipim, storage_server), namespace=ns, release=RELEASE)
    )
    deployment = one(rendered, "Deployment", "-operator")
    applied = [doc for doc in rendered if doc is not deployment]
    kubectl("apply", "-f", "-", input="\n---\n".join(json.dumps(doc) for doc in applied))
    kubectl("wait", "--for=condition=Established", "crd/catalogsyncs.catalogsync.io")

    perf = NodeConfig(
        name=f"perf-{ns}"[:63],
        labels={CPU_CLASS_LABEL: PERFORMANCE},
        taints=[{"key": CPU_CLASS_LABEL, "value": PERFORMANCE, "effect": "NoSchedule"}],
    )
    plain = NodeConfig(name=f"plain-{ns}"[:63])
    sandbox = ImageSandbox(ImageRoot.load(image))
    harness = await asyncio.to_thread(cluster.kubelet, plain, perf, sandbox=sandbox)

    # The operator's Deployment as rendered, its health endpoint on a free loopback port.
    pod_spec = deployment["spec"]["template"]["spec"]
    (container,) = pod_spec["containers"]
    (env_from,) = container["envFrom"]
    config = one(rendered, "ConfigMap", env_from["configMapRef"]["name"])["data"]
    assert config["CATALOGSYNC_WEBHOOK_URL_FILE"].startswith("/etc/catalogsync/webhook/")
    assert container["image"] == f"{IMAGE}:{config['CATALOGSYNC_IMAGE'].rsplit(':', 1)[1]}"
    health = f"http://127.0.0.1:{free_port()}/healthz"
    container["env"] = [
        *(container.get("env") or []),
        # The chart's 0.0.0.0:8080 and :9110 may be taken here: pods share the host's network.
        {"name": "CATALOGSYNC_LIVENESS_ENDPOINT", "value": health},
        {"name": "CATALOGSYNC_METRICS_HOST", "value": "127.0.0.1"},
        {"name": "CATALOGSYNC_METRICS_PORT", "value": str(free_port())},
    ]
    account = pod_spec["serviceAccountName"]
    # The API server learns of RoleBindings through a watch: start once the grant is in force, or
    # the lag would show up as spurious refusals in the operator's log.
    user = f"system:serviceaccount:{ns}:{account}"
    await until(lambda: can_i(kubectl, user, ns, "watch", "catalogsyncs.catalogsync.io"), "RBAC")
    kubectl("apply", "-f", "-", input=json.dumps(deployment))
    operator = OperatorPod(harness, kubectl, ns)
    workdir.operators.append(operator)
    await until(lambda: healthy(health), "the operator's liveness endpoint", within=120)

    # The real CronJob controller fires on the next minute; the creator pod makes the run.
    scheduled = await until(
        lambda: runs(kubectl, ns, "catalogsync.io/trigger=scheduled"),
        "a scheduled CatalogSync",
        within=150,
    )
    kubectl(
        "patch", "cronjob", FULLNAME, "-n", ns, "--type=merge", "-p", '{"spec":{"suspend":true}}'
    )
    run = scheduled[0]
    name = run["metadata"]["name"]
    assert re.fullmatch(r"medipim-au-\d{8}-\d{4}", name), name
    assert run["metadata"]["labels"]["catalogsync.io/schedule"] == FULLNAME
    assert run["metadata"]["annotations"]["catalogsync.io/scheduled-time"].endswith(":00Z")

    def finished() -> Manifest | None:
        body: Manifest = kubectl.json("get", "catalogsync", name, "-n", ns)
        phase = body.get("status", {}).get("phase")
        return body if phase in ("Succeeded", "Failed", "Cancelled", "Skipped") else None

    done = await until(finished, f"run {name} to finish", within=420, interval=2)
    status = done["status"]
    assert status["phase"] == "Succeeded", json.dumps(status, indent=2)
    records = status["fetcher"]["records"]
    assert 0 < records < PRODUCTS, "the default filter keeps the active products only"
    assert status["fetcher"]["total"] == records
    assert status["maintainer"]["inserted"] == records
    assert status["maintainer"]["invalid"] == 0

    connection = await asyncpg.connect(pg_dsn)
    try:
        assert await connection.fetchval("select count(*) from public.products") == records
    finally:
        await connection.close()

    # Every pod was admitted under the restricted profile and ran where the chart says.
    pods = kubectl.json("get", "pods", "-n", ns)["items"]
    by_component = {p["metadata"]["labels"].get("app.kubernetes.io/component"): p for p in pods}
    assert {"operator", "scheduler", "fetcher", "maintainer"} <= set(by_component)
    assert all(c["image"].startswith(f"{IMAGE}:") for p in pods for c in p["spec"]["containers"])
    assert by_component["scheduler"]["spec"]["serviceAccountName"] == f"{FULLNAME}-scheduler"
    assert by_component["scheduler"]["status"]["phase"] == "Succeeded"
    assert by_component["fetcher"]["spec"]["serviceAccountName"] == f"{FULLNAME}-job"
    assert by_component["maintainer"]["spec"]["nodeName"] == perf.name
    assert by_component["fetcher"]["spec"]["nodeName"] == plain.name
    events = kubectl.json("get", "events", "-n", ns)["items"]
    assert not [e for e in events if e["reason"] == "FailedCreate"], "a pod was refused"
    reasons = {e["reason"] for e in events if e["involvedObject"]["name"] == name}
    assert {"FetcherJobCreated", "MaintainerJobCreated", "SyncSucceeded"} <= reasons

    # The optional webhook got the outcome, sent in the background by the operator.
    notices = await until(lambda: list(backends.notices), "the webhook notice")
    assert [(n["event"], n["run"]["name"]) for n in notices] == [("SyncSucceeded", name)]
    assert notices[0]["maintainer"]["inserted"] == records
    assert notices[0]["run"]["trigger"] == "scheduled"

    # The namespaced Role covered everything the run needed. (kopf's optional cluster-scope
    # scanning of CRDs and namespaces is refused by design: no ClusterRole in this mode.)
    refused_here = [
        line
        for line in operator.output().splitlines()
        if "forbidden" in line.lower() and "at the cluster scope" not in line
    ]
    assert refused_here == []

    # Without `create jobs` the operator's next run stops exactly there, with a 403.
    role = kubectl.json("get", "role", f"{FULLNAME}-operator", "-n", ns)
    for rule in role["rules"]:
        if rule["apiGroups"] == ["batch"]:
            rule["verbs"].remove("create")
    kubectl("apply", "-f", "-", input=json.dumps(role))
    await until(lambda: not can_i(kubectl, user, ns, "create", "jobs.batch"), "the revocation")
    kubectl("create", "job", f"--from=cronjob/{FULLNAME}", "manual-1", "-n", ns)
    manual = await until(
        lambda: runs(kubectl, ns, "catalogsync.io/trigger=manual"), "the manual CatalogSync"
    )
    manual_name = manual[0]["metadata"]["name"]
    assert manual_name.startswith("medipim-au-manual-")

    def refused() -> bool:
        return any(
            "jobs.batch is forbidden" in line and user in line and "cannot create resource" in line
            for line in operator.output().splitlines()
        )

    await until(refused, "the operator's 403 on creating the Job")
    jobs = kubectl.json("get", "jobs", "-n", ns)["items"]
    assert f"{manual_name}-fetcher" not in {j["metadata"]["name"] for j in jobs}

    def ended() -> Manifest | None:
        (run,) = runs(kubectl, ns, "catalogsync.io/trigger=manual")
        return run if run.get("status", {}).get("phase") == "Failed" else None

    # ... and the run says so rather than waiting for ever.
    failure = (await until(ended, "the refused run to fail"))["status"]["failure"]
    assert (failure["stage"], failure["reason"]) == ("fetcher", "JobRejected")
    assert "forbidden" in failure["message"]

    # kubectl catalogsync status: the success, the refused run, the suspended schedule.
    shown = await asyncio.to_thread(plugin, kubectl, "-n", ns, "status")
    assert shown.returncode == 0, shown.stderr
    rows = [line.strip() for line in shown.stdout.splitlines()]
    lines = {
        label: next(row for row in rows if row.startswith(label))
        for label in ("last success", "last failure", "running", "next run")
    }
    assert f"catalog medipim-au (namespace {ns})" in shown.stdout
    assert name in lines["last success"]
    assert f"{records} inserted" in lines["last success"]
    assert manual_name in lines["last failure"]
    assert "fetcher JobRejected" in lines["last failure"]
    assert lines["running"].split() == ["running", "none"]
    assert f"{FULLNAME} suspended" in lines["next run"]

    # kubectl catalogsync run --wait: with create jobs back, a run from the schedule's template.
    role = kubectl.json("get", "role", f"{FULLNAME}-operator", "-n", ns)
    for rule in role["rules"]:
        if rule["apiGroups"] == ["batch"]:
            rule["verbs"].append("create")
    kubectl("apply", "-f", "-", input=json.dumps(role))
    await until(lambda: can_i(kubectl, user, ns, "create", "jobs.batch"), "the grant")
    waited = await asyncio.to_thread(
        plugin, kubectl, "-n", ns, "run", "--wait", "--timeout=400", timeout=420
    )
    assert waited.returncode == 0, waited.stdout + waited.stderr
    started = re.search(rf"started run {ns}/(medipim-au-manual-\S+)", waited.stdout)
    assert started, waited.stdout
    again = kubectl.json("get", "catalogsync", started.group(1), "-n", ns)
    assert again["status"]["phase"] == "Succeeded"
    assert again["metadata"]["labels"]["catalogsync.io/schedule"] == FULLNAME
    assert f"{started.group(1)} Succeeded in {again['status']['duration']}" in waited.stdout
    assert f"0 inserted, 0 updated, {records} skipped" in waited.stdout
    assert "100%" in waited.stdout


async def test_a_creator_refused_by_the_api_server_fails_its_job_at_once(
    cluster: Cluster, workdir: Workdir
) -> None:
    """A template that got past the chart (edited by hand, or an older CRD) is refused with its
    field named: one pod, a Job failed by its podFailurePolicy, the reason in the pod's status."""
    ns, kubectl = cluster.namespace, cluster.kubectl
    helm = Helm(helm_binary(), workdir.path / "helm")
    rendered = documents(
        helm.template_text({"schedule": {"suspend": True}}, namespace=ns, release=RELEASE)
    )
    applied = [doc for doc in rendered if doc["kind"] != "Deployment"]
    kubectl("apply", "-f", "-", input="\n---\n".join(json.dumps(doc) for doc in applied))
    kubectl("wait", "--for=condition=Established", "crd/catalogsyncs.catalogsync.io")
    template = one(rendered, "ConfigMap", "-run-template")
    template["data"]["run.yaml"] = (
        "apiVersion: catalogsync.io/v1alpha1\nkind: CatalogSync\n"
        "spec: {maintainer: {chunksize: 500}}\n"
    )
    kubectl("apply", "-f", "-", input=json.dumps(template))
    await asyncio.to_thread(cluster.kubelet, NodeConfig(name=f"plain-{ns}"[:63]))
    kubectl("create", "job", f"--from=cronjob/{FULLNAME}", "refused-1", "-n", ns)

    def failed() -> Manifest | None:
        job: Manifest = kubectl.json("get", "job", "refused-1", "-n", ns)
        conditions = job.get("status", {}).get("conditions") or []
        done = [c for c in conditions if c["type"] == "Failed" and c["status"] == "True"]
        return done[0] if done else None

    condition = await until(failed, "the creator Job to fail", within=120)
    assert condition["reason"] == "PodFailurePolicy"
    assert "exit code 2" in condition["message"]
    pods = kubectl.json("get", "pods", "-n", ns, "-l", "batch.kubernetes.io/job-name=refused-1")
    assert len(pods["items"]) == 1, "no retries of a permanent refusal"
    (status,) = pods["items"][0]["status"]["containerStatuses"]
    line = json.loads(status["state"]["terminated"]["message"])  # the JSON log line
    assert line["reason"] == "InvalidTemplate"
    assert 'unknown field "spec.maintainer.chunksize"' in line["message"]
    assert kubectl.json("get", "catalogsyncs", "-n", ns)["items"] == []
