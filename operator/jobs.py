"""The Jobs of a run, as plain manifests.

Everything a stage needs reaches it as an environment variable named by the settings classes in
``common/config.py`` (so the names cannot drift between the operator and the jobs), credentials
through ``secretKeyRef`` only. The pods run under the restricted Pod Security profile and a
read-only root filesystem; ``/tmp``, an emptyDir, holds the fetcher's spool file.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import orjson

from catalogsync.common.config import (
    DatabaseSettings,
    FetcherSettings,
    MaintainerSettings,
    MedipimSettings,
    RunSettings,
    StorageSettings,
    env_name,
)
from catalogsync.common.errors import PERMANENT_EXIT_CODES
from catalogsync.common.kube import API_VERSION, KIND
from catalogsync.operator.credentials import required
from catalogsync.operator.pod_settings import SCRATCH_DIR, SCRATCH_VOLUME
from catalogsync.operator.settings import OperatorSettings, StagePod
from catalogsync.operator.spec import RunSpec, Stage
from catalogsync.operator.status import merge_patch

MANAGED_BY = "app.kubernetes.io/managed-by"
MANAGER = "catalogsync-operator"
RUN_LABEL = "catalogsync.io/run"
STAGE_LABEL = "catalogsync.io/stage"
CATALOG_LABEL = "catalogsync.io/catalog"

COMMANDS: dict[Stage, str] = {"fetcher": "fetch", "maintainer": "maintain"}
TERMINATION_MESSAGE_PATH: str = RunSettings.model_fields["termination_message_path"].default
"""Where the jobs write their summary by default, so the Job need not set the variable."""


def job_name(run_name: str, stage: Stage) -> str:
    """``<cr>-fetcher`` / ``<cr>-maintainer`` (the CRD caps CR names at 52 characters)."""
    return f"{run_name}-{stage}"


def labels(run: RunSpec, stage: Stage) -> dict[str, str]:
    return {
        "app.kubernetes.io/name": "catalogsync",
        "app.kubernetes.io/component": stage,
        MANAGED_BY: MANAGER,
        RUN_LABEL: run.name,
        STAGE_LABEL: stage,
        CATALOG_LABEL: run.catalog,
    }


def owner_reference(run: RunSpec) -> dict[str, Any]:
    """Makes the CR the Job's controller: deleting the CR deletes its Jobs and their Pods."""
    return {
        "apiVersion": API_VERSION,
        "kind": KIND,
        "name": run.name,
        "uid": run.uid,
        "controller": True,
        "blockOwnerDeletion": True,
    }


def _var(name: str, value: Any) -> dict[str, Any]:
    if isinstance(value, bool):
        text = "true" if value else "false"
    elif isinstance(value, Mapping):
        text = orjson.dumps(value).decode()
    else:
        text = str(value)
    return {"name": name, "value": text}


def environment(run: RunSpec, stage: Stage, settings: OperatorSettings) -> list[dict[str, Any]]:
    """The env contract of ``stage``; secret values only as ``secretKeyRef``."""
    env = [
        _var(env_name(RunSettings, "run_id"), run.name),
        _var(env_name(RunSettings, "catalog"), run.catalog),
        _var(env_name(RunSettings, "cr_namespace"), run.namespace),
        _var(env_name(RunSettings, "cr_name"), run.name),
        _var(env_name(RunSettings, "log_format"), "json"),
        _var(env_name(RunSettings, "progress_interval"), settings.job_progress_interval),
        _var(env_name(StorageSettings, "url"), run.storage_url or ""),
        _var(env_name(StorageSettings, "bucket"), run.storage_bucket),
        _var(env_name(StorageSettings, "prefix"), run.storage_prefix),
        _var(env_name(StorageSettings, "credentials_secret"), run.storage_secret),
    ]
    if stage == "fetcher":
        env += [
            _var(env_name(MedipimSettings, "url"), run.source_url),
            _var(env_name(MedipimSettings, "filter"), run.source_filter),
            _var(env_name(MedipimSettings, "sorting"), run.source_sorting),
            _var(env_name(MedipimSettings, "credentials_secret"), run.source_secret),
            _var(env_name(FetcherSettings, "mode"), fetch_mode(run)),
        ]
        if run.mode == "Incremental":
            env += [
                _var(env_name(FetcherSettings, "incremental_overlap"), run.incremental_overlap),
                _var(env_name(DatabaseSettings, "table"), run.database_table),
                _var(env_name(DatabaseSettings, "credentials_secret"), run.database_secret),
            ]
    else:
        options = run.maintainer
        env += [
            _var(env_name(DatabaseSettings, "table"), run.database_table),
            _var(env_name(DatabaseSettings, "credentials_secret"), run.database_secret),
            _var(env_name(MaintainerSettings, "chunk_size"), options.chunk_size),
            _var(env_name(MaintainerSettings, "dry_run"), options.dry_run),
            _var(env_name(MaintainerSettings, "delete_missing"), options.delete_missing),
            _var(env_name(MaintainerSettings, "max_delete_fraction"), options.max_delete_fraction),
            _var(
                env_name(MaintainerSettings, "max_invalid_fraction"), options.max_invalid_fraction
            ),
        ]
        if obj := maintainer_object(run):
            env.append(_var(env_name(MaintainerSettings, "object"), obj))
    env += [
        {
            "name": item.env,
            "valueFrom": {"secretKeyRef": {"name": item.secret, "key": item.key}},
        }
        for item in required(run, stage)
    ]
    ours = {item["name"] for item in env}
    extra = [item for item in run.pods[stage].env if item.get("name") not in ours]
    return env + extra


