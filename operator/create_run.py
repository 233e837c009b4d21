"""``catalogsync create-run``: turn one firing of the CronJob into one CatalogSync.

The CronJob controller writes the time it fired for onto the Job it creates
(``batch.kubernetes.io/cronjob-scheduled-timestamp``); the run is named from that time, so a
creator pod that is retried, or a Job that is re-run for the same slot, meets ``AlreadyExists``
and succeeds without starting a second sync. A Job made with
``kubectl create job --from=cronjob/<name>`` has no scheduled time: that is a manual run, named
from the Job's creation time plus a suffix derived from the Job's UID (still idempotent per Job).

The CatalogSync body comes from a template (the chart keeps it in a ConfigMap and hands it over in
``CATALOGSYNC_RUN_TEMPLATE``), so what a scheduled run does is reviewed in ``helm diff`` like any
other manifest.
"""

from __future__ import annotations

import argparse
import asyncio
import copy
import hashlib
import logging
import os
import re
import secrets
import sys
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Literal

import yaml

from catalogsync.common.errors import ExitCode, PermanentError, SyncError
from catalogsync.common.kube import (
    API_VERSION,
    GROUP,
    KIND,
    PLURAL,
    VERSION,
    api_client,
    status_message,
)
from catalogsync.common.logs import setup_logging

log = logging.getLogger(__name__)

SCHEDULED_TIMESTAMP_ANNOTATION = "batch.kubernetes.io/cronjob-scheduled-timestamp"
"""Set by the CronJob controller (Kubernetes 1.28+) on every Job it creates, RFC 3339."""
SCHEDULE_LABEL = "catalogsync.io/schedule"
TRIGGER_LABEL = "catalogsync.io/trigger"
SCHEDULED_TIME_ANNOTATION = "catalogsync.io/scheduled-time"
CREATED_BY_JOB_ANNOTATION = "catalogsync.io/created-by-job"
MAX_NAME_LENGTH = 52
"""The CRD's limit, so that ``<name>-maintainer`` still fits a 63-character Job name."""
DEFAULT_PREFIX = "medipim-au"
TEMPLATE_ENV = "CATALOGSYNC_RUN_TEMPLATE"
"""Holds the template's text (YAML or JSON); the chart sets it from a ConfigMap key."""
SERVICE_ACCOUNT_NAMESPACE = Path("/var/run/secrets/kubernetes.io/serviceaccount/namespace")

_PREFIX = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")
Trigger = Literal["scheduled", "manual"]


@dataclass(frozen=True)
class Firing:
    """Why this run exists: which schedule fired, for which time, and through which Job."""

    trigger: Trigger
    time: datetime
    """The scheduled time for a scheduled run; the Job's (or the command's) start otherwise."""
    schedule: str | None = None
    """The CronJob's name, when the run came from one."""
    job_name: str | None = None
    job_uid: str | None = None


def _parse_time(value: str) -> datetime:
    return datetime.fromisoformat(value.replace("Z", "+00:00")).astimezone(UTC)


def firing_from_job(job: Mapping[str, Any] | None, now: datetime) -> Firing:
    """Classify a run from its Job (a ``batch/v1`` Job as a dict, camelCase keys) or its absence."""
    if job is None:
        return Firing("manual", now.astimezone(UTC))
    meta = job.get("metadata") or {}
    annotations = meta.get("annotations") or {}
    owners = meta.get("ownerReferences") or []
    schedule = next((o.get("name") for o in owners if o.get("kind") == "CronJob"), None)
    if schedule is None:
        # kubectl create job --from=cronjob/<name> sets no owner; the template's labels remain.
        schedule = (meta.get("labels") or {}).get(SCHEDULE_LABEL)
    scheduled = annotations.get(SCHEDULED_TIMESTAMP_ANNOTATION)
    created = meta.get("creationTimestamp")
    if scheduled:
        return Firing(
            "scheduled", _parse_time(scheduled), schedule, meta.get("name"), meta.get("uid")
        )
    when = _parse_time(created) if created else now.astimezone(UTC)
    return Firing("manual", when, schedule, meta.get("name"), meta.get("uid"))


