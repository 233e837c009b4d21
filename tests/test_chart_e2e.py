"""The chart end to end on a real control plane: CronJob → create-run → operator → Jobs → webhook.

Everything but the operator's Deployment is applied as rendered, into a namespace that enforces
the restricted Pod Security profile. The operator runs as a local process with exactly the
Deployment's arguments and environment (the chart's ConfigMap) and a token of the chart's operator
ServiceAccount, so it works with the chart's RBAC and nothing more; the process kubelet runs the
CronJob's creator pod (scheduler ServiceAccount) and the fetcher and maintainer Jobs (jobs
ServiceAccount) against the MediPim simulator, the storage server and PostgreSQL. Taking one verb
away from the operator's Role then makes exactly the step that needs it fail with 403.
"""

from __future__ import annotations

import asyncio
import json
import os
import re
import signal
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

from catalogsync.dev.controlplane import ControlPlane, write_kubeconfig
from catalogsync.dev.kubelet import KubeletThread, NodeConfig
from catalogsync.dev.processes import free_port
from catalogsync.dev.simulator import SimulatorServer
from catalogsync.dev.storage_server import StorageServer
from catalogsync.operator.settings import CPU_CLASS_LABEL, PERFORMANCE
from tests.chart import Helm, Manifest, documents, helm_binary, one
from tests.plugins.kube import Kubectl
from tests.polling import until

pytestmark = [pytest.mark.kube, pytest.mark.slow]

T = TypeVar("T")
RELEASE = "e2e"
FULLNAME = "e2e-catalogsync"
PRODUCTS = 2_000  # the medipim fixture's catalog, of which the active ones are synced


class OperatorProcess:
    """``catalogsync <Deployment args>`` with the Deployment's environment, logging to a file."""

    def __init__(self, argv: list[str], env: dict[str, str], log: Path) -> None:
        self.log = log
        with log.open("wb") as out:
            self.process = subprocess.Popen(
                argv, env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True
            )

    def output(self) -> str:
        return self.log.read_text(errors="replace")

    def stop(self) -> None:
        if self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGTERM)
            try:
                self.process.wait(timeout=20)
            except subprocess.TimeoutExpired:
                os.killpg(self.process.pid, signal.SIGKILL)
                self.process.wait()


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
    """The test's directory, and the operator processes to stop at the end."""

    path: Path
    operators: list[OperatorProcess]

    def start_operator(self, argv: list[str], env: dict[str, str]) -> OperatorProcess:
        operator = OperatorProcess(argv, env, self.path / f"operator-{len(self.operators)}.log")
        self.operators.append(operator)
        return operator


@pytest.fixture
def workdir(tmp_path: Path) -> Iterator[Workdir]:
    work = Workdir(tmp_path, [])
    yield work
    for operator in work.operators:
        operator.stop()
        # Shown by pytest only when the test failed ("Captured stdout teardown").
        print(f"--- {operator.log.name} (last 200 lines) ---")
        print("\n".join(operator.output().splitlines()[-200:]))


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


def token_kubeconfig(
    kubectl: Kubectl, plane: ControlPlane, namespace: str, account: str, path: Path
) -> Path:
    """A kubeconfig holding a TokenRequest token of ``account``: its RBAC, nothing more."""
    token = kubectl("create", "token", account, "-n", namespace, "--duration=2h").strip()
    return write_kubeconfig(
        path,
        plane.server,
        plane.admin.ca_file.read_bytes(),
        user=f"system:serviceaccount:{namespace}:{account}",
        token=token,
        namespace=namespace,
    )


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
    ns, kubectl = cluster.namespace, cluster.kubectl
    medipim, storage_server, pg_dsn = backends.medipim, backends.storage, backends.dsn
    for name, data in {
        "medipim-credentials": {"apiKeyId": medipim.key_id, "apiKeySecret": medipim.key_secret},
        "supabase-storage": {"serviceRoleKey": storage_server.service_key},
        "catalog-database": {"url": pg_dsn},
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
    await asyncio.to_thread(cluster.kubelet, plain, perf)

    # The operator, exactly as the Deployment would run it, with the operator ServiceAccount.
    (container,) = deployment["spec"]["template"]["spec"]["containers"]
    (env_from,) = container["envFrom"]
    config = one(rendered, "ConfigMap", env_from["configMapRef"]["name"])["data"]
    account = deployment["spec"]["template"]["spec"]["serviceAccountName"]
    health = f"http://127.0.0.1:{free_port()}/healthz"
    env = {k: v for k, v in os.environ.items() if not k.startswith(("CATALOGSYNC_", "KUBE"))}
    env |= config
    # The Deployment mounts the webhook Secret at this path; here the file is written directly.
    url_file = workdir.path / "webhook-url"
    url_file.write_text(backends.webhook_url)
    assert config["CATALOGSYNC_WEBHOOK_URL_FILE"].startswith("/etc/catalogsync/")
    env |= {
        "CATALOGSYNC_WEBHOOK_URL_FILE": str(url_file),
        "KUBECONFIG": str(
            token_kubeconfig(kubectl, cluster.plane, ns, account, workdir.path / "kc")
        ),
        "CATALOGSYNC_LIVENESS_ENDPOINT": health,  # the chart's 0.0.0.0:8080 may be taken here
        "CATALOGSYNC_METRICS_HOST": "127.0.0.1",
        "CATALOGSYNC_METRICS_PORT": str(free_port()),
    }
    # The API server learns of RoleBindings through a watch: start once the grant is in force, or
    # the lag would show up as spurious refusals in the operator's log.
    user = f"system:serviceaccount:{ns}:{account}"
    await until(lambda: can_i(kubectl, user, ns, "watch", "catalogsyncs.catalogsync.io"), "RBAC")
    catalogsync = str(Path(sys.executable).with_name("catalogsync"))
    operator = workdir.start_operator([catalogsync, *container["args"]], env)
    await until(lambda: healthy(health), "the operator's liveness endpoint", within=60)

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
