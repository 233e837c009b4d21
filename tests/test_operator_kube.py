"""The operator on a real control plane: real Jobs, Pods, scheduler, garbage collector and RBAC.

The operator runs as a subprocess (``catalogsync operator``) with the admin kubeconfig, so a test
can kill and restart it; its Jobs' pods run the real ``catalogsync fetch`` / ``maintain`` under the
process kubelet, against the MediPim simulator, the storage test server and PostgreSQL.
"""

from __future__ import annotations

import asyncio
import base64
import datetime as dt
import functools
import json
import os
import signal
import subprocess
import sys
import urllib.request
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path
from typing import Any, TypeVar

import asyncpg
import pytest
import yaml
from prometheus_client.parser import text_string_to_metric_families

from catalogsync.dev.controlplane import ControlPlane, write_kubeconfig
from catalogsync.dev.kubelet import KubeletThread, NodeConfig
from catalogsync.dev.processes import free_port
from catalogsync.dev.simulator import Catalog, Mutation, SimulatorServer
from catalogsync.dev.storage_server import StorageServer
from catalogsync.operator.settings import CPU_CLASS_LABEL, PERFORMANCE
from tests import maintainer_data as data
from tests.plugins.kube import Kubectl
from tests.plugins.medipim import MedipimFactory
from tests.polling import until

pytestmark = [pytest.mark.kube, pytest.mark.slow]

CRD_FILE = Path(__file__).parent.parent / "deploy" / "crds" / "catalogsync.io_catalogsyncs.yaml"
KEY_ID = "keyid-5c1d0e7a"
KEY_SECRET = "medipim-secret-3f9a1b7c5d"
DB_PASSWORD = "db-password-8e2b6c4a"
StartKubelet = Callable[..., KubeletThread]
T = TypeVar("T")

JOB_ROLE = """
apiVersion: v1
kind: ServiceAccount
metadata: {name: catalogsync-job}
---
apiVersion: rbac.authorization.k8s.io/v1
kind: Role
metadata: {name: catalogsync-job}
rules:
  - {apiGroups: [catalogsync.io], resources: [catalogsyncs], verbs: [get]}
  - {apiGroups: [catalogsync.io], resources: [catalogsyncs/status], verbs: [get, patch]}
---
apiVersion: rbac.authorization.k8s.io/v1
kind: RoleBinding
metadata: {name: catalogsync-job}
roleRef: {apiGroup: rbac.authorization.k8s.io, kind: Role, name: catalogsync-job}
subjects: [{kind: ServiceAccount, name: catalogsync-job}]
"""