def run_name(prefix: str, firing: Firing, entropy: str | None = None) -> str:
    """The CatalogSync's name: the same firing always yields the same name.

    Scheduled: ``<prefix>-YYYYMMDD-HHMM`` (UTC). Manual: ``<prefix>-manual-YYYYMMDD-HHMM-<5 hex>``,
    the suffix taken from the Job's UID, or from ``entropy`` (random when not given) without a Job.
    The prefix is shortened so the name never exceeds the CRD's 52 characters.
    """
    if not _PREFIX.match(prefix):
        raise PermanentError(
            f"run name prefix {prefix!r} is not valid: use lower-case letters, digits and '-', "
            "starting and ending with a letter or digit",
            reason="InvalidConfiguration",
        )
    stamp = firing.time.astimezone(UTC).strftime("%Y%m%d-%H%M")
    if firing.trigger == "scheduled":
        tail = stamp
    else:
        seed = firing.job_uid or entropy or secrets.token_hex(8)
        tail = f"manual-{stamp}-{hashlib.sha256(seed.encode()).hexdigest()[:5]}"
    room = MAX_NAME_LENGTH - len(tail) - 1
    return f"{prefix[:room].rstrip('-')}-{tail}"


def build_run(
    template: Mapping[str, Any], firing: Firing, name: str, namespace: str
) -> dict[str, Any]:
    """The CatalogSync to create: the template's spec and metadata plus the firing's identity."""
    body = copy.deepcopy(dict(template))
    body["apiVersion"] = API_VERSION
    body["kind"] = KIND
    meta = dict(body.get("metadata") or {})
    meta["name"] = name
    meta["namespace"] = namespace
    labels = dict(meta.get("labels") or {})
    labels[TRIGGER_LABEL] = firing.trigger
    if firing.schedule:
        labels[SCHEDULE_LABEL] = firing.schedule
    annotations = dict(meta.get("annotations") or {})
    if firing.trigger == "scheduled":
        annotations[SCHEDULED_TIME_ANNOTATION] = firing.time.strftime("%Y-%m-%dT%H:%M:%SZ")
    if firing.job_name:
        annotations[CREATED_BY_JOB_ANNOTATION] = firing.job_name
    meta["labels"] = labels
    meta["annotations"] = annotations
    body["metadata"] = meta
    body.setdefault("spec", {})
    return body


def read_template(path: str | None, environ: Mapping[str, str]) -> tuple[str, str]:
    """The template's text and where it came from: ``--template FILE``, else the env variable."""
    if path:
        try:
            return Path(path).read_text(encoding="utf-8"), path
        except OSError as exc:
            raise PermanentError(
                f"cannot read the run template {path}: {exc.strerror}",
                reason="InvalidConfiguration",
            ) from None
    text = environ.get(TEMPLATE_ENV, "")
    if not text.strip():
        raise PermanentError(
            f"no run template: pass --template FILE or set {TEMPLATE_ENV} to a CatalogSync "
            "manifest (the chart fills it from its run-template ConfigMap)",
            reason="InvalidConfiguration",
        )
    return text, TEMPLATE_ENV


def parse_template(text: str, source: str) -> dict[str, Any]:
    """Check a CatalogSync manifest (or ``spec: {}`` alone) to stamp out runs from."""
    try:
        template = yaml.safe_load(text) or {}
    except yaml.YAMLError as exc:
        raise PermanentError(
            f"run template {source} is not valid YAML: {exc}", reason="InvalidConfiguration"
        ) from None
    if not isinstance(template, dict):
        raise PermanentError(
            f"run template {source} must be a mapping (a CatalogSync manifest)",
            reason="InvalidConfiguration",
        )
    if template.get("kind", KIND) != KIND or template.get("apiVersion", API_VERSION) != API_VERSION:
        raise PermanentError(
            f"run template {source} is a {template.get('apiVersion')}/{template.get('kind')}; "
            f"it must be a {API_VERSION} {KIND}",
            reason="InvalidConfiguration",
        )
    meta = template.get("metadata") or {}
    if "name" in meta or "generateName" in meta:
        raise PermanentError(
            f"run template {source} sets metadata.name/generateName; remove it, runs are named "
            "from their scheduled time (use --prefix to change the first part)",
            reason="InvalidConfiguration",
        )
    return template


def current_namespace(explicit: str | None) -> str:
    if explicit:
        return explicit
    if SERVICE_ACCOUNT_NAMESPACE.is_file():
        return SERVICE_ACCOUNT_NAMESPACE.read_text(encoding="utf-8").strip()
    return "default"


