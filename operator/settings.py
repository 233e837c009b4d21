"""The operator's own configuration: the defaults it fills into every CatalogSync.

A CR may leave almost everything out (``spec: {}`` is a complete run); what the CRD schema cannot
default statically because it differs per installation (secret names, URLs, the image, where the
stages' pods may run) comes from here. The Helm chart renders its values into these environment
variables; the per-stage pod settings are one JSON object per stage (``CATALOGSYNC_FETCHER``,
``CATALOGSYNC_MAINTAINER``) so the chart can hand over a values block with ``toJson``.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

import orjson
from pydantic import BaseModel, ConfigDict, Field, ValidationInfo, field_validator
from pydantic.alias_generators import to_camel
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

from catalogsync.common.config import (
    DEFAULT_BUCKET,
    DEFAULT_MEDIPIM_URL,
    DEFAULT_TABLE,
    DatabaseSettings,
    MedipimSettings,
    StorageSettings,
    validate_table_name,
)

CPU_CLASS_LABEL = "catalogsync.io/cpu-class"
"""Node label (and taint key) of the nodes reserved for heavy stages; value ``performance``."""

PERFORMANCE = "performance"


def _secret_default(cls: type[BaseSettings], field: str) -> str:
    default = cls.model_fields[field].default
    assert isinstance(default, str)
    return default


class StagePod(BaseModel):
    """Pod settings of one stage, as the chart's values spell them (camelCase)."""

    model_config = ConfigDict(
        alias_generator=to_camel, populate_by_name=True, frozen=True, extra="forbid"
    )

    resources: dict[str, Any] = Field(default_factory=dict)
    node_selector: dict[str, str] = Field(default_factory=dict)
    tolerations: list[dict[str, Any]] = Field(default_factory=list)
    affinity: dict[str, Any] | None = None
    priority_class_name: str | None = None
    backoff_limit: int = Field(2, ge=0, le=20)
    active_deadline_seconds: int = Field(3 * 3600, ge=60)
    scratch_size_limit: str | None = None
    """``sizeLimit`` of the emptyDir at ``/tmp`` (the fetcher spools the catalog there)."""
    env: list[dict[str, Any]] = Field(default_factory=list)
    """Extra container env entries (``HTTPS_PROXY``, job tuning); contract names win over these."""
    pod_labels: dict[str, str] = Field(default_factory=dict)
    """Extra labels of the stage's pods; the operator's own labels win over these."""
    pod_annotations: dict[str, str] = Field(default_factory=dict)
    """Annotations of the stage's pods, e.g. ``sidecar.istio.io/inject: "false"``: an injected
    sidecar that never exits keeps a Job from ever completing."""
    pod_security_context: dict[str, Any] = Field(default_factory=dict)
    """Merged over the restricted pod securityContext of the stage's pods (a key set to null
    removes that default, e.g. ``runAsUser``); operator configuration only, not in the CRD."""
    security_context: dict[str, Any] = Field(default_factory=dict)
    """Merged over the restricted securityContext of the stage's container, the same way."""
    extra_volumes: list[dict[str, Any]] = Field(default_factory=list)
    """Extra volumes of the stage's pods (a CA bundle, a proxy configuration), after ``scratch``."""
    extra_volume_mounts: list[dict[str, Any]] = Field(default_factory=list)
    """Mounts of ``extra_volumes`` in the stage's container, after ``/tmp``."""


def default_fetcher() -> StagePod:
    return StagePod(
        resources={
            "requests": {"cpu": "100m", "memory": "256Mi"},
            "limits": {"memory": "512Mi"},
        },
        backoff_limit=2,
        active_deadline_seconds=2 * 3600,
        scratch_size_limit="4Gi",
    )


def default_maintainer() -> StagePod:
    """8 GiB guaranteed memory on a node of the performance CPU class (tainted for it alone)."""
    return StagePod(
        resources={
            "requests": {"cpu": "1", "memory": "8Gi"},
            "limits": {"memory": "8Gi"},
        },
        node_selector={CPU_CLASS_LABEL: PERFORMANCE},
        tolerations=[
            {
                "key": CPU_CLASS_LABEL,
                "operator": "Equal",
                "value": PERFORMANCE,
                "effect": "NoSchedule",
            }
        ],
        backoff_limit=2,
        active_deadline_seconds=4 * 3600,
        scratch_size_limit="1Gi",
    )


STAGE_DEFAULTS = {"fetcher": default_fetcher, "maintainer": default_maintainer}


