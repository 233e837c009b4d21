"""The Job manifests: names, ownership, the env contract, security and placement."""

from __future__ import annotations

import base64
from typing import Any

import pytest

from catalogsync.common.config import (
    DatabaseSettings,
    FetcherSettings,
    MaintainerSettings,
    MedipimSettings,
    RunSettings,
    StorageSettings,
    load,
)
from catalogsync.operator import credentials
from catalogsync.operator.jobs import build_job, job_name
from catalogsync.operator.spec import Stage, resolve
from tests.operator_objects import CR_UID, cr, settings

SECRET_VALUES = {
    ("medipim-credentials", "apiKeyId"): "key-id-0001",
    ("medipim-credentials", "apiKeySecret"): "key-secret-0002",
    ("supabase-storage", "serviceRoleKey"): "service-role-0003",
    ("catalog-database", "url"): "postgresql://u:pw-0004@db:5432/app",
}


def manifest(stage: Stage, spec: dict[str, Any] | None = None, **config: Any) -> dict[str, Any]:
    return build_job(resolve(cr(spec=spec), settings(**config)), stage, settings(**config))


def container(job: dict[str, Any]) -> dict[str, Any]:
    containers: list[dict[str, Any]] = job["spec"]["template"]["spec"]["containers"]
    assert len(containers) == 1
    return containers[0]


def resolved_env(job: dict[str, Any]) -> dict[str, str]:
    """The container's env as the kubelet would resolve it, with stand-in secret values."""
    env: dict[str, str] = {}
    for item in container(job)["env"]:
        if "value" in item:
            env[item["name"]] = item["value"]
        else:
            ref = item["valueFrom"]["secretKeyRef"]
            env[item["name"]] = SECRET_VALUES[(ref["name"], ref["key"])]
    return env


@pytest.mark.parametrize("stage", ["fetcher", "maintainer"])
def test_jobs_are_named_labelled_and_owned_by_the_run(stage: Stage) -> None:
    job = manifest(stage)
    assert job["metadata"]["name"] == f"run-1-{stage}"
    labels = job["metadata"]["labels"]
    assert labels["app.kubernetes.io/managed-by"] == "catalogsync-operator"
    assert labels["catalogsync.io/run"] == "run-1"
    assert labels["catalogsync.io/stage"] == stage
    assert labels["catalogsync.io/catalog"] == "medipim-au"
    assert job["spec"]["template"]["metadata"]["labels"] == labels
    (owner,) = job["metadata"]["ownerReferences"]
    assert owner == {
        "apiVersion": "catalogsync.io/v1alpha1",
        "kind": "CatalogSync",
        "name": "run-1",
        "uid": CR_UID,
        "controller": True,
        "blockOwnerDeletion": True,
    }


def test_the_longest_allowed_run_name_gives_valid_job_names() -> None:
    assert len(job_name("x" * 52, "maintainer")) == 63