async def _read_job(api: Any, name: str, namespace: str) -> dict[str, Any]:
    from kubernetes_asyncio import client
    from kubernetes_asyncio.client.exceptions import ApiException

    try:
        found = await client.BatchV1Api(api).read_namespaced_job(name, namespace)
    except ApiException as exc:
        raise _api_error(exc, f"reading Job {namespace}/{name}") from None
    job: dict[str, Any] = api.sanitize_for_serialization(found)
    return job


async def _create(args: argparse.Namespace) -> str:
    from kubernetes_asyncio import client
    from kubernetes_asyncio.client.exceptions import ApiException

    template = parse_template(*read_template(args.template, os.environ))
    own_namespace = current_namespace(args.job_namespace)
    namespace = args.namespace or own_namespace
    if args.dry_run and not args.job_name:
        firing = firing_from_job(None, datetime.now(UTC))
        body = build_run(template, firing, run_name(args.prefix, firing), namespace)
        yaml.safe_dump(body, sys.stdout, sort_keys=False)
        return str(body["metadata"]["name"])
    async with await api_client() as api:
        job = await _read_job(api, args.job_name, own_namespace) if args.job_name else None
        firing = firing_from_job(job, datetime.now(UTC))
        name = run_name(args.prefix, firing)
        body = build_run(template, firing, name, namespace)
        if args.dry_run:
            yaml.safe_dump(body, sys.stdout, sort_keys=False)
            return name
        try:
            # Strict: an unknown field (a typo such as maintainer.chunksize) is refused with its
            # name instead of being pruned silently from every run.
            await client.CustomObjectsApi(api).create_namespaced_custom_object(
                GROUP, VERSION, namespace, PLURAL, body, field_validation="Strict"
            )
        except ApiException as exc:
            if exc.status != 409:
                raise _api_error(exc, f"creating {KIND} {namespace}/{name}") from None
            log.info(
                "%s %s/%s already exists: this firing was handled before", KIND, namespace, name
            )
            return name
    log.info(
        "created %s %s/%s",
        KIND,
        namespace,
        name,
        extra={"trigger": firing.trigger, "schedule": firing.schedule},
    )
    return name


def _api_error(exc: Any, doing: str) -> SyncError:
    if exc.status in (401, 403):
        return PermanentError(
            f"{doing} was refused ({exc.status} {exc.reason}): the ServiceAccount needs the "
            "chart's scheduler Role (create catalogsyncs, get jobs)",
            reason="Forbidden",
        )
    if exc.status == 404:
        return PermanentError(
            f"{doing}: not found (is the CatalogSync CRD installed, and does the Job exist?)",
            reason="NotFound",
        )
    if exc.status in (400, 422):
        return PermanentError(
            f"{doing} was rejected by the API server: {status_message(exc)}; fix the run "
            f"template ({TEMPLATE_ENV}; Helm value schedule.run.spec)",
            reason="InvalidTemplate",
        )
    return SyncError(f"{doing} failed: {exc.status} {exc.reason}", reason="ApiError")


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="catalogsync create-run",
        description="Create one CatalogSync from a template, named from the CronJob's schedule.",
    )
    p.add_argument(
        "--template",
        metavar="FILE",
        help=f"CatalogSync manifest without a name (default: the manifest in ${TEMPLATE_ENV})",
    )
    p.add_argument(
        "--prefix",
        default=os.environ.get("CATALOGSYNC_RUN_PREFIX", DEFAULT_PREFIX),
        help="first part of every run's name (env CATALOGSYNC_RUN_PREFIX; default %(default)s)",
    )
    p.add_argument(
        "--namespace",
        help="namespace to create the run in (default: the namespace of the Job)",
    )
    p.add_argument(
        "--job-name",
        default=os.environ.get("JOB_NAME") or None,
        help="the CronJob's Job this pod belongs to, for its scheduled time (env JOB_NAME); "
        "without it the run counts as manual",
    )
    p.add_argument(
        "--job-namespace",
        default=os.environ.get("POD_NAMESPACE") or None,
        help="namespace of that Job (env POD_NAMESPACE; default: the pod's service account "
        "namespace, else 'default')",
    )
    p.add_argument(
        "--dry-run", action="store_true", help="print the CatalogSync instead of creating it"
    )
    p.add_argument("--log-format", choices=("auto", "json", "text"), default="auto")
    return p


def main(argv: list[str]) -> int:
    args = parser().parse_args(argv)
    setup_logging(args.log_format)
    try:
        asyncio.run(_create(args))
    except SyncError as exc:
        log.error("create-run failed: %s", exc, extra={"reason": exc.reason})
        return int(exc.exit_code)
    return int(ExitCode.OK)