class OperatorSettings(BaseSettings):
    """Read once at start-up from the environment (and the command line for namespaces)."""

    model_config = SettingsConfigDict(extra="ignore", frozen=True, populate_by_name=True)

    namespaces: Annotated[list[str], NoDecode] = Field(
        default_factory=list, alias="CATALOGSYNC_NAMESPACES"
    )
    """Namespaces to watch (comma-separated); with none and no ``all_namespaces`` the operator
    refuses to start rather than guess."""
    all_namespaces: bool = Field(False, alias="CATALOGSYNC_ALL_NAMESPACES")

    image: str = Field("ghcr.io/catalogsync/catalogsync:0.1.0", alias="CATALOGSYNC_IMAGE")
    image_pull_policy: Literal["Always", "IfNotPresent", "Never"] = Field(
        "IfNotPresent", alias="CATALOGSYNC_IMAGE_PULL_POLICY"
    )
    image_pull_secrets: Annotated[list[str], NoDecode] = Field(
        default_factory=list, alias="CATALOGSYNC_IMAGE_PULL_SECRETS"
    )
    job_service_account: str = Field("catalogsync-job", alias="CATALOGSYNC_JOB_SERVICE_ACCOUNT")
    job_run_as_user: int | None = Field(10001, alias="CATALOGSYNC_JOB_RUN_AS_USER", ge=1)
    """uid and gid of the stage pods; empty: leave them to the platform (OpenShift assigns one
    from the namespace's range, and the image runs under any uid)."""
    job_progress_interval: float = Field(3.0, alias="CATALOGSYNC_JOB_PROGRESS_INTERVAL", gt=0)

    medipim_url: str = Field(DEFAULT_MEDIPIM_URL, alias="CATALOGSYNC_MEDIPIM_URL")
    medipim_credentials_secret: str = Field(
        _secret_default(MedipimSettings, "credentials_secret"),
        alias="CATALOGSYNC_MEDIPIM_CREDENTIALS_SECRET",
    )
    storage_url: str | None = Field(None, alias="CATALOGSYNC_STORAGE_URL")
    storage_bucket: str = Field(DEFAULT_BUCKET, alias="CATALOGSYNC_STORAGE_BUCKET")
    storage_credentials_secret: str = Field(
        _secret_default(StorageSettings, "credentials_secret"),
        alias="CATALOGSYNC_STORAGE_CREDENTIALS_SECRET",
    )
    database_table: str = Field(DEFAULT_TABLE, alias="CATALOGSYNC_DATABASE_TABLE")
    database_credentials_secret: str = Field(
        _secret_default(DatabaseSettings, "credentials_secret"),
        alias="CATALOGSYNC_DATABASE_CREDENTIALS_SECRET",
    )

    fetcher: Annotated[StagePod, NoDecode] = Field(
        default_factory=default_fetcher, alias="CATALOGSYNC_FETCHER"
    )
    maintainer: Annotated[StagePod, NoDecode] = Field(
        default_factory=default_maintainer, alias="CATALOGSYNC_MAINTAINER"
    )

    successful_runs_history_limit: int = Field(
        3, alias="CATALOGSYNC_SUCCESSFUL_RUNS_HISTORY_LIMIT", ge=0
    )
    failed_runs_history_limit: int = Field(3, alias="CATALOGSYNC_FAILED_RUNS_HISTORY_LIMIT", ge=0)
    """Failed and Cancelled runs kept per catalog."""
    skipped_runs_history_limit: int = Field(1, alias="CATALOGSYNC_SKIPPED_RUNS_HISTORY_LIMIT", ge=0)
    """Skipped runs kept per catalog, apart from the failures so skips never evict one."""

    resync_interval: float = Field(30.0, alias="CATALOGSYNC_RESYNC_INTERVAL", gt=0)
    """Seconds between re-derivations of every unfinished run (covers missed watch events)."""
    deadline_grace: float = Field(120.0, alias="CATALOGSYNC_DEADLINE_GRACE", ge=0)
    """Seconds past a Job's ``activeDeadlineSeconds`` before the operator fails it itself."""
    pod_creation_grace: float = Field(60.0, alias="CATALOGSYNC_POD_CREATION_GRACE", ge=0)
    """Seconds a Job may keep failing to create its pod (quota full, PriorityClass missing) before
    the operator fails the run; refusals by Pod Security admission fail it at once."""
    unschedulable_grace: float = Field(900.0, alias="CATALOGSYNC_UNSCHEDULABLE_GRACE", ge=0)
    """Seconds a stage's pod may stay unschedulable before the operator fails the run: long
    enough for a cluster autoscaler to add a node, far shorter than a stage's deadline."""
    liveness_endpoint: str = Field(
        "http://0.0.0.0:8080/healthz", alias="CATALOGSYNC_LIVENESS_ENDPOINT"
    )
    metrics_port: int = Field(9110, alias="CATALOGSYNC_METRICS_PORT", ge=0, le=65535)
    """Port of the Prometheus endpoint ``/metrics``; 0 turns it off."""
    metrics_host: str = Field("0.0.0.0", alias="CATALOGSYNC_METRICS_HOST")
    log_format: Literal["auto", "json", "text"] = Field("auto", alias="CATALOGSYNC_LOG_FORMAT")

    @field_validator("job_run_as_user", mode="before")
    @classmethod
    def _unset_when_empty(cls, value: Any) -> Any:
        return None if isinstance(value, str) and not value.strip() else value

    @field_validator("namespaces", "image_pull_secrets", mode="before")
    @classmethod
    def _comma_list(cls, value: Any) -> Any:
        if isinstance(value, str):
            return [part.strip() for part in value.split(",") if part.strip()]
        return value

    @field_validator("fetcher", "maintainer", mode="before")
    @classmethod
    def _over_defaults(cls, value: Any, info: ValidationInfo) -> Any:
        """A values block names only what it changes; the rest keeps the stage's default."""
        if isinstance(value, str):
            value = orjson.loads(value) if value.strip() else {}
        if isinstance(value, dict):
            base = STAGE_DEFAULTS[str(info.field_name)]().model_dump(by_alias=True)
            return {**base, **value}
        return value

    @field_validator("database_table")
    @classmethod
    def _table(cls, value: str) -> str:
        return validate_table_name(value)