def fetch_mode(run: RunSpec) -> str:
    """What the fetcher does: only an Incremental run fetches incrementally."""
    return "Incremental" if run.mode == "Incremental" else "Full"


def maintainer_object(run: RunSpec) -> str | None:
    """The storage key the maintainer reads when it is not this run's own object.

    In ``MaintainOnly`` there is no object of this run, so the published one is processed.
    """
    if run.maintainer.object:
        return run.maintainer.object
    if run.mode == "MaintainOnly":
        return StorageSettings.model_construct(prefix=_prefix(run.storage_prefix)).latest_key
    return None


def _prefix(value: str) -> str:
    return value if not value or value.endswith("/") else f"{value}/"


def pod_security_context(pod: StagePod, settings: OperatorSettings) -> dict[str, Any]:
    """The restricted pod securityContext, with the stage's ``podSecurityContext`` over it.

    Merged as a JSON merge patch: the chart's ``mergeOverwrite`` of the operator's contexts, plus
    a null to unset a restricted default (``runAsUser: null`` for a platform-assigned uid).
    """
    uid = settings.job_run_as_user
    ids = {} if uid is None else {"runAsUser": uid, "runAsGroup": uid, "fsGroup": uid}
    restricted = {"runAsNonRoot": True, **ids, "seccompProfile": {"type": "RuntimeDefault"}}
    return merge_patch(restricted, pod.pod_security_context)


def container_security_context(pod: StagePod) -> dict[str, Any]:
    """The restricted container securityContext, with the stage's ``securityContext`` over it."""
    restricted = {
        "allowPrivilegeEscalation": False,
        "readOnlyRootFilesystem": True,
        "runAsNonRoot": True,
        "capabilities": {"drop": ["ALL"]},
    }
    return merge_patch(restricted, pod.security_context)


def build_job(run: RunSpec, stage: Stage, settings: OperatorSettings) -> dict[str, Any]:
    """The Job manifest of ``stage``; creating it twice is harmless (same name: 409, adopt)."""
    pod = run.pods[stage]
    job_labels = labels(run, stage)
    scratch: dict[str, Any] = {}
    if pod.scratch_size_limit:
        scratch["sizeLimit"] = pod.scratch_size_limit
    container: dict[str, Any] = {
        "name": stage,
        "image": settings.image,
        "imagePullPolicy": settings.image_pull_policy,
        "command": ["catalogsync"],
        "args": [COMMANDS[stage]],
        "env": environment(run, stage, settings),
        "resources": dict(pod.resources),
        "securityContext": container_security_context(pod),
        "volumeMounts": [
            {"name": SCRATCH_VOLUME, "mountPath": SCRATCH_DIR},
            *(dict(mount) for mount in pod.extra_volume_mounts),
        ],
        "terminationMessagePath": TERMINATION_MESSAGE_PATH,
        "terminationMessagePolicy": "FallbackToLogsOnError",
    }
    pod_spec: dict[str, Any] = {
        "restartPolicy": "Never",
        "serviceAccountName": settings.job_service_account,
        "automountServiceAccountToken": True,
        "enableServiceLinks": False,
        "securityContext": pod_security_context(pod, settings),
        "containers": [container],
        "volumes": [
            {"name": SCRATCH_VOLUME, "emptyDir": scratch},
            *(dict(volume) for volume in pod.extra_volumes),
        ],
    }
    if pod.node_selector:
        pod_spec["nodeSelector"] = dict(pod.node_selector)
    if pod.tolerations:
        pod_spec["tolerations"] = [dict(t) for t in pod.tolerations]
    if pod.affinity:
        pod_spec["affinity"] = dict(pod.affinity)
    if pod.priority_class_name:
        pod_spec["priorityClassName"] = pod.priority_class_name
    if settings.image_pull_secrets:
        pod_spec["imagePullSecrets"] = [{"name": name} for name in settings.image_pull_secrets]
    return {
        "apiVersion": "batch/v1",
        "kind": "Job",
        "metadata": {
            "name": job_name(run.name, stage),
            "namespace": run.namespace,
            "labels": job_labels,
            "ownerReferences": [owner_reference(run)],
        },
        "spec": {
            "backoffLimit": pod.backoff_limit,
            "activeDeadlineSeconds": pod.active_deadline_seconds,
            "completions": 1,
            "parallelism": 1,
            "podFailurePolicy": {
                "rules": [
                    {
                        # Bad configuration, rejected credentials, invalid data: retrying
                        # cannot help, so the Job fails at once instead of backing off.
                        "action": "FailJob",
                        "onExitCodes": {
                            "containerName": stage,
                            "operator": "In",
                            "values": [int(code) for code in PERMANENT_EXIT_CODES],
                        },
                    },
                    {
                        # Evictions and preemptions are not the job's fault.
                        "action": "Ignore",
                        "onPodConditions": [{"type": "DisruptionTarget", "status": "True"}],
                    },
                ]
            },
            "template": {
                "metadata": {
                    "labels": {**pod.pod_labels, **job_labels},
                    **({"annotations": dict(pod.pod_annotations)} if pod.pod_annotations else {}),
                },
                "spec": pod_spec,
            },
        },
    }