class Operator:
    """``catalogsync operator`` as a child process that a test can kill and start again."""

    def __init__(self, namespace: str, env: dict[str, str], log_dir: Path) -> None:
        self.namespace = namespace
        self.env = env
        self.log_dir = log_dir
        self.process: subprocess.Popen[bytes] | None = None
        self.starts = 0
        self.liveness = env["CATALOGSYNC_LIVENESS_ENDPOINT"]
        self.metrics_url = f"http://127.0.0.1:{env['CATALOGSYNC_METRICS_PORT']}/metrics"

    def start(self) -> Operator:
        self.starts += 1
        log = (self.log_dir / f"operator-{self.starts}.log").open("wb")
        self.process = subprocess.Popen(
            [sys.executable, "-m", "catalogsync", "operator", "--namespace", self.namespace],
            env=self.env,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        log.close()
        return self

    def kill(self) -> None:
        """SIGKILL: no cleanup, like a node loss or an OOM kill of the operator."""
        if self.process is not None:
            os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait()
            self.process = None

    def stop(self) -> None:
        if self.process is None:
            return
        os.killpg(self.process.pid, signal.SIGTERM)
        try:
            self.process.wait(15)
        except subprocess.TimeoutExpired:
            self.kill()
        self.process = None

    def logs(self) -> str:
        return "".join(
            path.read_text(errors="replace") for path in sorted(self.log_dir.glob("operator-*"))
        )

    def metrics(self) -> dict[tuple[str, frozenset[tuple[str, str]]], float] | None:
        """A scrape of the operator's Prometheus endpoint (``(name, labels) -> value``) once its
        view holds a succeeded run; None before."""
        try:
            with urllib.request.urlopen(self.metrics_url, timeout=5) as response:
                text = response.read().decode()
        except OSError:
            return None
        if "catalogsync_last_success_timestamp_seconds{" not in text:
            return None
        return {
            (sample.name, frozenset(sample.labels.items())): sample.value
            for family in text_string_to_metric_families(text)
            for sample in family.samples
        }

    def healthy(self) -> bool:
        try:
            with urllib.request.urlopen(self.liveness, timeout=2) as response:
                return bool(response.status == 200)
        except OSError:
            return False


@pytest.fixture(scope="session")
def crd(kubectl: Kubectl) -> None:
    kubectl("apply", "-f", str(CRD_FILE))
    kubectl("wait", "--for=condition=Established", "crd/catalogsyncs.catalogsync.io",
            "--timeout=60s")  # fmt: skip


@pytest.fixture
def nodes(kubelet: StartKubelet) -> KubeletThread:
    """A standard node and a performance node that only tolerating pods may use."""
    performance = NodeConfig(
        name="performance",
        memory="16Gi",
        labels={CPU_CLASS_LABEL: PERFORMANCE},
        taints=[{"key": CPU_CLASS_LABEL, "value": PERFORMANCE, "effect": "NoSchedule"}],
    )
    return kubelet(NodeConfig(name="standard", memory="16Gi"), performance)


def secrets_manifest(medipim: SimulatorServer, storage: StorageServer, dsn: str) -> str:
    user, rest = dsn.split("://", 1)[1].split("@", 1)
    database_url = f"postgresql://{user}:{DB_PASSWORD}@{rest}"
    documents = [
        {"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "medipim-credentials"},
         "stringData": {"apiKeyId": medipim.key_id, "apiKeySecret": medipim.key_secret}},
        {"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "supabase-storage"},
         "stringData": {"serviceRoleKey": storage.service_key}},
        {"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "catalog-database"},
         "stringData": {"url": database_url}},
    ]  # fmt: skip
    return yaml.safe_dump_all(documents)


class Cluster:
    """One test's namespace with everything a run needs, and helpers to look at it."""

    def __init__(
        self,
        kubectl: Kubectl,
        namespace: str,
        nodes: KubeletThread,
        storage: StorageServer,
        dsn: str,
    ) -> None:
        self.kubectl = kubectl
        self.namespace = namespace
        self.nodes = nodes
        self.storage = storage
        self.dsn = dsn
        self.operators: list[Operator] = []

    def operator(self, env: dict[str, str], log_dir: Path) -> Operator:
        operator = Operator(self.namespace, env, log_dir)
        self.operators.append(operator)
        return operator.start()

    def create_run(self, name: str, spec: dict[str, Any] | None = None) -> None:
        manifest = {"apiVersion": "catalogsync.io/v1alpha1", "kind": "CatalogSync",
                    "metadata": {"name": name}, "spec": spec or {}}  # fmt: skip
        self.kubectl.apply(json.dumps(manifest), self.namespace)

    def run(self, name: str) -> dict[str, Any]:
        result = self.kubectl.run("get", "csync", name, "-n", self.namespace, "-o", "json",
                                  check=False)  # fmt: skip
        return json.loads(result.stdout) if result.returncode == 0 else {}

    def status(self, name: str) -> dict[str, Any]:
        status: dict[str, Any] = self.run(name).get("status") or {}
        return status

    def phase_is(self, name: str, *phases: str) -> dict[str, Any] | None:
        status = self.status(name)
        return status if status.get("phase") in phases else None

    def items(self, kind: str, selector: str | None = None) -> list[dict[str, Any]]:
        args = ["get", kind, "-n", self.namespace]
        if selector:
            args += ["-l", selector]
        return list(self.kubectl.json(*args)["items"])

    def events(self, name: str | None = None) -> list[dict[str, Any]]:
        events = self.items("events")
        if name is not None:
            events = [e for e in events if e["involvedObject"]["name"] == name]
        return events

    def event_reasons(self, name: str) -> list[str]:
        return [e["reason"] for e in self.events(name)]

    def table(self, *extra: str) -> str:
        return self.kubectl("get", "catalogsyncs", "-n", self.namespace, *extra)


@pytest.fixture
async def cluster(
    *,
    crd: None,
    kubectl: Kubectl,
    namespace: str,
    nodes: KubeletThread,
    storage_server: StorageServer,
    pg_dsn: str,
) -> AsyncIterator[Cluster]:
    kubectl.apply(JOB_ROLE, namespace)
    # A bucket of the test's own: the fetcher compares every catalog with the published
    # latest.ndjson (shrink guard), so one test's catalog must not be another's baseline.
    await storage_server.create_bucket(namespace)
    setup = Cluster(kubectl, namespace, nodes, storage_server, pg_dsn)
    yield setup
    for operator in setup.operators:
        operator.stop()


def operator_env(
    control_plane: ControlPlane, medipim: SimulatorServer, storage: StorageServer, **extra: str
) -> dict[str, str]:
    env = {
        **os.environ,
        "KUBECONFIG": str(control_plane.kubeconfig),
        "CATALOGSYNC_MEDIPIM_URL": medipim.url,
        "CATALOGSYNC_STORAGE_URL": storage.url,
        "CATALOGSYNC_RESYNC_INTERVAL": "2",
        "CATALOGSYNC_JOB_PROGRESS_INTERVAL": "0.2",
        "CATALOGSYNC_LIVENESS_ENDPOINT": f"http://127.0.0.1:{free_port()}/healthz",
        "CATALOGSYNC_METRICS_HOST": "127.0.0.1",
        "CATALOGSYNC_METRICS_PORT": str(free_port()),
        "CATALOGSYNC_LOG_FORMAT": "json",
        "CATALOGSYNC_FETCHER": '{"backoffLimit": 1, "activeDeadlineSeconds": 300,'
        ' "podAnnotations": {"sidecar.istio.io/inject": "false"}}',
        "CATALOGSYNC_MAINTAINER": '{"backoffLimit": 1, "activeDeadlineSeconds": 300}',
    }
    env.pop("CATALOGSYNC_NAMESPACES", None)
    env.update(extra)
    return env


async def start(
    cluster: Cluster,
    control_plane: ControlPlane,
    medipim: SimulatorServer,
    tmp_path: Path,
    **extra: str,
) -> Operator:
    secrets = secrets_manifest(medipim, cluster.storage, cluster.dsn)
    cluster.kubectl.apply(secrets, cluster.namespace)
    env = operator_env(
        control_plane,
        medipim,
        cluster.storage,
        **{"CATALOGSYNC_STORAGE_BUCKET": cluster.namespace, **extra},
    )
    operator = cluster.operator(env, tmp_path)
    await until(operator.healthy, "the operator's liveness endpoint", 60)
    return operator


def series(name: str, **labels: str) -> tuple[str, frozenset[tuple[str, str]]]:
    return (f"catalogsync_{name}", frozenset(labels.items()))


def assert_state_metrics(
    values: dict[tuple[str, frozenset[tuple[str, str]]], float],
    namespace: str,
    final: dict[str, Any],
) -> None:
    """The gauges a scrape derives from one succeeded run's status."""
    catalog = {"namespace": namespace, "catalog": "medipim-au"}
    completed = dt.datetime.fromisoformat(final["completionTime"].replace("Z", "+00:00"))
    assert values[series("last_success_timestamp_seconds", **catalog)] == completed.timestamp()
    maintainer = final["maintainer"]
    for outcome in ("inserted", "updated", "skipped", "deleted", "invalid"):
        expected = maintainer.get(outcome, 0)
        assert values[series("last_run_products", **catalog, outcome=outcome)] == expected
    assert values[series("last_run_fetched_bytes", **catalog)] == final["fetcher"]["bytes"]
    for phase in ("Pending", "Fetching", "Maintaining"):
        assert values[series("runs_active", **catalog, phase=phase)] == 0


def job_names(cluster: Cluster) -> list[str]:
    return sorted(job["metadata"]["name"] for job in cluster.items("jobs"))


async def test_a_minimal_run_fetches_then_maintains_and_shows_it(
    cluster: Cluster,
    control_plane: ControlPlane,
    medipim_factory: MedipimFactory,
    tmp_path: Path,
) -> None:
    medipim = await medipim_factory(products=400, line_bytes=1_000, throughput=80_000,
                                    key_id=KEY_ID, key_secret=KEY_SECRET)  # fmt: skip
    operator = await start(cluster, control_plane, medipim, tmp_path)
    opt_out = {"sidecar.istio.io/inject": "false"}
    cluster.create_run(
        "first", {"maintainer": {"podAnnotations": opt_out, "podLabels": {"t": "x"}}}
    )

    tables: list[str] = []
    statuses: list[dict[str, Any]] = []

    def watch() -> dict[str, Any] | None:
        tables.append(cluster.table())
        status = cluster.status("first")
        statuses.append(status)
        return status if status.get("phase") in ("Succeeded", "Failed") else None

    final = await until(watch, "the first run to finish", 180)
    assert final["phase"] == "Succeeded", (final, operator.logs()[-3000:])

    rows = [table.splitlines()[1].split() for table in tables if len(table.splitlines()) > 1]
    seen = [(row[3], row[4]) for row in rows if len(row) > 4 and row[3] != "Succeeded"]
    fetching = [progress for phase, progress in seen if phase == "Fetching"]
    assert any(p not in ("0%", "100%") for p in fetching), seen
    phases = [phase for phase, _ in seen]
    assert "Maintaining" in phases
    assert phases.index("Fetching") < phases.index("Maintaining")

    records = final["fetcher"]["records"]
    assert records == final["fetcher"]["total"] > 0
    connection = await asyncpg.connect(cluster.dsn)
    try:
        assert await connection.fetchval("SELECT count(*) FROM public.products") == records
    finally:
        await connection.close()
    maintainer = final["maintainer"]
    assert maintainer["inserted"] == final["fetcher"]["records"]
    assert maintainer["updated"] == maintainer["skipped"] == maintainer["invalid"] == 0
    assert final["progress"] == "100%"
    assert final["duration"].endswith("s")
    assert {c["type"]: c["status"] for c in final["conditions"]} == {
        "Fetched": "True", "Maintained": "True", "Succeeded": "True"}  # fmt: skip

    table = cluster.table()
    header, row = table.splitlines()[:2]
    assert header.split()[:9] == ["NAME", "CATALOG", "MODE", "PHASE", "PROGRESS", "INSERTED",
                                  "UPDATED", "SKIPPED", "DURATION"]  # fmt: skip
    inserted = str(maintainer["inserted"])
    assert row.split()[:9] == ["first", "medipim-au", "Full", "Succeeded", "100%", inserted, "0",
                               "0", final["duration"]]  # fmt: skip
    wide = cluster.table("-o", "wide").splitlines()[0].split()
    assert wide[-3:] == ["DELETED", "INVALID", "MESSAGE"]

    pods = {pod["metadata"]["labels"]["catalogsync.io/stage"]: pod for pod in cluster.items("pods")}
    # The sidecar opt-out reaches both stages' pods: the fetcher's from the operator's
    # configuration, the maintainer's from the run's spec.
    for stage in ("fetcher", "maintainer"):
        assert pods[stage]["metadata"]["annotations"].items() >= opt_out.items(), stage
    assert pods["maintainer"]["metadata"]["labels"]["t"] == "x"
    assert pods["maintainer"]["spec"]["nodeName"] == "performance"
    assert pods["fetcher"]["spec"]["nodeName"] == "standard"
    requests = pods["maintainer"]["spec"]["containers"][0]["resources"]["requests"]
    assert requests["memory"] == "8Gi"
    assert job_names(cluster) == ["first-fetcher", "first-maintainer"]

    values = await until(operator.metrics, "a scrape", 10)
    assert_state_metrics(values, cluster.namespace, final)
    catalog = {"namespace": cluster.namespace, "catalog": "medipim-au"}
    full = {**catalog, "mode": "Full"}
    assert values[series("runs_started_total", **full)] == 1
    assert values[series("runs_finished_total", **full, outcome="Succeeded")] == 1
    assert values[series("fetched_bytes_total", **catalog)] == final["fetcher"]["bytes"] > 0
    assert values[series("run_duration_seconds_count", **full, outcome="Succeeded")] == 1
    for stage in ("fetcher", "maintainer"):
        labels = {**catalog, "stage": stage, "outcome": "Succeeded"}
        assert values[series("stage_duration_seconds_count", **labels)] == 1
    assert not [key for key in values if key[0] == "catalogsync_run_failures_total"]

    reasons = cluster.event_reasons("first")
    for reason in ("FetcherJobCreated", "FetchSucceeded", "MaintainerJobCreated",
                   "MaintainSucceeded", "SyncSucceeded"):  # fmt: skip
        assert reasons.count(reason) == 1, reasons

    # Nothing the run left behind carries a secret value.
    storage = cluster.storage
    pod_logs = [
        cluster.nodes.logs(cluster.namespace, pod["metadata"]["name"]) for pod in pods.values()
    ]
    everything = "\n".join(
        [json.dumps(statuses), json.dumps(cluster.events()), operator.logs(), *pod_logs,
         json.dumps(cluster.items("jobs")), json.dumps(cluster.run("first"))]
    )  # fmt: skip
    assert all(pod_logs)
    assert operator.logs()
    for value in (KEY_SECRET, storage.service_key, DB_PASSWORD):
        assert value not in everything
        assert base64.b64encode(value.encode()).decode() not in everything


async def finished(cluster: Cluster, name: str, operator: Operator) -> dict[str, Any]:
    final = await until(
        lambda: cluster.phase_is(name, "Succeeded", "Failed"), f"run {name} to finish", 180
    )
    assert final["phase"] == "Succeeded", (final, operator.logs()[-3000:])
    return final


async def test_an_incremental_run_after_a_full_one_fetches_and_records_only_the_changes(
    cluster: Cluster,
    control_plane: ControlPlane,
    medipim_factory: MedipimFactory,
    medipim_cache: Path,
    tmp_path: Path,
) -> None:
    day = Mutation(changed=0.01, added=0.002, removed=0.002, replaced=0.002, status_changed=0.004)
    catalog = Catalog(seed=21, products=1_500, line_bytes=1_000, mutation=day,
                      cache_dir=medipim_cache)  # fmt: skip
    medipim = await medipim_factory(catalog, key_id=KEY_ID, key_secret=KEY_SECRET)
    operator = await start(cluster, control_plane, medipim, tmp_path)
    cluster.create_run("full", {})
    full = await finished(cluster, "full", operator)
    assert full["fetcher"]["mode"] == "Full"

    changes = (await asyncio.to_thread(medipim.advance)).changes()
    cluster.create_run("delta", {"mode": "Incremental"})
    delta = await finished(cluster, "delta", operator)
    fetcher, maintainer = delta["fetcher"], delta["maintainer"]
    assert fetcher["mode"] == "Incremental"
    assert fetcher["records"] == len(changes.touched)  # the overlap adds none here
    assert fetcher["since"] < delta["startTime"]
    assert maintainer["changes"] == len(changes.touched)
    assert maintainer["changesFeed"] == '"public"."catalogsync_changes"'
    assert maintainer["deleted"] == 0
    row = next(line for line in cluster.table().splitlines() if line.startswith("delta "))
    assert row.split()[1:4] == ["medipim-au", "Incremental", "Succeeded"]

    # The same version fetched in full, into a table of its own, for comparison.
    cluster.create_run("check", {"database": {"table": "public.full_products"}})
    await finished(cluster, "check", operator)
    connection = await asyncpg.connect(cluster.dsn)
    try:
        feed = await connection.fetch(
            "SELECT product_id, kind FROM catalogsync_changes "
            "WHERE run_id = 'delta' AND NOT dry_run"
        )
        rows = {r["id"]: (r["status"], r["content_hash"]) for r in await connection.fetch(
            "SELECT id, status, content_hash FROM public.products")}  # fmt: skip
        reference = {r["id"]: r["content_hash"] for r in await connection.fetch(
            "SELECT id, content_hash FROM public.full_products")}  # fmt: skip
    finally:
        await connection.close()
    kinds = {r["product_id"]: r["kind"] for r in feed}
    assert kinds == data.expected_feed(set(catalog.ids("active")), changes)
    # Deletions aside (only a Full run with deleteMissing finds those), the table is the one a
    # Full run gives: the same active products with the same content, plus the products that
    # are no longer active, with their new status.
    kept = {i: v for i, v in rows.items() if i not in changes.removed}
    assert {i: h for i, (status, h) in kept.items() if status == "active"} == reference
    assert set(kept) - set(reference) == {i for i, (s, _) in kept.items() if s != "active"}


async def test_rejected_credentials_fail_the_run_after_one_attempt(
    cluster: Cluster, control_plane: ControlPlane, medipim: SimulatorServer, tmp_path: Path
) -> None:
    await start(cluster, control_plane, medipim, tmp_path)
    cluster.kubectl.apply(yaml.safe_dump(
        {"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "wrong-key"},
         "stringData": {"apiKeyId": medipim.key_id, "apiKeySecret": "not-the-secret"}}),
        cluster.namespace)  # fmt: skip
    cluster.create_run("denied", {"source": {"credentialsSecret": "wrong-key"}})
    status = await until(lambda: cluster.phase_is("denied", "Failed", "Succeeded"), "denied", 120)
    assert status["phase"] == "Failed"
    failure = status["failure"]
    assert failure["stage"] == "fetcher"
    assert failure["reason"] == "InvalidCredentials"
    assert failure["exitCode"] == 2
    assert failure["podName"].startswith("denied-fetcher-")
    assert len(cluster.items("pods", "catalogsync.io/run=denied")) == 1
    assert medipim.requests["products/stream"] == 1
    assert job_names(cluster) == ["denied-fetcher"]
    assert {"FetchFailed", "SyncFailed"} <= set(cluster.event_reasons("denied"))


async def test_an_oom_killed_maintainer_fails_the_run_with_the_cause(
    cluster: Cluster, control_plane: ControlPlane, medipim: SimulatorServer, tmp_path: Path
) -> None:
    await start(cluster, control_plane, medipim, tmp_path)
    cluster.create_run("hungry", {"maintainer": {"backoffLimit": 0}})

    def maintainer_running() -> str | None:
        for namespace, name in cluster.nodes.running():
            if namespace == cluster.namespace and name.startswith("hungry-maintainer-"):
                return name
        return None

    pod = await until(maintainer_running, "the maintainer pod to run", 120)
    await asyncio.to_thread(cluster.nodes.oom_kill, cluster.namespace, pod)
    status = await until(lambda: cluster.phase_is("hungry", "Failed", "Succeeded"), "hungry", 90)
    assert status["phase"] == "Failed"
    assert status["failure"]["reason"] == "OOMKilled"
    assert status["failure"]["stage"] == "maintainer"
    assert status["failure"]["podName"] == pod
    assert status["failure"]["exitCode"] == 137
    assert "8Gi" in status["failure"]["message"]
    reasons = cluster.event_reasons("hungry")
    assert reasons.count("ContainerOOMKilled") == 1
    assert {"MaintainFailed", "SyncFailed"} <= set(reasons)


async def test_a_busy_catalog_skips_new_runs_and_cancel_stops_the_active_one(
    cluster: Cluster, control_plane: ControlPlane, medipim_factory: MedipimFactory, tmp_path: Path
) -> None:
    medipim = await medipim_factory(products=400, line_bytes=1_000, throughput=20_000)
    await start(cluster, control_plane, medipim, tmp_path)
    cluster.create_run("long", {})
    await until(lambda: cluster.phase_is("long", "Fetching"), "long to fetch", 60)
    cluster.create_run("second", {})
    status = await until(lambda: cluster.phase_is("second", "Skipped"), "second skipped", 60)
    skipped = {c["type"]: c for c in status["conditions"]}["Skipped"]
    assert (skipped["status"], skipped["reason"]) == ("True", "ConcurrentRunActive")
    assert "long" in status["message"]
    assert "SyncSkipped" in cluster.event_reasons("second")
    assert "second-fetcher" not in job_names(cluster)

    cluster.kubectl("patch", "csync", "long", "-n", cluster.namespace, "--type=merge",
                    "-p", '{"spec": {"cancel": true}}')  # fmt: skip
    status = await until(lambda: cluster.phase_is("long", "Cancelled"), "long cancelled", 60)
    assert status["completionTime"]
    assert "SyncCancelled" in cluster.event_reasons("long")
    await until(lambda: not cluster.items("jobs", "catalogsync.io/run=long"), "Job deleted", 60)
    await until(lambda: not cluster.items("pods", "catalogsync.io/run=long"), "pods deleted", 60)


async def test_an_operator_killed_mid_run_reattaches_without_duplicates(
    cluster: Cluster, control_plane: ControlPlane, medipim_factory: MedipimFactory, tmp_path: Path
) -> None:
    medipim = await medipim_factory(products=400, line_bytes=1_000, throughput=60_000)
    operator = await start(cluster, control_plane, medipim, tmp_path)
    cluster.create_run("steady", {})
    await until(lambda: cluster.phase_is("steady", "Fetching"), "steady to fetch", 60)
    operator.kill()
    await asyncio.sleep(2)
    operator.start()
    status = await until(lambda: cluster.phase_is("steady", "Succeeded", "Failed"), "end", 180)
    assert status["phase"] == "Succeeded", operator.logs()[-3000:]
    assert job_names(cluster) == ["steady-fetcher", "steady-maintainer"]
    stages = sorted(p["metadata"]["labels"]["catalogsync.io/stage"] for p in cluster.items("pods"))
    assert stages == ["fetcher", "maintainer"]
    reasons = cluster.event_reasons("steady")
    assert reasons.count("FetcherJobCreated") == 1
    assert reasons.count("SyncSucceeded") == 1

    # The state gauges are derived from the runs, so a restart that saw the run finish, and a
    # restart after it, report the same; the counters belong to the process that finished it.
    final = cluster.status("steady")
    assert_state_metrics(await until(operator.metrics, "a scrape", 10), cluster.namespace, final)
    operator.stop()
    operator.start()
    await until(operator.healthy, "the restarted operator", 60)
    values = await until(operator.metrics, "a scrape", 10)
    assert_state_metrics(values, cluster.namespace, final)
    assert not [key for key in values if key[0] == "catalogsync_runs_finished_total"]


async def test_deleting_a_run_deletes_its_jobs_and_pods(
    cluster: Cluster, control_plane: ControlPlane, medipim_factory: MedipimFactory, tmp_path: Path
) -> None:
    medipim = await medipim_factory(products=400, line_bytes=1_000, throughput=20_000)
    await start(cluster, control_plane, medipim, tmp_path)
    cluster.create_run("doomed", {})
    await until(lambda: cluster.items("pods", "catalogsync.io/run=doomed"), "a pod", 60)
    cluster.kubectl("delete", "csync", "doomed", "-n", cluster.namespace, "--wait=true",
                    "--timeout=30s")  # fmt: skip
    await until(lambda: not cluster.items("jobs"), "the Job to be collected", 60)
    await until(lambda: not cluster.items("pods"), "the pods to be collected", 60)


async def test_a_missing_secret_fails_the_run_before_any_job(
    cluster: Cluster, control_plane: ControlPlane, medipim: SimulatorServer, tmp_path: Path
) -> None:
    operator = await start(cluster, control_plane, medipim, tmp_path)
    cluster.create_run("nokey", {"database": {"credentialsSecret": "no-such-secret"}})
    status = await until(lambda: cluster.phase_is("nokey", "Failed"), "nokey to fail", 60)
    assert status["failure"]["reason"] == "SecretNotFound"
    assert "no-such-secret" in status["failure"]["message"]
    assert "'url'" in status["failure"]["message"]
    assert job_names(cluster) == []
    assert "SyncFailed" in cluster.event_reasons("nokey")
    assert "no-such-secret" in operator.logs()


async def test_a_pod_the_api_server_refuses_fails_the_run_instead_of_waiting(
    cluster: Cluster, control_plane: ControlPlane, medipim: SimulatorServer, tmp_path: Path
) -> None:
    """Priority admission refuses a pod naming an absent PriorityClass; the Job has no pod."""
    await start(cluster, control_plane, medipim, tmp_path, CATALOGSYNC_POD_CREATION_GRACE="2")
    cluster.create_run("refused", {"fetcher": {"priorityClassName": "does-not-exist"}})
    ended = functools.partial(cluster.phase_is, "refused", "Failed", "Succeeded")
    status = await until(ended, "refused to end", 90)
    assert status["phase"] == "Failed"
    failure = status["failure"]
    assert (failure["stage"], failure["reason"]) == ("fetcher", "PodCreationFailed")
    assert failure["message"].startswith('Error creating: pods "refused-fetcher-')
    assert "does-not-exist" in failure["message"]
    assert "\n" not in failure["message"]
    await until(lambda: "refused-fetcher" not in job_names(cluster), "the Job deleted", 60)
    assert cluster.items("pods", "catalogsync.io/run=refused") == []
    assert {"FetchFailed", "SyncFailed"} <= set(cluster.event_reasons("refused"))


async def test_a_pod_no_node_can_take_fails_the_run_unschedulable_after_the_grace(
    cluster: Cluster, control_plane: ControlPlane, medipim: SimulatorServer, tmp_path: Path
) -> None:
    await start(cluster, control_plane, medipim, tmp_path, CATALOGSYNC_UNSCHEDULABLE_GRACE="5")
    cluster.create_run("homeless", {"fetcher": {"nodeSelector": {"pool": "does-not-exist"}}})
    status = await until(lambda: cluster.phase_is("homeless", "Failed"), "homeless to fail", 90)
    failure = status["failure"]
    assert (failure["stage"], failure["reason"]) == ("fetcher", "Unschedulable")
    assert failure["message"].startswith("pod homeless-fetcher-")
    assert "nodes are available" in failure["message"], "the scheduler's own reason"
    await until(lambda: "homeless-fetcher" not in job_names(cluster), "the Job deleted", 60)
    warnings = [e for e in cluster.events("homeless") if e["type"] == "Warning"]
    assert any("Unschedulable" in e["message"] for e in warnings)


async def test_history_is_pruned_to_the_limits(
    cluster: Cluster, control_plane: ControlPlane, medipim_factory: MedipimFactory, tmp_path: Path
) -> None:
    medipim = await medipim_factory(products=50, line_bytes=500)
    await start(cluster, control_plane, medipim, tmp_path,
                CATALOGSYNC_SUCCESSFUL_RUNS_HISTORY_LIMIT="1",
                CATALOGSYNC_FAILED_RUNS_HISTORY_LIMIT="1")  # fmt: skip
    for name in ("ok-1", "ok-2"):
        cluster.create_run(name, {"mode": "FetchOnly"})
        ended = functools.partial(cluster.phase_is, name, "Succeeded", "Failed")
        status = await until(ended, name, 90)
        assert status["phase"] == "Succeeded"
    for name in ("bad-1", "bad-2"):
        cluster.create_run(name, {"source": {"credentialsSecret": "absent"}})
        await until(functools.partial(cluster.phase_is, name, "Failed"), name, 60)

    def remaining() -> list[str] | None:
        names = sorted(run["metadata"]["name"] for run in cluster.items("catalogsyncs"))
        return names if names == ["bad-2", "ok-2"] else None

    await until(remaining, "history pruned to ok-2 and bad-2", 60)
    await until(lambda: job_names(cluster) == ["ok-2-fetcher"], "ok-1's Job collected", 60)
    pruned = [e for e in cluster.events() if e["reason"] == "HistoryPruned"]
    assert any("ok-1" in e["message"] for e in pruned)
    assert any("bad-1" in e["message"] for e in pruned)


OPERATOR_RULES = [
    {"apiGroups": ["catalogsync.io"], "resources": ["catalogsyncs"],
     "verbs": ["get", "list", "watch", "patch", "delete"]},
    {"apiGroups": ["catalogsync.io"], "resources": ["catalogsyncs/status"],
     "verbs": ["get", "patch"]},
    {"apiGroups": ["catalogsync.io"], "resources": ["catalogsyncs/finalizers"],
     "verbs": ["update"]},
    {"apiGroups": ["batch"], "resources": ["jobs"],
     "verbs": ["get", "list", "watch", "create", "delete"]},
    {"apiGroups": [""], "resources": ["pods"], "verbs": ["get", "list", "watch"]},
    {"apiGroups": [""], "resources": ["secrets"], "verbs": ["get"]},
    {"apiGroups": [""], "resources": ["events"], "verbs": ["create", "list"]},
]  # fmt: skip
"""What the operator needs in each namespace it watches; the chart's Role must grant this."""


async def test_the_operator_works_with_only_its_documented_permissions(
    cluster: Cluster, control_plane: ControlPlane, medipim: SimulatorServer, tmp_path: Path
) -> None:
    documents = [
        {"apiVersion": "v1", "kind": "ServiceAccount", "metadata": {"name": "operator"}},
        {"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "Role",
         "metadata": {"name": "operator"}, "rules": OPERATOR_RULES},
        {"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "RoleBinding",
         "metadata": {"name": "operator"},
         "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role",
                     "name": "operator"},
         "subjects": [{"kind": "ServiceAccount", "name": "operator",
                       "namespace": cluster.namespace}]},
    ]  # fmt: skip
    cluster.kubectl.apply(yaml.safe_dump_all(documents), cluster.namespace)
    # The API server's RBAC cache learns of new bindings through a watch; starting before it has
    # would turn that lag into spurious "Forbidden" lines in the operator's log.
    account = f"system:serviceaccount:{cluster.namespace}:operator"

    def bound() -> bool:
        answer = cluster.kubectl.run(
            "auth", "can-i", "watch", "catalogsyncs.catalogsync.io", "--as", account,
            "-n", cluster.namespace, check=False,
        )  # fmt: skip
        return answer.stdout.strip() == "yes"

    await until(bound, "the operator's RoleBinding to take effect", 30)
    token = cluster.kubectl("create", "token", "operator", "-n", cluster.namespace).strip()
    kubeconfig = write_kubeconfig(
        tmp_path / "operator.kubeconfig",
        control_plane.server,
        control_plane.admin.ca_file.read_bytes(),
        user="operator",
        token=token,
        namespace=cluster.namespace,
    )
    operator = await start(cluster, control_plane, medipim, tmp_path,
                           KUBECONFIG=str(kubeconfig),
                           CATALOGSYNC_SUCCESSFUL_RUNS_HISTORY_LIMIT="0")  # fmt: skip
    cluster.create_run("limited", {})
    await until(lambda: cluster.phase_is("limited", "Maintaining"), "limited to maintain", 120)
    # A successful run with a history limit of 0 is pruned as soon as it ends.
    await until(lambda: not cluster.run("limited"), "limited to finish and be pruned", 120)
    pruned = [e for e in cluster.events() if e["reason"] == "HistoryPruned"]
    assert pruned
    assert "SyncSucceeded" in [e["reason"] for e in cluster.events()]
    # Any refusal would be a permission missing from OPERATOR_RULES (watching namespaces only,
    # the operator does not try to scan CRDs or namespaces cluster-wide).
    refused = [line for line in operator.logs().splitlines() if "Forbidden" in line]
    assert refused == []