@pytest.mark.parametrize("stage", ["fetcher", "maintainer"])
def test_pods_run_restricted_and_never_restart(stage: Stage) -> None:
    job = manifest(stage)
    pod = job["spec"]["template"]["spec"]
    assert pod["restartPolicy"] == "Never"
    assert pod["serviceAccountName"] == "catalogsync-job"
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert pod["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}
    security = container(job)["securityContext"]
    assert security["allowPrivilegeEscalation"] is False
    assert security["readOnlyRootFilesystem"] is True
    assert security["capabilities"] == {"drop": ["ALL"]}
    mounts = {m["mountPath"]: m["name"] for m in container(job)["volumeMounts"]}
    volumes = {v["name"]: v for v in pod["volumes"]}
    assert "emptyDir" in volumes[mounts["/tmp"]]
    assert container(job)["args"] == ["fetch" if stage == "fetcher" else "maintain"]


@pytest.mark.parametrize("stage", ["fetcher", "maintainer"])
def test_permanent_exit_codes_fail_the_job_at_once(stage: Stage) -> None:
    rules = manifest(stage)["spec"]["podFailurePolicy"]["rules"]
    fail = next(rule for rule in rules if rule["action"] == "FailJob")
    assert fail["onExitCodes"] == {"containerName": stage, "operator": "In", "values": [2, 3]}


def test_the_fetcher_env_is_what_the_fetcher_reads() -> None:
    env = resolved_env(manifest("fetcher"))
    medipim = load(MedipimSettings, **env)
    assert medipim.api_key_id == "key-id-0001"
    assert medipim.api_key_secret == "key-secret-0002"
    assert medipim.filter == {"status": "active"}
    assert medipim.sorting == {"id": "ASC"}
    storage = load(StorageSettings, **env)
    assert storage.url == "https://ref.supabase.co"
    assert storage.bucket == "medipim-raw"
    assert storage.service_role_key == "service-role-0003"
    run = load(RunSettings, **env)
    assert (run.run_id, run.cr_namespace, run.cr_name) == ("run-1", "ns", "run-1")
    assert run.log_format == "json"


def test_only_an_incremental_fetcher_reads_the_database() -> None:
    full = resolved_env(manifest("fetcher"))
    assert load(FetcherSettings, **full).mode == "Full"
    assert "DATABASE_URL" not in full
    spec = {
        "mode": "Incremental",
        "source": {"incrementalOverlapSeconds": 600},
        "database": {"table": "catalog.items"},
    }
    env = resolved_env(manifest("fetcher", spec))
    fetcher = load(FetcherSettings, **env)
    assert (fetcher.mode, fetcher.incremental_overlap) == ("Incremental", 600)
    database = load(DatabaseSettings, **env)
    assert database.url == "postgresql://u:pw-0004@db:5432/app"
    assert database.table == "catalog.items"
    run = resolve(cr(spec=spec), settings())
    assert run.stages == ("fetcher", "maintainer")
    needed = {(k.secret, k.key) for k in credentials.required(run, "fetcher")}
    assert ("catalog-database", "url") in needed


def test_the_maintainer_env_is_what_the_maintainer_reads() -> None:
    spec = {
        "maintainer": {"chunkSize": 250, "dryRun": True, "deleteMissing": True,
                       "maxDeleteFraction": 0.1},
        "database": {"table": "catalog.items"},
    }  # fmt: skip
    env = resolved_env(manifest("maintainer", spec))
    maintainer = load(MaintainerSettings, **env)
    assert maintainer.chunk_size == 250
    assert maintainer.dry_run is True
    assert maintainer.delete_missing is True
    assert maintainer.max_delete_fraction == 0.1
    assert maintainer.object is None
    database = load(DatabaseSettings, **env)
    assert database.url == "postgresql://u:pw-0004@db:5432/app"
    assert database.table == "catalog.items"


def test_secret_values_reach_the_pods_only_by_reference() -> None:
    for stage in ("fetcher", "maintainer"):
        run = resolve(cr(), settings())
        refs = {
            (item["valueFrom"]["secretKeyRef"]["name"], item["valueFrom"]["secretKeyRef"]["key"])
            for item in container(build_job(run, stage, settings()))["env"]
            if "valueFrom" in item
        }
        assert refs == {(k.secret, k.key) for k in credentials.required(run, stage)}
        text = repr(build_job(run, stage, settings()))
        for value in SECRET_VALUES.values():
            assert value not in text
            assert base64.b64encode(value.encode()).decode() not in text


def test_local_storage_needs_no_service_role_key() -> None:
    job = manifest("fetcher", CATALOGSYNC_STORAGE_URL="file:///data")
    names = {item["name"] for item in container(job)["env"]}
    assert "STORAGE_SERVICE_ROLE_KEY" not in names


def test_maintain_only_reads_the_published_object_under_the_prefix() -> None:
    env = resolved_env(
        manifest("maintainer", {"mode": "MaintainOnly", "storage": {"prefix": "au"}})
    )
    assert env["MAINTAINER_OBJECT"] == "au/latest.ndjson"
    env = resolved_env(manifest("maintainer", {"maintainer": {"object": "runs/old.ndjson"}}))
    assert env["MAINTAINER_OBJECT"] == "runs/old.ndjson"


def test_the_maintainer_gets_8gi_on_a_performance_node_by_default() -> None:
    job = manifest("maintainer")
    resources = container(job)["resources"]
    assert resources["requests"]["memory"] == "8Gi"
    assert resources["limits"]["memory"] == "8Gi"
    pod = job["spec"]["template"]["spec"]
    assert pod["nodeSelector"] == {"catalogsync.io/cpu-class": "performance"}
    assert pod["tolerations"] == [
        {"key": "catalogsync.io/cpu-class", "operator": "Equal", "value": "performance",
         "effect": "NoSchedule"},
    ]  # fmt: skip
    fetcher = manifest("fetcher")["spec"]["template"]["spec"]
    assert "tolerations" not in fetcher
    assert "nodeSelector" not in fetcher


def test_pod_settings_in_the_spec_replace_the_operator_defaults() -> None:
    spec = {
        "maintainer": {
            "resources": {"requests": {"memory": "2Gi"}},
            "nodeSelector": {"pool": "batch"},
            "tolerations": [],
            "affinity": {"nodeAffinity": {"x": 1}},
            "priorityClassName": "batch-high",
            "backoffLimit": 0,
            "activeDeadlineSeconds": 600,
        }
    }
    job = manifest("maintainer", spec)
    pod = job["spec"]["template"]["spec"]
    assert container(job)["resources"] == {"requests": {"memory": "2Gi"}}
    assert pod["nodeSelector"] == {"pool": "batch"}
    assert "tolerations" not in pod
    assert pod["affinity"] == {"nodeAffinity": {"x": 1}}
    assert pod["priorityClassName"] == "batch-high"
    assert job["spec"]["backoffLimit"] == 0
    assert job["spec"]["activeDeadlineSeconds"] == 600


def test_operator_config_sets_stage_defaults_and_extra_env_cannot_override_the_contract() -> None:
    config: dict[str, Any] = {
        "CATALOGSYNC_FETCHER": '{"backoffLimit": 5, "env": [{"name": "HTTPS_PROXY", '
        '"value": "http://proxy:3128"}, {"name": "SYNC_CR_NAME", "value": "other"}]}',
        "CATALOGSYNC_IMAGE": "registry.example/catalogsync:9.9",
    }
    job = manifest("fetcher", **config)
    assert job["spec"]["backoffLimit"] == 5
    assert container(job)["image"] == "registry.example/catalogsync:9.9"
    env = resolved_env(job)
    assert env["HTTPS_PROXY"] == "http://proxy:3128"
    assert env["SYNC_CR_NAME"] == "run-1"
    assert resolve(cr(), settings(**config)).pods["fetcher"].resources["limits"]["memory"]


def test_pod_labels_and_annotations_from_the_operator_and_the_run() -> None:
    config = settings(
        CATALOGSYNC_FETCHER='{"podAnnotations": {"sidecar.istio.io/inject": "false"},'
        ' "podLabels": {"team": "data", "catalogsync.io/run": "spoofed"}}'
    )
    spec = {"maintainer": {"podAnnotations": {"linkerd.io/inject": "disabled"}}}
    run = resolve(cr(spec=spec), config)
    fetcher = build_job(run, "fetcher", config)["spec"]["template"]["metadata"]
    assert fetcher["annotations"] == {"sidecar.istio.io/inject": "false"}
    assert fetcher["labels"]["team"] == "data"
    assert fetcher["labels"]["catalogsync.io/run"] == run.name, "the operator's labels win"
    maintainer = build_job(run, "maintainer", config)["spec"]["template"]["metadata"]
    assert maintainer["annotations"] == {"linkerd.io/inject": "disabled"}
    plain = build_job(resolve(cr(), settings()), "fetcher", settings())["spec"]["template"]
    assert "annotations" not in plain["metadata"]


def test_stage_security_contexts_merge_over_the_restricted_defaults() -> None:
    config = settings(
        CATALOGSYNC_FETCHER='{"podSecurityContext": {"runAsUser": null, "fsGroup": 3000,'
        ' "seccompProfile": {"type": "Localhost", "localhostProfile": "p.json"}},'
        ' "securityContext": {"readOnlyRootFilesystem": false, "runAsUser": 4000},'
        ' "extraVolumes": [{"name": "ca", "configMap": {"name": "corporate-ca"}}],'
        ' "extraVolumeMounts": [{"name": "ca", "mountPath": "/etc/ssl/corporate"}]}'
    )
    run = resolve(cr(), config)
    job = build_job(run, "fetcher", config)
    pod = job["spec"]["template"]["spec"]
    assert pod["securityContext"] == {
        "runAsNonRoot": True,
        "runAsGroup": 10001,
        "fsGroup": 3000,
        "seccompProfile": {"type": "Localhost", "localhostProfile": "p.json"},
    }, "override keys win, null removes one, the rest of the defaults stay"
    assert container(job)["securityContext"] == {
        "allowPrivilegeEscalation": False,
        "readOnlyRootFilesystem": False,
        "runAsNonRoot": True,
        "runAsUser": 4000,
        "capabilities": {"drop": ["ALL"]},
    }
    assert pod["volumes"][0]["name"] == "scratch"
    assert pod["volumes"][1] == {"name": "ca", "configMap": {"name": "corporate-ca"}}
    assert container(job)["volumeMounts"] == [
        {"name": "scratch", "mountPath": "/tmp"},
        {"name": "ca", "mountPath": "/etc/ssl/corporate"},
    ]
    plain = build_job(run, "maintainer", config)["spec"]["template"]["spec"]
    assert plain["securityContext"]["runAsUser"] == 10001
    assert [v["name"] for v in plain["volumes"]] == ["scratch"]


def test_a_clash_with_the_scratch_volume_fails_the_run_before_its_jobs() -> None:
    config = settings(
        CATALOGSYNC_MAINTAINER='{"extraVolumes": [{"name": "scratch", "emptyDir": {}}]}'
    )
    run = resolve(cr(), config)
    (problem,) = run.pod_problems["maintainer"]
    assert problem.startswith("maintainer pod: extraVolumes[0]: the name 'scratch'"), problem
    assert "fetcher" not in run.pod_problems
