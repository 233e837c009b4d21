"""The rendered chart against the real API server: schema validation and Pod Security admission.

``kubectl apply --dry-run=server`` runs every object through the API server's validation,
defaulting and admission (including PodSecurity) without persisting it, so a field the server
rejects, or a pod template the restricted profile would refuse, fails here and not at install.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from catalogsync.common.config import load
from catalogsync.dev.controlplane import ControlPlane, write_kubeconfig
from catalogsync.operator.jobs import build_job
from catalogsync.operator.settings import OperatorSettings
from catalogsync.operator.spec import resolve
from tests.chart import (
    CHART,
    NON_DEFAULT_VALUES,
    Helm,
    Manifest,
    documents,
    helm_binary,
    pod_specs,
)
from tests.operator_objects import cr
from tests.plugins.kube import Kubectl, wait_until

pytestmark = pytest.mark.kube

RESTRICTED = {
    "pod-security.kubernetes.io/enforce": "restricted",
    "pod-security.kubernetes.io/warn": "restricted",
    "pod-security.kubernetes.io/audit": "restricted",
}


@pytest.fixture(scope="module")
def helm(tmp_path_factory: pytest.TempPathFactory) -> Helm:
    return Helm(helm_binary(), tmp_path_factory.mktemp("helm"))


@pytest.fixture
def restricted(namespace: str, kubectl: Kubectl) -> str:
    kubectl("label", "namespace", namespace, *(f"{k}={v}" for k, v in RESTRICTED.items()))
    return namespace


@pytest.fixture
def second_namespace(kubectl: Kubectl, restricted: str) -> Iterator[str]:
    name = f"{restricted[:50]}-runs"
    kubectl("create", "namespace", name)
    kubectl("label", "namespace", name, *(f"{k}={v}" for k, v in RESTRICTED.items()))
    yield name
    kubectl("delete", "namespace", name, "--wait=false", "--ignore-not-found")


def dry_run(kubectl: Kubectl, manifest: str) -> str:
    result = kubectl.run("apply", "--dry-run=server", "-f", "-", input=manifest, check=False)
    assert result.returncode == 0, result.stderr
    assert "Warning" not in result.stderr, result.stderr
    return result.stdout


def test_default_values_are_accepted_by_the_api_server(
    helm: Helm, kubectl: Kubectl, restricted: str
) -> None:
    manifest = helm.template_text(namespace=restricted)
    out = dry_run(kubectl, manifest)
    kinds = {doc["kind"] for doc in documents(manifest)}
    assert kinds == {
        "CustomResourceDefinition",
        "ServiceAccount",
        "ConfigMap",
        "ClusterRole",
        "Role",
        "RoleBinding",
        "NetworkPolicy",
        "Deployment",
        "CronJob",
    }
    assert out.count("(server dry run)") == len(documents(manifest))


def test_non_default_values_are_accepted_by_the_api_server(
    helm: Helm, kubectl: Kubectl, restricted: str, second_namespace: str
) -> None:
    values = {
        **NON_DEFAULT_VALUES,
        "operator": {
            **NON_DEFAULT_VALUES["operator"],
            "watchNamespaces": [restricted, second_namespace],
        },
        "schedule": {**NON_DEFAULT_VALUES["schedule"], "runNamespace": second_namespace},
    }
    manifest = helm.template_text(values, namespace=restricted)
    dry_run(kubectl, manifest)


def test_cluster_wide_mode_is_accepted_by_the_api_server(
    helm: Helm, kubectl: Kubectl, restricted: str
) -> None:
    manifest = helm.template_text(
        {"operator": {"watchAllNamespaces": True}, "crds": {"create": False}},
        namespace=restricted,
        release=f"cw-{restricted[:20]}",
    )
    assert "kind: ClusterRole" in manifest
    dry_run(kubectl, manifest)


def test_the_restricted_profile_really_is_enforced_here(
    helm: Helm, kubectl: Kubectl, restricted: str
) -> None:
    """The same dry run rejects a chart whose pods would run as root: the check has teeth."""
    manifest = helm.template_text(namespace=restricted).replace(
        "runAsNonRoot: true", "runAsNonRoot: false"
    )
    result = kubectl.run("apply", "--dry-run=server", "-f", "-", input=manifest, check=False)
    assert 'would violate PodSecurity "restricted:latest"' in result.stderr


def installed(
    helm: Helm, kubectl: Kubectl, namespace: str, run_namespace: str | None = None
) -> list[Manifest]:
    """The chart applied for real, minus the operator Deployment and with the schedule suspended."""
    values: dict[str, Any] = {"schedule": {"suspend": True}}
    if run_namespace:
        values["schedule"]["runNamespace"] = run_namespace
        values["operator"] = {"watchNamespaces": [run_namespace]}
    rendered = documents(helm.template_text(values, namespace=namespace, release="cr"))
    objects = [doc for doc in rendered if doc["kind"] != "Deployment"]
    kubectl("apply", "-f", "-", input="\n---\n".join(json.dumps(doc) for doc in objects))
    kubectl("wait", "--for=condition=Established", "crd/catalogsyncs.catalogsync.io")
    # RoleBindings reach the API server's authorizer through a watch: wait until in force.
    scheduler = f"system:serviceaccount:{namespace}:cr-catalogsync-scheduler"
    wait_until(
        lambda: kubectl.run(
            "auth", "can-i", "create", "catalogsyncs.catalogsync.io", "--as", scheduler,
            "-n", run_namespace or namespace, check=False,
        ).stdout.strip() == "yes",
        timeout=30,
        message="the scheduler's RoleBinding",
    )  # fmt: skip
    return rendered


class Creator:
    """``catalogsync create-run`` as the CronJob's pod runs it, with a ServiceAccount's token."""

    def __init__(self, kubectl: Kubectl, plane: ControlPlane, workdir: Path) -> None:
        self.kubectl = kubectl
        self.plane = plane
        self.workdir = workdir

    def run(
        self,
        account: str,
        namespace: str,
        *,
        run_namespace: str | None = None,
        template: str = "apiVersion: catalogsync.io/v1alpha1\nkind: CatalogSync\n"
        "spec: {mode: FetchOnly}\n",
        **env: str,
    ) -> subprocess.CompletedProcess[str]:
        token = self.kubectl("create", "token", account, "-n", namespace).strip()
        kubeconfig = write_kubeconfig(
            self.workdir / f"{account}.kubeconfig",
            self.plane.server,
            self.plane.admin.ca_file.read_bytes(),
            user=account,
            token=token,
        )
        clean = {k: v for k, v in os.environ.items() if not k.startswith(("KUBE", "CATALOGSYNC_"))}
        return subprocess.run(
            [
                str(Path(sys.executable).with_name("catalogsync")),
                "create-run",
                f"--namespace={run_namespace or namespace}",
                "--log-format=text",
            ],
            env={
                **clean,
                "POD_NAMESPACE": namespace,
                "KUBECONFIG": str(kubeconfig),
                "CATALOGSYNC_RUN_TEMPLATE": template,
                **env,
            },
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )


@pytest.fixture
def creator(kubectl: Kubectl, control_plane: ControlPlane, tmp_path: Path) -> Creator:
    return Creator(kubectl, control_plane, tmp_path)


def test_create_run_is_idempotent_per_firing_under_the_scheduler_role(
    helm: Helm, creator: Creator, kubectl: Kubectl, restricted: str, second_namespace: str
) -> None:
    """The Job lives in the release namespace, the run goes to ``schedule.runNamespace``."""
    namespace = restricted
    installed(helm, kubectl, namespace, run_namespace=second_namespace)
    cronjob = kubectl.json("get", "cronjob", "cr-catalogsync", "-n", namespace)
    job = {
        "apiVersion": "batch/v1",
        "kind": "Job",
        "metadata": {
            "name": "cr-catalogsync-29537400",
            "annotations": {
                "batch.kubernetes.io/cronjob-scheduled-timestamp": "2026-03-01T02:00:00Z"
            },
            "ownerReferences": [
                {
                    "apiVersion": "batch/v1",
                    "kind": "CronJob",
                    "name": "cr-catalogsync",
                    "uid": cronjob["metadata"]["uid"],
                }
            ],
        },
        "spec": {
            "suspend": True,
            "template": {
                "spec": {
                    "restartPolicy": "Never",
                    "containers": [{"name": "c", "image": "ghcr.io/catalogsync/catalogsync"}],
                }
            },
        },
    }
    kubectl.apply(json.dumps(job), namespace)
    account = "cr-catalogsync-scheduler"
    job_env = {"JOB_NAME": "cr-catalogsync-29537400"}

    first = creator.run(account, namespace, run_namespace=second_namespace, **job_env)
    retried = creator.run(account, namespace, run_namespace=second_namespace, **job_env)

    assert first.returncode == 0, first.stderr
    assert "created CatalogSync" in first.stderr
    assert retried.returncode == 0, retried.stderr
    assert "already exists" in retried.stderr
    assert kubectl.json("get", "catalogsyncs", "-n", namespace)["items"] == []
    (run,) = kubectl.json("get", "catalogsyncs", "-n", second_namespace)["items"]
    assert run["metadata"]["name"] == "medipim-au-20260301-0200"
    assert run["metadata"]["labels"] == {
        "catalogsync.io/trigger": "scheduled",
        "catalogsync.io/schedule": "cr-catalogsync",
    }
    assert run["spec"]["mode"] == "FetchOnly"


def test_create_run_without_the_scheduler_role_fails_permanently_and_says_why(
    helm: Helm, creator: Creator, kubectl: Kubectl, namespace: str
) -> None:
    installed(helm, kubectl, namespace)
    refused = creator.run("cr-catalogsync-job", namespace)
    assert refused.returncode == 2
    assert "403" in refused.stderr
    assert "scheduler Role" in refused.stderr
    assert kubectl.json("get", "catalogsyncs", "-n", namespace)["items"] == []


@pytest.mark.parametrize(
    "case",
    [
        ("{maintainer: {chunksize: 500}}", 'unknown field "spec.maintainer.chunksize"'),
        ("{mode: Bogus}", 'spec.mode: Unsupported value: "Bogus"'),
    ],
)
def test_create_run_refuses_a_template_the_api_server_would_prune_or_reject(
    helm: Helm, creator: Creator, kubectl: Kubectl, namespace: str, case: tuple[str, str]
) -> None:
    """Strict field validation: a typo is exit 2 naming the field, never silently dropped."""
    spec, complaint = case
    installed(helm, kubectl, namespace)
    template = f"apiVersion: catalogsync.io/v1alpha1\nkind: CatalogSync\nspec: {spec}\n"
    refused = creator.run("cr-catalogsync-scheduler", namespace, template=template)
    assert refused.returncode == 2, refused.stderr
    assert complaint in refused.stderr
    assert "InvalidTemplate" in refused.stderr or "rejected" in refused.stderr
    assert '"kind":"Status"' not in refused.stderr.replace(" ", ""), "the message, not the body"
    assert kubectl.json("get", "catalogsyncs", "-n", namespace)["items"] == []


HELM_OWNER = ("meta.helm.sh/release-name", "meta.helm.sh/release-namespace")


def test_a_second_release_installs_once_the_crd_is_left_to_the_first(
    helm: Helm, kubectl: Kubectl, control_plane: ControlPlane, namespace: str
) -> None:
    """The CRD is cluster-wide and kept: release two says how to install, then installs."""
    other = f"{namespace[:50]}-two"
    kubectl("create", "namespace", other)
    crd = "crd/catalogsyncs.catalogsync.io"
    base = ["--kubeconfig", str(control_plane.kubeconfig), str(CHART), "--wait=hookOnly",
            "--set", "schedule.suspend=true"]  # fmt: skip
    # Earlier tests may have applied the CRD by hand: hand it to release one, as an admin would.
    if kubectl.run("get", crd, check=False).returncode == 0:
        kubectl("annotate", "--overwrite", crd, f"{HELM_OWNER[0]}=one",
                f"{HELM_OWNER[1]}={namespace}")  # fmt: skip
        kubectl("label", "--overwrite", crd, "app.kubernetes.io/managed-by=Helm")
    try:
        helm.run("install", "one", *base, "-n", namespace)
        refused = helm.run("install", "two", *base, "-n", other, check=False)
        assert refused.returncode != 0
        assert f"already installed (by release one in namespace {namespace})" in refused.stderr
        assert "--set crds.create=false" in refused.stderr
        helm.run("install", "two", *base, "-n", other, "--set", "crds.create=false")
        helm.run("upgrade", "one", *base, "-n", namespace)  # the owner keeps managing it
        assert kubectl.json("get", "deployment", "-n", other, "two-catalogsync-operator")
        helm.run("uninstall", "two", "-n", other, "--kubeconfig", str(control_plane.kubeconfig))
        helm.run("uninstall", "one", "-n", namespace, "--kubeconfig",
                 str(control_plane.kubeconfig))  # fmt: skip
        assert kubectl.run("get", crd, check=False).returncode == 0, "kept on uninstall"
    finally:
        kubectl.run("annotate", crd, *(f"{key}-" for key in HELM_OWNER), check=False)
        kubectl.run("label", crd, "app.kubernetes.io/managed-by-", check=False)
        kubectl("delete", "namespace", other, "--wait=false", "--ignore-not-found")


def identity(
    kubectl: Kubectl, plane: ControlPlane, workdir: Path, namespace: str, *, name: str, role: str
) -> Kubectl:
    """kubectl as a ServiceAccount bound (in ``namespace``) only to a built-in ClusterRole."""
    kubectl("create", "serviceaccount", name, "-n", namespace)
    kubectl("create", "rolebinding", name, f"--clusterrole={role}",
            f"--serviceaccount={namespace}:{name}", "-n", namespace)  # fmt: skip
    token = kubectl("create", "token", name, "-n", namespace).strip()
    kubeconfig = write_kubeconfig(
        workdir / f"{name}.kubeconfig",
        plane.server,
        plane.admin.ca_file.read_bytes(),
        user=name,
        token=token,
        namespace=namespace,
    )
    return Kubectl(kubectl.binary, kubeconfig)


def test_the_built_in_view_and_edit_roles_cover_catalogsyncs(
    helm: Helm, kubectl: Kubectl, control_plane: ControlPlane, restricted: str, tmp_path: Path
) -> None:
    installed(helm, kubectl, restricted)
    run = (
        "apiVersion: catalogsync.io/v1alpha1\nkind: CatalogSync\nmetadata: {name: seen}\nspec: {}\n"
    )
    kubectl.apply(run, restricted)
    viewer = identity(kubectl, control_plane, tmp_path, restricted, name="viewer", role="view")
    # The controller manager's clusterrole-aggregation controller copies the chart's rules into
    # the built-in roles; until it has, the viewer is refused.
    listed = wait_until(
        lambda: viewer.run("get", "csync", check=False).stdout or None,
        timeout=60,
        message="kubectl get csync as a user bound only to view",
    )
    assert "seen" in listed
    aggregated = kubectl.json("get", "clusterrole", "view")["rules"]
    assert any("catalogsyncs" in rule.get("resources", []) for rule in aggregated)
    refused = viewer.run("patch", "csync", "seen", "--type=merge", "-p",
                         '{"spec":{"cancel":true}}', check=False)  # fmt: skip
    assert refused.returncode != 0
    assert "forbidden" in refused.stderr.lower()

    editor = identity(kubectl, control_plane, tmp_path, restricted, name="editor", role="edit")
    wait_until(
        lambda: editor.run("patch", "csync", "seen", "--type=merge", "-p",
                           '{"spec":{"cancel":true}}', check=False).returncode == 0,
        timeout=60,
        message="an edit user cancelling a run",
    )  # fmt: skip
    status = editor.run("patch", "csync", "seen", "--subresource=status", "--type=merge", "-p",
                        '{"status":{"phase":"Succeeded"}}', check=False)  # fmt: skip
    assert status.returncode != 0, "the status is the operator's"


OPENSHIFT = {"runAsUser": None, "runAsGroup": None, "defaults": {"storage": {"url": "file:///x"}}}


def test_openshift_values_leave_the_uid_to_the_platform_and_stay_restricted(
    helm: Helm, kubectl: Kubectl, restricted: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """``runAsUser: null``: no uid in any pod, the operator still starts, its Jobs are admitted."""
    manifest = helm.template_text(OPENSHIFT, namespace=restricted)
    rendered = documents(manifest)
    for name, pod in pod_specs(rendered):
        contexts = [pod["securityContext"], *(c["securityContext"] for c in pod["containers"])]
        for context in contexts:
            assert not {"runAsUser", "runAsGroup", "fsGroup"} & set(context), name
            assert context.get("runAsNonRoot") is True, name
    dry_run(kubectl, manifest)
    config = next(
        d for d in rendered if d["kind"] == "ConfigMap" and "-operator" in d["metadata"]["name"]
    )
    for key, value in config["data"].items():
        monkeypatch.setenv(key, value)
    settings = load(OperatorSettings)  # the operator would exit 2 on a bad value here
    assert settings.job_run_as_user is None
    run = resolve(cr("openshift", namespace=restricted), settings)
    for stage in ("fetcher", "maintainer"):
        job = build_job(run, stage, settings)
        job["metadata"].pop("ownerReferences")
        pod = job["spec"]["template"]["spec"]
        assert "runAsUser" not in pod["securityContext"]
        dry_run(kubectl, json.dumps(job))


def test_the_helm_test_check_sees_the_crd_and_misses_the_operator(
    helm: Helm, kubectl: Kubectl, restricted: str
) -> None:
    """``kubectl-catalogsync check`` (the helm test hook's command) on the real API server; the
    operator Deployment is left out of ``installed``, so the check must fail and say so."""
    installed(helm, kubectl, restricted)
    env = {k: v for k, v in os.environ.items() if not k.startswith(("KUBE", "CATALOGSYNC_"))}
    result = subprocess.run(
        [str(Path(sys.executable).with_name("kubectl-catalogsync")),
         f"--kubeconfig={kubectl.kubeconfig}", "-n", restricted, "check"],
        env=env, capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip
    assert result.returncode == 1, result.stdout + result.stderr
    assert "ok: the API server serves catalogsyncs.catalogsync.io/v1alpha1" in result.stdout
    assert "no catalogsync operator Deployment here" in result.stdout


def test_non_default_stage_security_contexts_and_volumes_keep_the_jobs_restricted(
    helm: Helm, kubectl: Kubectl, restricted: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The Jobs the operator builds from ``fetcher``/``maintainer`` security contexts and extra
    volumes pass the restricted profile (its warnings would show on a Job, too)."""
    values = {
        **NON_DEFAULT_VALUES,
        "operator": {**NON_DEFAULT_VALUES["operator"], "watchNamespaces": [restricted]},
        "schedule": {**NON_DEFAULT_VALUES["schedule"], "runNamespace": restricted},
    }
    rendered = documents(helm.template_text(values, namespace=restricted))
    config = next(
        d for d in rendered if d["kind"] == "ConfigMap" and "-operator" in d["metadata"]["name"]
    )
    for key, value in config["data"].items():
        monkeypatch.setenv(key, value)
    settings = load(OperatorSettings)
    run = resolve(cr("stagepods", namespace=restricted), settings)
    assert not run.pod_problems
    for stage in ("fetcher", "maintainer"):
        job = build_job(run, stage, settings)
        job["metadata"].pop("ownerReferences")
        pod = job["spec"]["template"]["spec"]
        assert pod["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}
        dry_run(kubectl, json.dumps(job))
    fetcher = build_job(run, "fetcher", settings)["spec"]["template"]["spec"]
    assert fetcher["securityContext"]["runAsUser"] == 20000
    assert fetcher["securityContext"]["fsGroupChangePolicy"] == "OnRootMismatch"
    assert {"name": "ca", "configMap": {"name": "corporate-ca"}} in fetcher["volumes"]