@pytest.fixture(scope="module")
def validation_namespace(crd: None, kubectl: Kubectl) -> Iterator[str]:
    name = f"crd-validation-{os.getpid()}"
    kubectl("create", "namespace", name)
    yield name
    kubectl("delete", "namespace", name, "--wait=false")


INVALID = [
    ("x" * 53, {}, "metadata.name"),
    ("chunk-low", {"maintainer": {"chunkSize": 99}}, "spec.maintainer.chunkSize"),
    ("chunk-high", {"maintainer": {"chunkSize": 100001}}, "spec.maintainer.chunkSize"),
    ("fraction-high", {"maintainer": {"maxDeleteFraction": 1.5}},
     "spec.maintainer.maxDeleteFraction"),
    ("fraction-low", {"maintainer": {"maxDeleteFraction": -0.1}},
     "spec.maintainer.maxDeleteFraction"),
    ("table", {"database": {"table": "public.Products; drop"}}, "spec.database.table"),
    ("table-parts", {"database": {"table": "a.b.c"}}, "spec.database.table"),
    ("mode", {"mode": "Sometimes"}, "spec.mode"),
    ("prefix", {"storage": {"prefix": "/abs"}}, "spec.storage.prefix"),
    ("prefix-dots", {"storage": {"prefix": "au/../x"}}, "spec.storage.prefix"),
    ("catalog", {"catalog": "Not A Label"}, "spec.catalog"),
    ("url", {"source": {"url": "ftp://x"}}, "spec.source.url"),
]  # fmt: skip


