"""What a CatalogSync asks for, with every gap filled: the CR spec over the operator's defaults.

The CRD schema defaults what is the same everywhere (chunk size, mode, filter); the rest comes from
:class:`~catalogsync.operator.settings.OperatorSettings`. Per-stage pod settings given in the CR
replace the operator's value of that setting as a whole (a CR that names ``tolerations`` gets
exactly those), the way a Pod spec field replaces a default rather than merging with it.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from typing import Any, Literal, cast

from catalogsync.common.config import (
    DEFAULT_FILTER,
    DEFAULT_SORTING,
    FetcherSettings,
    MaintainerSettings,
    validate_table_name,
)
from catalogsync.operator import pod_settings
from catalogsync.operator.settings import OperatorSettings, StagePod

Mode = Literal["Full", "Incremental", "FetchOnly", "MaintainOnly"]
MODES: tuple[Mode, ...] = ("Full", "Incremental", "FetchOnly", "MaintainOnly")
Stage = Literal["fetcher", "maintainer"]
STAGES: tuple[Stage, Stage] = ("fetcher", "maintainer")

DEFAULT_INCREMENTAL_OVERLAP: int = FetcherSettings.model_fields["incremental_overlap"].default

_POD_FIELDS = {
    "resources": "resources",
    "nodeSelector": "node_selector",
    "tolerations": "tolerations",
    "affinity": "affinity",
    "priorityClassName": "priority_class_name",
    "backoffLimit": "backoff_limit",
    "activeDeadlineSeconds": "active_deadline_seconds",
    "podLabels": "pod_labels",
    "podAnnotations": "pod_annotations",
}


def _maintainer_default(name: str) -> Any:
    return MaintainerSettings.model_fields[name].default


@dataclass(frozen=True)
class MaintainerOptions:
    chunk_size: int = _maintainer_default("chunk_size")
    dry_run: bool = False
    delete_missing: bool = False
    max_delete_fraction: float = _maintainer_default("max_delete_fraction")
    max_invalid_fraction: float = _maintainer_default("max_invalid_fraction")
    object: str | None = None


@dataclass(frozen=True)
class RunSpec:
    """One run, fully resolved; the job builders read nothing else."""

    name: str
    namespace: str
    uid: str
    catalog: str
    mode: Mode
    cancel: bool
    source_url: str
    source_secret: str
    source_filter: Mapping[str, Any]
    source_sorting: Mapping[str, Any]
    incremental_overlap: int
    """Seconds an Incremental run asks for before its watermark."""
    storage_url: str | None
    storage_bucket: str
    storage_prefix: str
    storage_secret: str
    database_table: str
    database_secret: str
    maintainer: MaintainerOptions
    pods: Mapping[Stage, StagePod]
    problems: tuple[str, ...] = field(default=())
    """Configuration that makes the run impossible, found before any Job exists."""
    pod_problems: Mapping[Stage, tuple[str, ...]] = field(default_factory=dict)
    """Pod settings of a stage the run executes that its Job would be refused for."""

    @property
    def stages(self) -> tuple[Stage, ...]:
        """The stages this run executes, in order."""
        if self.mode == "FetchOnly":
            return ("fetcher",)
        if self.mode == "MaintainOnly":
            return ("maintainer",)
        return STAGES

    @property
    def storage_is_local(self) -> bool:
        """``file://`` storage needs no service-role key."""
        return bool(self.storage_url and self.storage_url.startswith("file://"))


def _section(spec: Mapping[str, Any], name: str) -> Mapping[str, Any]:
    value = spec.get(name)
    return value if isinstance(value, Mapping) else {}


def _stage_pod(default: StagePod, overrides: Mapping[str, Any]) -> StagePod:
    changes = {
        attr: overrides[key]
        for key, attr in _POD_FIELDS.items()
        if key in overrides and overrides[key] is not None
    }
    return default.model_copy(update=changes) if changes else default


def resolve(body: Mapping[str, Any], settings: OperatorSettings) -> RunSpec:
    """The run described by a CatalogSync ``body``, with defaults from ``settings``."""
    metadata = _section(body, "metadata")
    spec = _section(body, "spec")
    source = _section(spec, "source")
    storage = _section(spec, "storage")
    database = _section(spec, "database")
    fetcher = _section(spec, "fetcher")
    maintainer = _section(spec, "maintainer")
    problems: list[str] = []

    storage_url = storage.get("url") or settings.storage_url
    if not storage_url:
        problems.append(
            "no storage URL: set spec.storage.url or the operator's default "
            "(CATALOGSYNC_STORAGE_URL, Helm value defaults.storage.url)"
        )
    table = str(database.get("table") or settings.database_table)
    try:
        table = validate_table_name(table)
    except ValueError as exc:
        problems.append(f"spec.database.table: {exc}")

    options = MaintainerOptions(
        chunk_size=int(maintainer.get("chunkSize", MaintainerOptions.chunk_size)),
        dry_run=bool(maintainer.get("dryRun", False)),
        delete_missing=bool(maintainer.get("deleteMissing", False)),
        max_delete_fraction=float(
            maintainer.get("maxDeleteFraction", MaintainerOptions.max_delete_fraction)
        ),
        max_invalid_fraction=float(
            maintainer.get("maxInvalidFraction", MaintainerOptions.max_invalid_fraction)
        ),
        object=maintainer.get("object") or None,
    )
    mode = str(spec.get("mode") or "Full")
    if mode not in MODES:
        problems.append(f"spec.mode: {mode!r} is not one of {', '.join(MODES)}")
        mode = "Full"
    pods: dict[Stage, StagePod] = {
        "fetcher": _stage_pod(settings.fetcher, fetcher),
        "maintainer": _stage_pod(settings.maintainer, maintainer),
    }
    run = RunSpec(
        name=str(metadata.get("name", "")),
        namespace=str(metadata.get("namespace", "")),
        uid=str(metadata.get("uid", "")),
        catalog=str(spec.get("catalog") or "medipim-au"),
        mode=cast(Mode, mode),
        cancel=bool(spec.get("cancel", False)),
        source_url=str(source.get("url") or settings.medipim_url),
        source_secret=str(source.get("credentialsSecret") or settings.medipim_credentials_secret),
        source_filter=dict(source.get("filter") or DEFAULT_FILTER),
        source_sorting=dict(source.get("sorting") or DEFAULT_SORTING),
        incremental_overlap=int(
            source.get("incrementalOverlapSeconds", DEFAULT_INCREMENTAL_OVERLAP)
        ),
        storage_url=str(storage_url) if storage_url else None,
        storage_bucket=str(storage.get("bucket") or settings.storage_bucket),
        storage_prefix=str(storage.get("prefix") or ""),
        storage_secret=str(storage.get("credentialsSecret") or settings.storage_credentials_secret),
        database_table=table,
        database_secret=str(
            database.get("credentialsSecret") or settings.database_credentials_secret
        ),
        maintainer=options,
        pods=pods,
        problems=tuple(problems),
    )
    checked = {stage: tuple(pod_settings.problems(stage, pods[stage])) for stage in run.stages}
    return replace(run, pod_problems={stage: found for stage, found in checked.items() if found})
