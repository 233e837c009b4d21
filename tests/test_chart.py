"""The Helm chart, rendered by the real helm: lint, contracts with the operator, RBAC, security."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
import yaml

from catalogsync.common.config import load
from catalogsync.operator.create_run import build_run, firing_from_job, parse_template, run_name
from catalogsync.operator.notify import WebhookSettings
from catalogsync.operator.settings import OperatorSettings, default_fetcher, default_maintainer
from tests.chart import (
    CHART,
    CRD_SOURCE,
    KIND_VALUES,
    NON_DEFAULT_VALUES,
    ROOT,
    Helm,
    Manifest,
    find,
    helm_binary,
    one,
    pod_specs,
)


@pytest.fixture(scope="module")
def helm(tmp_path_factory: pytest.TempPathFactory) -> Helm:
    return Helm(helm_binary(), tmp_path_factory.mktemp("helm"))


@pytest.fixture(scope="module")
def default(helm: Helm) -> list[Manifest]:
    return helm.template(namespace="sync")


@pytest.fixture(scope="module")
def custom(helm: Helm) -> list[Manifest]:
    return helm.template(NON_DEFAULT_VALUES, namespace="sync")


def config_env(manifests: list[Manifest]) -> dict[str, str]:
    data: dict[str, str] = one(manifests, "ConfigMap", "-operator")["data"]
    return data


def rules(role: Manifest) -> set[tuple[str, str, str]]:
    """(apiGroup, resource, verb) triples, so extra permissions show up one by one."""
    return {
        (group, resource, verb)
        for rule in role["rules"]
        for group in rule["apiGroups"]
        for resource in rule["resources"]
        for verb in rule["verbs"]
    }


# --- lint and schema -----------------------------------------------------------------------


def test_lint_strict_with_default_and_non_default_values(helm: Helm, tmp_path: Path) -> None:
    helm.run("lint", "--strict", str(CHART))
    values = tmp_path / "values.yaml"
    values.write_text(yaml.safe_dump(NON_DEFAULT_VALUES))
    helm.run("lint", "--strict", str(CHART), "--values", str(values))
    helm.run("lint", "--strict", str(CHART), "--values", str(KIND_VALUES))


def test_kind_example_runs_the_maintainer_anywhere_with_a_local_image(
    helm: Helm, monkeypatch: pytest.MonkeyPatch
) -> None:
    values = yaml.safe_load(KIND_VALUES.read_text())
    for name, value in config_env(helm.template(values)).items():
        monkeypatch.setenv(name, value)
    settings = load(OperatorSettings)
    assert settings.image_pull_policy == "Never"
    assert settings.maintainer.node_selector == {}
    assert settings.maintainer.tolerations == []
    assert settings.maintainer.resources["limits"] == {"memory": "1Gi"}


@pytest.mark.parametrize(
    ("values", "complaint"),
    [
        ({"schedule": {"concurrency": "Allow"}}, "additional properties 'concurrency'"),
        ({"maintainer": {"backoffLimit": -1}}, "/maintainer/backoffLimit"),
        ({"image": {"digest": "latest"}}, "/image/digest"),
        ({"defaults": {"database": {"table": "Products; drop"}}}, "/defaults/database/table"),
        ({"schedule": {"runNamePrefix": "Nightly"}}, "/schedule/runNamePrefix"),
        ({"operator": {"watchNamespaces": ["a", "a"]}}, "/operator/watchNamespaces"),
        # The run template is checked against the CRD's own spec schema, so a firing cannot fail.
        ({"schedule": {"run": {"spec": {"mode": "Bogus"}}}}, "/schedule/run/spec/mode"),
        (
            {"schedule": {"run": {"spec": {"maintainer": {"chunksize": 500}}}}},
            "additional properties 'chunksize'",
        ),
        (
            {"schedule": {"run": {"spec": {"maintainer": {"chunkSize": 10}}}}},
            "/schedule/run/spec/maintainer/chunkSize",
        ),
        (
            {"schedule": {"run": {"spec": {"storage": {"url": "s3://x"}}}}},
            "/schedule/run/spec/storage/url",
        ),
        (
            {"schedules": {"hourly": {"runNamePrefix": "h", "run": {"spec": {"mode": "Hourly"}}}}},
            "/schedules/hourly/run/spec/mode",
        ),
    ],
)
def test_schema_rejects_bad_values(helm: Helm, values: dict[str, Any], complaint: str) -> None:
    with pytest.raises(AssertionError, match=complaint):
        helm.template(values)


def test_values_file_is_valid_against_its_own_schema() -> None:
    """Every key in values.yaml is declared (the schema forbids unknown keys)."""
    schema = json.loads((CHART / "values.schema.json").read_text())
    values = yaml.safe_load((CHART / "values.yaml").read_text())
    assert set(values) <= set(schema["properties"])


# --- CRD: one source of truth --------------------------------------------------------------


def test_chart_crd_is_generated_from_the_source() -> None:
    result = subprocess.run(
        [sys.executable, str(ROOT / "scripts/sync-chart-crd.py"), "--check"],
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_the_run_templates_schema_is_the_crds_spec_schema() -> None:
    """values.schema.json's schedule.run.spec is generated from the CRD (checked above); what
    the CRD would keep as free-form (filter, sorting, affinity) stays free-form."""
    schema = json.loads((CHART / "values.schema.json").read_text())
    run = schema["properties"]["schedule"]["properties"]["run"]["properties"]
    entry = schema["properties"]["schedules"]["additionalProperties"]["properties"]["run"]
    assert run["spec"] == entry["properties"]["spec"] == {"$ref": "#/definitions/runSpec"}
    spec = schema["definitions"]["runSpec"]
    crd = yaml.safe_load(CRD_SOURCE.read_text())
    source = crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"]["properties"]["spec"]
    assert set(spec["properties"]) == set(source["properties"])
    assert spec["additionalProperties"] is False
    assert spec["properties"]["mode"]["enum"] == source["properties"]["mode"]["enum"]
    assert "additionalProperties" not in spec["properties"]["source"]["properties"]["filter"]
    assert not any("x-kubernetes" in key for key in json.dumps(spec).split('"'))


def test_a_valid_run_template_renders(helm: Helm) -> None:
    run = {"spec": {"mode": "FetchOnly", "source": {"filter": {"status": "active", "x": [1]}},
                    "maintainer": {"chunkSize": 500, "resources": {"limits": {"memory": "1Gi"}}},
                    "fetcher": {"affinity": {"nodeAffinity": {}}}}}  # fmt: skip
    manifests = helm.template({"schedule": {"run": run}})
    text = one(manifests, "ConfigMap", "-run-template")["data"]["run.yaml"]
    assert yaml.safe_load(text)["spec"] == run["spec"]


def test_the_creator_job_fails_at_once_on_a_permanent_error(default: list[Manifest]) -> None:
    """A bad template is exit 2: one pod, a Failed Job whose condition says why, no retries."""
    job = one(default, "CronJob")["spec"]["jobTemplate"]["spec"]
    rules = job["podFailurePolicy"]["rules"]
    assert rules[0] == {
        "action": "FailJob",
        "onExitCodes": {"containerName": "create-run", "operator": "In", "values": [2]},
    }
    assert rules[1]["action"] == "Ignore"
    (container,) = job["template"]["spec"]["containers"]
    assert container["terminationMessagePolicy"] == "FallbackToLogsOnError"


def test_rendered_crd_is_the_source_plus_the_keep_policy(default: list[Manifest]) -> None:
    source = yaml.safe_load(CRD_SOURCE.read_text())
    rendered = one(default, "CustomResourceDefinition")
    annotations = rendered["metadata"].pop("annotations")
    assert annotations.pop("helm.sh/resource-policy") == "keep"
    assert annotations == source["metadata"].get("annotations", {})
    source["metadata"].pop("annotations", None)
    assert rendered == source


def test_crd_is_left_out_when_managed_elsewhere(helm: Helm) -> None:
    assert not find(helm.template({"crds": {"create": False}}), "CustomResourceDefinition")


# --- the operator's settings contract ------------------------------------------------------


def test_operator_config_is_exactly_what_the_operator_reads(
    default: list[Manifest], monkeypatch: pytest.MonkeyPatch
) -> None:
    env = config_env(default)
    known = {field.alias for field in OperatorSettings.model_fields.values()}
    known |= {field.alias for field in WebhookSettings.model_fields.values()}
    assert set(env) <= known, f"names the operator does not read: {set(env) - known}"
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    settings = load(OperatorSettings)
    assert settings.namespaces == ["sync"]
    assert settings.all_namespaces is False
    assert settings.image == "ghcr.io/catalogsync/catalogsync:0.1.0"
    assert settings.job_service_account == "cs-catalogsync-job"
    assert settings.job_run_as_user == 10001
    assert settings.storage_url is None
    assert settings.fetcher == default_fetcher(), "chart defaults match the operator's"
    assert settings.maintainer == default_maintainer(), "8Gi on performance CPUs by default"
    assert settings.maintainer.resources["requests"]["memory"] == "8Gi"
    assert not any(name.startswith("CATALOGSYNC_WEBHOOK") for name in env), "no webhook by default"


def test_non_default_values_reach_the_operator(
    custom: list[Manifest], monkeypatch: pytest.MonkeyPatch
) -> None:
    for name, value in config_env(custom).items():
        monkeypatch.setenv(name, value)
    settings = load(OperatorSettings)
    assert settings.image == ("registry.example.com/platform/catalogsync:1.2.3@sha256:" + "ab" * 32)
    assert settings.image_pull_policy == "Always"
    assert settings.image_pull_secrets == ["registry-credentials"]
    assert settings.medipim_url == "https://medipim.example.com"
    assert settings.medipim_credentials_secret == "mp"
    assert settings.storage_url == "https://abcd.supabase.co"
    assert settings.storage_bucket == "catalog"
    assert settings.storage_credentials_secret == "st"
    assert settings.database_table == "catalog.products"
    assert settings.database_credentials_secret == "db"
    assert settings.successful_runs_history_limit == 5
    assert settings.failed_runs_history_limit == 1
    assert settings.skipped_runs_history_limit == 2
    assert settings.fetcher.priority_class_name == "batch-low"
    assert settings.fetcher.node_selector == {"pool": "batch"}
    assert settings.fetcher.backoff_limit == 4
    assert settings.fetcher.scratch_size_limit == "2Gi"
    assert settings.fetcher.env == [{"name": "FETCHER_MAX_ATTEMPTS", "value": "7"}]
    assert settings.maintainer.affinity is not None
    assert settings.maintainer.node_selector == {}
    assert settings.maintainer.tolerations == []
    assert settings.maintainer.scratch_size_limit is None
    assert settings.maintainer.resources["limits"] == {"memory": "4Gi"}
    monkeypatch.setenv("CATALOGSYNC_WEBHOOK_URL", "https://hooks.example.com/x")
    webhook = load(WebhookSettings)
    assert webhook.attempts == 3


def test_watch_namespaces_give_each_namespace_its_roles_and_jobs_account(helm: Helm) -> None:
    values = {"operator": {"watchNamespaces": ["a", "b"]}, "schedule": {"runNamespace": "a"}}
    manifests = helm.template(values, namespace="ops")
    assert config_env(manifests)["CATALOGSYNC_NAMESPACES"] == "a,b"
    for suffix in ("-operator", "-job"):
        assert {r["metadata"]["namespace"] for r in find(manifests, "Role", suffix)} == {"a", "b"}
        bindings = find(manifests, "RoleBinding", suffix)
        assert {b["metadata"]["namespace"] for b in bindings} == {"a", "b"}
    job_accounts = find(manifests, "ServiceAccount", "-job")
    assert {sa["metadata"]["namespace"] for sa in job_accounts} == {"a", "b"}
    operator_binding = find(manifests, "RoleBinding", "-operator")[0]
    assert operator_binding["subjects"] == [
        {"kind": "ServiceAccount", "name": "cs-catalogsync-operator", "namespace": "ops"}
    ]
    assert not find(manifests, "ClusterRole", "-operator")


# --- RBAC: only the verbs each identity uses -----------------------------------------------


def test_jobs_may_only_read_runs_and_patch_their_status(default: list[Manifest]) -> None:
    assert rules(one(default, "Role", "-job")) == {
        ("catalogsync.io", "catalogsyncs", "get"),
        ("catalogsync.io", "catalogsyncs/status", "patch"),
    }
    binding = one(default, "RoleBinding", "-job")
    assert binding["subjects"][0]["name"] == "cs-catalogsync-job"


def test_scheduler_may_only_create_runs_and_read_its_job(default: list[Manifest]) -> None:
    assert rules(one(default, "Role", "-scheduler")) == {
        ("catalogsync.io", "catalogsyncs", "create"),
        ("batch", "jobs", "get"),
    }


def test_scheduler_creating_runs_elsewhere_gets_create_only_there(helm: Helm) -> None:
    manifests = helm.template(
        {"schedule": {"runNamespace": "runs"}, "operator": {"watchNamespaces": ["runs"]}},
        namespace="ops",
    )
    roles = {r["metadata"]["namespace"]: rules(r) for r in find(manifests, "Role", "-scheduler")}
    assert roles == {
        "ops": {("batch", "jobs", "get")},
        "runs": {("catalogsync.io", "catalogsyncs", "create")},
    }


def test_operator_gets_exactly_the_verbs_its_code_uses(default: list[Manifest]) -> None:
    """The e2e test proves these suffice (and that removing one fails the expected step)."""
    assert rules(one(default, "Role", "-operator")) == {
        *(
            ("catalogsync.io", "catalogsyncs", v)
            for v in ("get", "list", "watch", "patch", "delete")
        ),
        ("catalogsync.io", "catalogsyncs/status", "patch"),
        ("catalogsync.io", "catalogsyncs/finalizers", "update"),
        *(("batch", "jobs", v) for v in ("get", "list", "watch", "create", "delete")),
        ("", "pods", "list"),
        ("", "pods", "watch"),
        ("", "secrets", "get"),
        ("", "events", "create"),
        ("", "events", "list"),
    }
    assert not find(default, "ClusterRole", "-operator")
    assert not find(default, "ClusterRoleBinding")


def test_cluster_wide_mode_uses_a_cluster_role_for_the_operator_only(helm: Helm) -> None:
    manifests = helm.template({"operator": {"watchAllNamespaces": True}}, namespace="ops")
    cluster_role = one(manifests, "ClusterRole", "-operator")
    assert rules(one(helm.template(namespace="ops"), "Role", "-operator")) <= rules(cluster_role)
    assert not find(manifests, "Role", "-operator")
    assert config_env(manifests)["CATALOGSYNC_ALL_NAMESPACES"] == "true"
    assert "CATALOGSYNC_NAMESPACES" not in config_env(manifests)
    assert find(manifests, "Role", "-job")


# --- workloads -----------------------------------------------------------------------------


def test_operator_deployment_runs_one_replica_recreated_with_a_liveness_probe(
    default: list[Manifest],
) -> None:
    deployment = one(default, "Deployment", "-operator")
    assert deployment["spec"]["replicas"] == 1
    assert deployment["spec"]["strategy"] == {"type": "Recreate"}
    pod = deployment["spec"]["template"]["spec"]
    assert pod["serviceAccountName"] == "cs-catalogsync-operator"
    (container,) = pod["containers"]
    assert container["args"] == ["operator"]
    assert container["livenessProbe"]["httpGet"] == {"path": "/healthz", "port": "health"}
    assert container["ports"] == [
        {"name": "health", "containerPort": 8080, "protocol": "TCP"},
        {"name": "metrics", "containerPort": 9110, "protocol": "TCP"},
    ]
    assert config_env(default)["CATALOGSYNC_LIVENESS_ENDPOINT"] == "http://0.0.0.0:8080/healthz"
    assert container["envFrom"] == [{"configMapRef": {"name": "cs-catalogsync-operator"}}]
    annotations = deployment["spec"]["template"]["metadata"]["annotations"]
    assert len(annotations["checksum/config"]) == 64, "a config change restarts the operator"


def test_operator_pod_settings_and_webhook_secret(custom: list[Manifest]) -> None:
    pod = one(custom, "Deployment", "-operator")["spec"]["template"]["spec"]
    (container,) = pod["containers"]
    assert (
        container["image"] == "registry.example.com/platform/catalogsync:1.2.3@sha256:" + "ab" * 32
    )
    assert container["imagePullPolicy"] == "Always"
    assert pod["imagePullSecrets"] == [{"name": "registry-credentials"}]
    assert pod["nodeSelector"] == {"kubernetes.io/os": "linux"}
    assert pod["tolerations"][0]["key"] == "dedicated"
    assert "nodeAffinity" in pod["affinity"]
    assert container["resources"]["limits"] == {"memory": "200Mi"}
    assert container["env"] == [{"name": "HTTPS_PROXY", "value": "http://proxy.example.com:3128"}]
    url_file = config_env(custom)["CATALOGSYNC_WEBHOOK_URL_FILE"]
    mount = next(m for m in container["volumeMounts"] if url_file.startswith(m["mountPath"] + "/"))
    assert mount["readOnly"] is True
    volume = next(v for v in pod["volumes"] if v["name"] == mount["name"])
    assert volume["secret"] == {
        "secretName": "sync-webhook",
        "items": [{"key": "url", "path": url_file.rsplit("/", 1)[1]}],
    }


def test_cronjob_defaults(default: list[Manifest]) -> None:
    cronjob = one(default, "CronJob")
    spec = cronjob["spec"]
    assert spec["schedule"] == "0 2 * * *"
    assert "timeZone" not in spec
    assert spec["suspend"] is False
    assert spec["startingDeadlineSeconds"] == 600
    assert spec["concurrencyPolicy"] == "Forbid"
    assert spec["successfulJobsHistoryLimit"] == 1
    assert spec["failedJobsHistoryLimit"] == 1
    job = spec["jobTemplate"]
    assert job["metadata"]["labels"]["catalogsync.io/schedule"] == cronjob["metadata"]["name"]
    assert job["spec"]["ttlSecondsAfterFinished"] == 86400
    pod = job["spec"]["template"]["spec"]
    assert pod["serviceAccountName"] == "cs-catalogsync-scheduler"
    assert pod["restartPolicy"] == "Never"
    (container,) = pod["containers"]
    assert container["args"][:3] == ["create-run", "--namespace=sync", "--prefix=medipim-au"]
    env = {e["name"]: e["valueFrom"] for e in container["env"]}
    assert env["JOB_NAME"] == {
        "fieldRef": {"fieldPath": "metadata.labels['batch.kubernetes.io/job-name']"}
    }
    assert env["POD_NAMESPACE"] == {"fieldRef": {"fieldPath": "metadata.namespace"}}
    assert env["CATALOGSYNC_RUN_TEMPLATE"] == {
        "configMapKeyRef": {"name": "cs-catalogsync-run-template", "key": "run.yaml"}
    }


def test_cronjob_non_default_schedule(custom: list[Manifest]) -> None:
    spec = one(custom, "CronJob")["spec"]
    assert spec["schedule"] == "30 3 * * 1-5"
    assert spec["timeZone"] == "Australia/Sydney"
    assert spec["suspend"] is True
    assert spec["startingDeadlineSeconds"] == 300
    assert spec["jobTemplate"]["spec"]["ttlSecondsAfterFinished"] == 600
    pod = spec["jobTemplate"]["spec"]["template"]["spec"]
    assert pod["priorityClassName"] == "batch-low"
    assert "--prefix=nightly" in pod["containers"][0]["args"]


def test_schedule_can_be_turned_off(helm: Helm) -> None:
    manifests = helm.template({"schedule": {"enabled": False}})
    assert not find(manifests, "CronJob")
    assert not find(manifests, "ServiceAccount", "-scheduler")
    assert not find(manifests, "Role", "-scheduler")
    assert not find(manifests, "ConfigMap", "-run-template")


def test_run_template_is_what_create_run_expects(custom: list[Manifest]) -> None:
    text = one(custom, "ConfigMap", "-run-template")["data"]["run.yaml"]
    template = parse_template(text, "ConfigMap")
    firing = firing_from_job(
        {
            "metadata": {
                "name": "cs-catalogsync-29537400",
                "annotations": {
                    "batch.kubernetes.io/cronjob-scheduled-timestamp": "2026-03-01T03:30:00+11:00"
                },
                "ownerReferences": [{"kind": "CronJob", "name": "cs-catalogsync"}],
            }
        },
        now=datetime.now(UTC),
    )
    body = build_run(template, firing, run_name("nightly", firing), "sync")
    assert body["metadata"]["name"] == "nightly-20260228-1630"
    assert body["metadata"]["labels"] == {
        "team": "data",
        "catalogsync.io/trigger": "scheduled",
        "catalogsync.io/schedule": "cs-catalogsync",
    }
    assert body["spec"] == {"maintainer": {"chunkSize": 2000, "deleteMissing": True}}


def test_several_schedules_each_get_a_cronjob_and_a_run_template(helm: Helm) -> None:
    manifests = helm.template(
        {
            "schedule": {"suspend": True, "timeZone": "Australia/Sydney",
                         "run": {"labels": {"team": "data"},
                                 "spec": {"maintainer": {"chunkSize": 2000}}}},
            "schedules": {
                "full": {"schedule": "0 2 * * 0", "runNamePrefix": "au-full",
                         "run": {"spec": {"maintainer": {"deleteMissing": True}}}},
                "incremental": {"schedule": "0 * * * *", "runNamePrefix": "au-incr",
                                "suspend": False, "run": {"spec": {"mode": "Incremental"}}},
            },
        }
    )  # fmt: skip
    cronjobs = {c["metadata"]["name"]: c["spec"] for c in find(manifests, "CronJob")}
    assert set(cronjobs) == {"cs-catalogsync-full", "cs-catalogsync-incremental"}
    full, incremental = cronjobs["cs-catalogsync-full"], cronjobs["cs-catalogsync-incremental"]
    assert (full["schedule"], full["suspend"], full["timeZone"]) == (
        "0 2 * * 0", True, "Australia/Sydney"
    )  # fmt: skip
    assert (incremental["schedule"], incremental["suspend"]) == ("0 * * * *", False)
    for name, spec, prefix in (("full", full, "au-full"), ("incremental", incremental, "au-incr")):
        job = spec["jobTemplate"]
        assert job["metadata"]["labels"]["catalogsync.io/schedule"] == f"cs-catalogsync-{name}"
        (container,) = job["spec"]["template"]["spec"]["containers"]
        assert f"--prefix={prefix}" in container["args"]
        env = {e["name"]: e["valueFrom"] for e in container["env"]}
        assert env["CATALOGSYNC_RUN_TEMPLATE"]["configMapKeyRef"]["name"] == (
            f"cs-catalogsync-{name}-run-template"
        )
    templates = {
        c["metadata"]["name"]: parse_template(c["data"]["run.yaml"], "ConfigMap")
        for c in find(manifests, "ConfigMap", "-run-template")
    }
    assert templates["cs-catalogsync-full-run-template"]["spec"] == {
        "maintainer": {"chunkSize": 2000, "deleteMissing": True}
    }
    assert templates["cs-catalogsync-incremental-run-template"]["spec"] == {
        "mode": "Incremental", "maintainer": {"chunkSize": 2000}
    }  # fmt: skip
    assert templates["cs-catalogsync-incremental-run-template"]["metadata"]["labels"] == {
        "team": "data"
    }


# --- restricted pod security everywhere ----------------------------------------------------


@pytest.mark.parametrize("which", ["default", "custom"])
def test_every_pod_meets_the_restricted_profile(
    which: str, default: list[Manifest], custom: list[Manifest]
) -> None:
    manifests = default if which == "default" else custom
    specs = dict(pod_specs(manifests))
    assert set(specs) == {"Deployment/cs-catalogsync-operator", "CronJob/cs-catalogsync"}
    for name, pod in specs.items():
        assert pod["securityContext"]["runAsNonRoot"] is True, name
        assert pod["securityContext"]["runAsUser"] == 10001, name
        assert pod["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}, name
        assert not pod.get("hostNetwork"), name
        assert not pod.get("hostPID"), name
        volumes = {v["name"]: v for v in pod["volumes"]}
        for container in pod["containers"] + pod.get("initContainers", []):
            context = container["securityContext"]
            assert context["allowPrivilegeEscalation"] is False, name
            assert context["readOnlyRootFilesystem"] is True, name
            assert context["capabilities"] == {"drop": ["ALL"]}, name
            assert context["seccompProfile"] == {"type": "RuntimeDefault"}, name
            assert context["runAsNonRoot"] is True, name
            mounts = {m["mountPath"]: m["name"] for m in container["volumeMounts"]}
            assert "emptyDir" in volumes[mounts["/tmp"]], f"{name}: /tmp is writable scratch"
            assert container["resources"]["requests"], name
            assert container["resources"]["limits"]["memory"], name


def test_aggregated_roles_give_view_read_and_edit_write_on_runs(
    helm: Helm, default: list[Manifest]
) -> None:
    view = one(default, "ClusterRole", "-view")
    edit = one(default, "ClusterRole", "-edit")
    aggregate = "rbac.authorization.k8s.io/aggregate-to-"
    assert {k for k in view["metadata"]["labels"] if k.startswith(aggregate)} == {
        f"{aggregate}{role}" for role in ("view", "edit", "admin")
    }
    assert {k for k in edit["metadata"]["labels"] if k.startswith(aggregate)} == {
        f"{aggregate}{role}" for role in ("edit", "admin")
    }
    assert rules(view) == {
        ("catalogsync.io", resource, verb)
        for resource in ("catalogsyncs", "catalogsyncs/status")
        for verb in ("get", "list", "watch")
    }
    writes = ("create", "update", "patch", "delete", "deletecollection")
    assert rules(edit) == {("catalogsync.io", "catalogsyncs", verb) for verb in writes}
    off = helm.template({"rbac": {"aggregateToDefaultRoles": False}})
    assert not find(off, "ClusterRole")


def test_without_a_performance_pool_the_maintainer_runs_anywhere_with_its_memory(
    helm: Helm, monkeypatch: pytest.MonkeyPatch
) -> None:
    extra = {"key": "dedicated", "operator": "Exists", "effect": "NoSchedule"}
    values = {
        "performanceNodePool": False,
        "maintainer": {
            "nodeSelector": {"kubernetes.io/os": "linux"},
            "tolerations": [*default_maintainer().model_dump(by_alias=True)["tolerations"], extra],
        },
    }
    for name, value in config_env(helm.template(values)).items():
        monkeypatch.setenv(name, value)
    settings = load(OperatorSettings)
    assert settings.maintainer.node_selector == {"kubernetes.io/os": "linux"}
    assert settings.maintainer.tolerations == [extra]
    assert settings.maintainer.resources["requests"]["memory"] == "8Gi"
    assert settings.fetcher == default_fetcher()


def test_documented_ways_to_drop_the_maintainer_placement_pass_the_schema(helm: Helm) -> None:
    for args in (
        ["--set", "performanceNodePool=false"],
        ["--set", "maintainer.nodeSelector=null", "--set", "maintainer.tolerations=null"],
    ):
        helm.run("template", "cs", str(CHART), *args)


def test_a_schedule_into_an_unwatched_namespace_does_not_render(helm: Helm) -> None:
    refused = helm.run(
        "template", "cs", str(CHART), "-n", "sync", "--set", "schedule.runNamespace=elsewhere",
        check=False,
    )  # fmt: skip
    assert refused.returncode != 0
    assert 'schedule.runNamespace "elsewhere" is not watched by the operator' in refused.stderr
    assert "add it to operator.watchNamespaces" in refused.stderr
    for extra in (["--set", "operator.watchNamespaces={elsewhere}"],
                  ["--set", "operator.watchAllNamespaces=true"]):  # fmt: skip
        helm.run("template", "cs", str(CHART), "-n", "sync",
                 "--set", "schedule.runNamespace=elsewhere", *extra)  # fmt: skip


def test_chart_metadata_names_home_icon_and_maintainers() -> None:
    chart = yaml.safe_load((CHART / "Chart.yaml").read_text())
    assert chart["home"].startswith("https://")
    assert chart["icon"].startswith("https://")
    assert chart["maintainers"]
    assert all(m["name"] and m.get("url", m.get("email")) for m in chart["maintainers"])


def test_chart_readme_lists_every_value_and_is_generated() -> None:
    check = subprocess.run(
        [sys.executable, str(ROOT / "scripts/chart-readme.py"), "--check"],
        capture_output=True, text=True, check=False,
    )  # fmt: skip
    assert check.returncode == 0, check.stdout + check.stderr
    readme = (CHART / "README.md").read_text()

    def leaves(node: Any, prefix: str = "") -> list[str]:
        if isinstance(node, dict) and node and prefix not in ("schedule.run",):
            return [k for key, sub in node.items() for k in leaves(sub, f"{prefix}{key}.")]
        return [prefix.rstrip(".")]

    values = yaml.safe_load((CHART / "values.yaml").read_text())
    listed = set(re.findall(r"^\| `([^`]+)` \|", readme, re.MULTILINE))
    missing = [
        key for key in leaves(values)
        if key not in listed and not any(key.startswith(f"{row}.") for row in listed)
    ]  # fmt: skip
    assert missing == []
    undescribed = [
        key
        for key, cells in re.findall(r"^\| `([^`]+)` \|(.*)\|$", readme, re.MULTILINE)
        if not re.split(r"(?<!\\)\|", cells)[-1].strip()
    ]
    assert undescribed == [], "give these values a description (values.yaml `# --` or the schema)"


def test_helm_test_hook_checks_the_crd_and_the_operator_with_read_only_rights(
    helm: Helm,
) -> None:
    hooks = [
        m
        for m in helm.template(namespace="sync", tests=True)
        if (m["metadata"].get("annotations") or {}).get("helm.sh/hook") == "test"
    ]
    assert sorted(m["kind"] for m in hooks) == ["Pod", "Role", "RoleBinding", "ServiceAccount"]
    pod = one(hooks, "Pod")
    (container,) = pod["spec"]["containers"]
    assert container["command"] == ["kubectl-catalogsync"]
    assert container["args"] == ["-n", "sync", "check"]
    assert pod["spec"]["serviceAccountName"] == "cs-catalogsync-test"
    assert rules(one(hooks, "Role")) == {
        ("apps", "deployments", "list"),
        ("catalogsync.io", "catalogsyncs", "list"),
    }
    assert not [m for m in helm.template(namespace="sync") if m["kind"] == "Pod"]
    off = helm.template({"tests": {"enabled": False}}, namespace="sync", tests=True)
    assert not [m for m in off if m["kind"] == "Pod"]


def test_security_contexts_merge_per_component_and_extra_volumes_reach_the_operator(
    helm: Helm,
) -> None:
    volume = {"name": "ca", "configMap": {"name": "corporate-ca"}}
    mount = {"name": "ca", "mountPath": "/etc/ssl/corporate", "readOnly": True}
    values = {
        "operator": {
            "podSecurityContext": {"fsGroupChangePolicy": "OnRootMismatch"},
            "securityContext": {"runAsUser": 20000},
            "extraVolumes": [volume],
            "extraVolumeMounts": [mount],
        },
        "schedule": {"podSecurityContext": {"supplementalGroups": [5000]}},
    }
    manifests = helm.template(values)
    pod = one(manifests, "Deployment", "-operator")["spec"]["template"]["spec"]
    assert pod["securityContext"]["fsGroupChangePolicy"] == "OnRootMismatch"
    assert pod["securityContext"]["runAsNonRoot"] is True, "the restricted defaults stay"
    (container,) = pod["containers"]
    assert container["securityContext"]["runAsUser"] == 20000
    assert container["securityContext"]["capabilities"] == {"drop": ["ALL"]}
    assert volume in pod["volumes"]
    assert mount in container["volumeMounts"]
    cronjob = one(manifests, "CronJob")["spec"]["jobTemplate"]["spec"]["template"]["spec"]
    assert cronjob["securityContext"]["supplementalGroups"] == [5000]
    assert cronjob["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}


def test_stage_security_contexts_and_extra_volumes_reach_the_operators_jobs(
    helm: Helm, monkeypatch: pytest.MonkeyPatch
) -> None:
    volume = {"name": "ca", "configMap": {"name": "corporate-ca"}}
    mount = {"name": "ca", "mountPath": "/etc/ssl/corporate", "readOnly": True}
    values = {
        "fetcher": {
            "podSecurityContext": {"fsGroupChangePolicy": "OnRootMismatch"},
            "securityContext": {"runAsUser": 20000},
            "extraVolumes": [volume],
            "extraVolumeMounts": [mount],
        },
        "maintainer": {"podSecurityContext": {"supplementalGroups": [5000], "runAsUser": None}},
    }
    for name, value in config_env(helm.template(values)).items():
        monkeypatch.setenv(name, value)
    settings = load(OperatorSettings)
    assert settings.fetcher.pod_security_context == {"fsGroupChangePolicy": "OnRootMismatch"}
    assert settings.fetcher.security_context == {"runAsUser": 20000}
    assert settings.fetcher.extra_volumes == [volume]
    assert settings.fetcher.extra_volume_mounts == [mount]
    assert settings.maintainer.pod_security_context == {
        "supplementalGroups": [5000],
        "runAsUser": None,
    }, "a null reaches the operator, which removes that default"
    assert settings.maintainer.extra_volumes == []
    plain = config_env(helm.template())
    for name in ("CATALOGSYNC_FETCHER", "CATALOGSYNC_MAINTAINER"):
        stage = json.loads(plain[name])
        assert stage["podSecurityContext"] == {}
        assert stage["extraVolumes"] == []