@pytest.mark.parametrize(("name", "spec", "field"), INVALID, ids=[i[0][:12] for i in INVALID])
def test_the_api_server_rejects_invalid_runs_naming_the_field(
    kubectl: Kubectl, validation_namespace: str, name: str, spec: dict[str, Any], field: str
) -> None:
    manifest = {"apiVersion": "catalogsync.io/v1alpha1", "kind": "CatalogSync",
                "metadata": {"name": name}, "spec": spec}  # fmt: skip
    result = kubectl.run("create", "-n", validation_namespace, "-f", "-",
                         input=json.dumps(manifest), check=False)  # fmt: skip
    assert result.returncode != 0
    assert field in result.stderr, result.stderr


def test_the_spec_is_immutable_except_cancel(kubectl: Kubectl, validation_namespace: str) -> None:
    manifest = {"apiVersion": "catalogsync.io/v1alpha1", "kind": "CatalogSync",
                "metadata": {"name": "frozen"}, "spec": {}}  # fmt: skip
    kubectl("create", "-n", validation_namespace, "-f", "-", input=json.dumps(manifest))
    for patch, field in [
        ({"maintainer": {"chunkSize": 100}}, "spec.maintainer"),
        ({"source": {"filter": {"status": "inactive"}}}, "spec.source"),
        ({"catalog": "other"}, "spec.catalog"),
        ({"mode": "FetchOnly"}, "spec.mode"),
        ({"fetcher": {"backoffLimit": 5}}, "spec.fetcher"),
        ({"storage": {"bucket": "other"}}, "spec.storage"),
        ({"database": {"table": "other"}}, "spec.database"),
    ]:
        result = kubectl.run("patch", "csync", "frozen", "-n", validation_namespace,
                             "--type=merge", "-p", json.dumps({"spec": patch}),
                             check=False)  # fmt: skip
        assert result.returncode != 0, patch
        assert f"{field} is immutable" in result.stderr
    kubectl("patch", "csync", "frozen", "-n", validation_namespace, "--type=merge",
            "-p", '{"spec": {"cancel": true}}')  # fmt: skip


async def test_a_missing_crd_is_noticed_before_kopf_starts(
    crd: None, control_plane: ControlPlane, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Watching namespaces only, the operator exits when the CRD is absent instead of idling."""
    from catalogsync.operator.main import crd_served

    monkeypatch.setenv("KUBECONFIG", str(control_plane.kubeconfig))
    assert await crd_served()
    assert not await crd_served("absent.catalogsync.io", "v1alpha1")
