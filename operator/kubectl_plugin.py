"""``kubectl catalogsync``: status, run, cancel and logs of CatalogSync runs, as a kubectl plugin.

kubectl runs any ``kubectl-<name>`` on the PATH as ``kubectl <name>``; the package installs this
one as the ``kubectl-catalogsync`` console script. It reads the same kubeconfig as kubectl
(``KUBECONFIG``, else ``~/.kube/config``, or ``--kubeconfig``), talks to the API server with
``kubernetes_asyncio``, and needs only what the chart's aggregated ``view`` role grants for
``status`` and ``logs`` (``edit`` for ``run`` and ``cancel``).

``run`` starts a run the way ``kubectl create job --from=cronjob/<schedule>`` does: a Job from the
CronJob's template, whose creator pod makes the CatalogSync from the schedule's run template. So
a manual run is exactly what the schedule would have started, and named the way
``catalogsync create-run`` names manual runs.

The summaries are pure functions of the objects (:func:`summarize`, :func:`next_firing`); the
rest is thin I/O.
"""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import os
import sys
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from croniter import croniter
from rich import box
from rich.console import Console
from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from catalogsync.common.kube import GROUP, PLURAL, VERSION
from catalogsync.common.summaries import MAINTAINER_OUTCOMES
from catalogsync.operator.create_run import (
    DEFAULT_PREFIX,
    SCHEDULE_LABEL,
    current_namespace,
    firing_from_job,
    run_name,
)
from catalogsync.operator.jobs import RUN_LABEL, STAGE_LABEL
from catalogsync.operator.status import (
    RUNNING_PHASES,
    TERMINAL_PHASES,
    format_duration,
    parse_time,
)

SCHEDULER_SELECTOR = "app.kubernetes.io/part-of=catalogsync,app.kubernetes.io/component=scheduler"
"""The chart's CronJobs (templates/cronjob.yaml labels)."""
OPERATOR_SELECTOR = "app.kubernetes.io/part-of=catalogsync,app.kubernetes.io/component=operator"
"""The chart's operator Deployment."""
DEFAULT_CATALOG = "medipim-au"
EXIT_FAILED = 1
EXIT_USAGE = 2


class PluginError(Exception):
    """A problem the user can fix; the message says how."""


# -- pure summaries


def _status(body: Mapping[str, Any]) -> Mapping[str, Any]:
    return body.get("status") or {}


def _meta(body: Mapping[str, Any]) -> Mapping[str, Any]:
    return body.get("metadata") or {}


def _finished_at(body: Mapping[str, Any]) -> str:
    return str(_status(body).get("completionTime") or _meta(body).get("creationTimestamp") or "")


def next_firing(cronjob: Mapping[str, Any], now: dt.datetime) -> dt.datetime | None:
    """When the CronJob fires next (UTC); None when suspended or its schedule is unreadable."""
    spec = cronjob.get("spec") or {}
    if spec.get("suspend"):
        return None
    try:
        zone: dt.tzinfo = ZoneInfo(spec["timeZone"]) if spec.get("timeZone") else dt.UTC
    except (ZoneInfoNotFoundError, ValueError):
        return None
    try:
        nxt = croniter(str(spec.get("schedule") or ""), now.astimezone(zone)).get_next(dt.datetime)
    except (ValueError, KeyError):
        return None
    moment: dt.datetime = nxt
    return moment.astimezone(dt.UTC)


@dataclass
class CatalogSummary:
    namespace: str
    catalog: str
    last_success: Mapping[str, Any] | None = None
    last_failure: Mapping[str, Any] | None = None
    active: list[Mapping[str, Any]] = field(default_factory=list)
    schedules: list[str] = field(default_factory=list)
    next_run: dt.datetime | None = None


def summarize(
    runs: Sequence[Mapping[str, Any]],
    cronjobs: Sequence[Mapping[str, Any]],
    now: dt.datetime,
) -> list[CatalogSummary]:
    """One summary per (namespace, catalog); a schedule belongs to the catalogs of its runs."""
    summaries: dict[tuple[str, str], CatalogSummary] = {}
    for body in runs:
        key = (
            str(_meta(body).get("namespace") or ""),
            str((body.get("spec") or {}).get("catalog") or DEFAULT_CATALOG),
        )
        summary = summaries.setdefault(key, CatalogSummary(*key))
        phase = str(_status(body).get("phase") or "")
        if phase in ("", *RUNNING_PHASES):
            summary.active.append(body)
        elif phase == "Succeeded":
            if summary.last_success is None or _finished_at(body) > _finished_at(
                summary.last_success
            ):
                summary.last_success = body
        elif phase == "Failed" and (
            summary.last_failure is None or _finished_at(body) > _finished_at(summary.last_failure)
        ):
            summary.last_failure = body
        schedule = (_meta(body).get("labels") or {}).get(SCHEDULE_LABEL)
        if schedule and schedule not in summary.schedules:
            summary.schedules.append(schedule)
    by_name = {str(_meta(c).get("name")): c for c in cronjobs}
    for summary in summaries.values():
        firings = [
            moment
            for name in summary.schedules
            if name in by_name and (moment := next_firing(by_name[name], now)) is not None
        ]
        summary.next_run = min(firings, default=None)
    return [summaries[key] for key in sorted(summaries)]


def counts_line(status: Mapping[str, Any]) -> str:
    """``12 inserted, 3 updated, ...`` from the maintainer's counts."""
    counts = status.get("maintainer") or {}
    return ", ".join(f"{int(counts.get(o) or 0)} {o}" for o in MAINTAINER_OUTCOMES)


def progress_fraction(status: Mapping[str, Any]) -> float:
    text = str(status.get("progress") or "0%").rstrip("%")
    try:
        return max(0.0, min(1.0, float(text) / 100))
    except ValueError:
        return 0.0


def _ago(value: Any, now: dt.datetime) -> str:
    moment = parse_time(value)
    return f"{format_duration((now - moment).total_seconds())} ago" if moment else "-"


def _flag(args: Sequence[str], name: str) -> str | None:
    """The value of ``--name=value`` or ``--name value`` in a container's args."""
    for position, arg in enumerate(args):
        if arg.startswith(f"{name}="):
            return arg.split("=", 1)[1]
        if arg == name and position + 1 < len(args):
            return args[position + 1]
    return None


def creator_settings(cronjob: Mapping[str, Any]) -> tuple[str, str | None]:
    """The run name prefix and the run namespace the CronJob's ``create-run`` is given."""
    template = cronjob["spec"]["jobTemplate"]["spec"]["template"]["spec"]
    container = next(
        (c for c in template.get("containers") or [] if "create-run" in (c.get("args") or [])),
        None,
    )
    args = [str(a) for a in (container or {}).get("args") or []]
    return _flag(args, "--prefix") or DEFAULT_PREFIX, _flag(args, "--namespace")


def manual_job(cronjob: Mapping[str, Any], now: dt.datetime) -> dict[str, Any]:
    """The Job ``kubectl create job --from=cronjob/<name>`` would create, named for ``now``."""
    meta = _meta(cronjob)
    template = cronjob["spec"]["jobTemplate"]
    name = f"{str(meta['name'])[:44]}-manual-{int(now.timestamp())}"
    return {
        "apiVersion": "batch/v1",
        "kind": "Job",
        "metadata": {
            "name": name,
            "namespace": meta["namespace"],
            "labels": dict((template.get("metadata") or {}).get("labels") or {}),
            "annotations": {
                **((template.get("metadata") or {}).get("annotations") or {}),
                "cronjob.kubernetes.io/instantiate": "manual",
            },
            "ownerReferences": [
                {
                    "apiVersion": "batch/v1",
                    "kind": "CronJob",
                    "name": meta["name"],
                    "uid": meta["uid"],
                    "controller": True,
                }
            ],
        },
        "spec": template["spec"],
    }


def operator_problems(deployments: Sequence[Mapping[str, Any]]) -> list[str]:
    """What keeps the chart's operator from serving: none installed, or none available."""
    if not deployments:
        return ["no catalogsync operator Deployment here (was the chart installed?)"]
    problems = []
    for deployment in deployments:
        name = _meta(deployment).get("name")
        st = deployment.get("status") or {}
        if int(st.get("availableReplicas") or 0) < 1:
            why = "; ".join(
                f"{c.get('type')}={c.get('status')}: {c.get('message', '')}"
                for c in st.get("conditions") or []
            )
            problems.append(
                f"Deployment {name} has no available operator pod ({why or 'starting'})"
            )
    return problems


# -- the API


class Kube:
    """The few calls the plugin makes, returning plain dicts (camelCase keys)."""

    def __init__(self, client: Any) -> None:
        from kubernetes_asyncio import client as k8s

        self.client = client
        # Any: the calls take and return plain dicts, which the generated signatures do not say.
        self.custom: Any = k8s.CustomObjectsApi(client)
        self.batch: Any = k8s.BatchV1Api(client)
        self.core: Any = k8s.CoreV1Api(client)
        self.apps: Any = k8s.AppsV1Api(client)

    def plain(self, obj: Any) -> Any:
        return self.client.sanitize_for_serialization(obj)

    async def runs(self, namespace: str | None) -> list[dict[str, Any]]:
        if namespace is None:
            result = await self.custom.list_cluster_custom_object(GROUP, VERSION, PLURAL)
        else:
            result = await self.custom.list_namespaced_custom_object(
                GROUP, VERSION, namespace, PLURAL
            )
        items: list[dict[str, Any]] = result.get("items") or []
        return items

    async def run(self, namespace: str, name: str) -> dict[str, Any] | None:
        from kubernetes_asyncio.client.exceptions import ApiException

        try:
            body: dict[str, Any] = await self.custom.get_namespaced_custom_object(
                GROUP, VERSION, namespace, PLURAL, name
            )
        except ApiException as exc:
            if exc.status == 404:
                return None
            raise
        return body

    async def cronjobs(self, namespace: str | None) -> list[dict[str, Any]]:
        if namespace is None:
            found = await self.batch.list_cron_job_for_all_namespaces(
                label_selector=SCHEDULER_SELECTOR
            )
        else:
            found = await self.batch.list_namespaced_cron_job(
                namespace, label_selector=SCHEDULER_SELECTOR
            )
        items: list[dict[str, Any]] = self.plain(found).get("items") or []
        return items


def _api_problem(exc: Any, doing: str) -> PluginError:
    status = getattr(exc, "status", None)
    if status in (401, 403):
        return PluginError(
            f"{doing} was refused ({status}): ask for the `view` role in the namespace (or `edit` "
            "to start and cancel runs)"
        )
    if status == 404:
        return PluginError(f"{doing}: not found (is catalogsync installed in this namespace?)")
    return PluginError(f"{doing} failed: {status} {getattr(exc, 'reason', exc)}")


# -- commands


async def status(kube: Kube, namespace: str | None, console: Console) -> int:
    now = dt.datetime.now(dt.UTC)
    runs = await kube.runs(namespace)
    cronjobs = await kube.cronjobs(namespace)
    summaries = summarize(runs, cronjobs, now)
    if not summaries:
        console.print(f"no CatalogSync runs in {namespace or 'any namespace'}")
    for summary in summaries:
        table = Table(
            title=f"catalog {summary.catalog} (namespace {summary.namespace})",
            box=box.SIMPLE,
            show_header=False,
            title_justify="left",
        )
        table.add_column("what", style="bold")
        table.add_column("value")
        if ok := summary.last_success:
            st = _status(ok)
            table.add_row(
                "last success",
                f"{_meta(ok)['name']}, {_ago(st.get('completionTime'), now)}, took "
                f"{st.get('duration') or '-'}: {counts_line(st)}",
            )
        else:
            table.add_row("last success", "none")
        if bad := summary.last_failure:
            failure = _status(bad).get("failure") or {}
            table.add_row(
                "last failure",
                f"{_meta(bad)['name']}, {_ago(_status(bad).get('completionTime'), now)}: "
                f"{failure.get('stage', '?')} {failure.get('reason', 'Error')}: "
                f"{failure.get('message', '')}",
            )
        else:
            table.add_row("last failure", "none")
        for run in summary.active:
            st = _status(run)
            table.add_row(
                "running",
                f"{_meta(run)['name']}: {st.get('phase') or 'Pending'} "
                f"{st.get('progress') or '0%'}, {st.get('message') or 'waiting for the operator'}",
            )
        if not summary.active:
            table.add_row("running", "none")
        if summary.next_run is not None:
            when = summary.next_run.strftime("%Y-%m-%d %H:%M UTC")
            wait = format_duration((summary.next_run - now).total_seconds())
            table.add_row("next run", f"{when} (in {wait}, {', '.join(summary.schedules)})")
        elif summary.schedules:
            table.add_row("next run", f"none: {', '.join(summary.schedules)} suspended")
        else:
            table.add_row("next run", "no schedule")
        console.print(table)
    linked = {name for s in summaries for name in s.schedules}
    for cronjob in cronjobs:
        name = str(_meta(cronjob)["name"])
        if name in linked:
            continue
        moment = next_firing(cronjob, now)
        when = moment.strftime("%Y-%m-%d %H:%M UTC") if moment else "suspended"
        console.print(f"schedule {_meta(cronjob)['namespace']}/{name}: next run {when}")
    return 0


def _pick_schedule(cronjobs: Sequence[Mapping[str, Any]], wanted: str | None) -> Mapping[str, Any]:
    names = [str(_meta(c)["name"]) for c in cronjobs]
    if wanted is not None:
        for cronjob in cronjobs:
            if _meta(cronjob)["name"] == wanted:
                return cronjob
        raise PluginError(f"no catalogsync schedule {wanted!r} here; there are: {names or 'none'}")
    if len(cronjobs) != 1:
        raise PluginError(
            "name the schedule to run with --schedule: "
            + (", ".join(names) if names else "there is none (is the chart's schedule enabled?)")
        )
    return cronjobs[0]


async def start(kube: Kube, namespace: str, schedule: str | None) -> tuple[str, str]:
    """Create the manual Job; returns the run's namespace and the name it will get."""
    from kubernetes_asyncio.client.exceptions import ApiException

    cronjob = _pick_schedule(await kube.cronjobs(namespace), schedule)
    manifest = manual_job(cronjob, dt.datetime.now(dt.UTC))
    try:
        created = kube.plain(await kube.batch.create_namespaced_job(namespace, manifest))
    except ApiException as exc:
        raise _api_problem(
            exc, f"creating Job {namespace}/{manifest['metadata']['name']}"
        ) from None
    prefix, run_namespace = creator_settings(cronjob)
    firing = firing_from_job(created, dt.datetime.now(dt.UTC))
    return run_namespace or namespace, run_name(prefix, firing)


async def wait(
    kube: Kube, namespace: str, name: str, console: Console, *, within: float, interval: float
) -> int:
    """Follow one run with a progress bar until it ends; 0 only when it succeeded."""
    deadline = asyncio.get_running_loop().time() + within
    columns = (
        TextColumn("{task.description}"),
        BarColumn(),
        TextColumn("{task.percentage:>3.0f}%"),
        TimeElapsedColumn(),
    )
    body: Mapping[str, Any] | None = None
    with Progress(*columns, console=console, transient=False) as bar:
        task = bar.add_task(f"{name}: waiting for the run", total=1.0)
        while True:
            body = await kube.run(namespace, name)
            st = _status(body or {})
            phase = str(st.get("phase") or ("Pending" if body else "creating"))
            bar.update(task, description=f"{name}: {phase}", completed=progress_fraction(st))
            if phase in TERMINAL_PHASES:
                break
            if asyncio.get_running_loop().time() > deadline:
                console.print(f"timed out after {within:g}s; the run goes on: {phase}")
                return EXIT_FAILED
            await asyncio.sleep(interval)
    st = _status(body or {})
    console.print(f"{name} {st.get('phase')} in {st.get('duration') or '-'}: {counts_line(st)}")
    fetched = st.get("fetcher") or {}
    if fetched:
        records, size = fetched.get("records", 0), fetched.get("bytes", 0)
        console.print(f"fetched {records} records ({size} bytes)")
    if st.get("phase") != "Succeeded":
        failure = st.get("failure") or {}
        console.print(f"{failure.get('reason', st.get('phase'))}: {st.get('message', '')}")
        return EXIT_FAILED
    return 0


async def cancel(kube: Kube, namespace: str, name: str, console: Console) -> int:
    from kubernetes_asyncio.client.exceptions import ApiException

    try:
        await kube.custom.patch_namespaced_custom_object(
            GROUP, VERSION, namespace, PLURAL, name, {"spec": {"cancel": True}},
            _content_type="application/merge-patch+json",
        )  # fmt: skip
    except ApiException as exc:
        raise _api_problem(exc, f"cancelling {namespace}/{name}") from None
    console.print(f"{name}: cancel requested; the operator deletes its active Job")
    return 0


async def logs(
    kube: Kube, namespace: str, name: str, *, stage: str | None, tail: int | None, out: Any
) -> int:
    selector = f"{RUN_LABEL}={name}" + (f",{STAGE_LABEL}={stage}" if stage else "")
    pods = kube.plain(await kube.core.list_namespaced_pod(namespace, label_selector=selector))
    items = sorted(pods.get("items") or [], key=lambda p: str(p["metadata"]["creationTimestamp"]))
    if not items:
        raise PluginError(f"run {namespace}/{name} has no pods (pruned, or not started yet)")
    for pod in items:
        pod_name = pod["metadata"]["name"]
        out.write(f"==> {pod_name} ({pod['metadata']['labels'].get(STAGE_LABEL, '?')}) <==\n")
        options = {"tail_lines": tail} if tail is not None else {}
        text = await kube.core.read_namespaced_pod_log(pod_name, namespace, **options)
        out.write(str(text))
        if text and not str(text).endswith("\n"):
            out.write("\n")
    return 0


async def check(kube: Kube, namespace: str, console: Console) -> int:
    """The chart's health: the CRD is served, the operator is available, runs can be listed."""
    from kubernetes_asyncio.client.exceptions import ApiException

    problems: list[str] = []
    try:
        await kube.custom.get_api_resources(GROUP, VERSION)
        console.print(f"ok: the API server serves {PLURAL}.{GROUP}/{VERSION}")
    except ApiException as exc:
        if exc.status != 404:
            raise
        problems.append(f"the CatalogSync CRD is not installed ({PLURAL}.{GROUP} is not served)")
    found = await kube.apps.list_namespaced_deployment(namespace, label_selector=OPERATOR_SELECTOR)
    operator = operator_problems(kube.plain(found).get("items") or [])
    problems += operator
    if not operator:
        console.print(f"ok: the operator is available in {namespace}")
    if not problems:
        runs = await kube.runs(namespace)
        console.print(f"ok: {len(runs)} CatalogSync run(s) in {namespace}")
    for problem in problems:
        console.print(f"problem: {problem}")
    return EXIT_FAILED if problems else 0


# -- the command line


def parser() -> argparse.ArgumentParser:
    cli = argparse.ArgumentParser(
        prog="kubectl catalogsync",
        description="Status, manual runs, cancellation and logs of catalogsync runs.",
    )
    cli.add_argument("--kubeconfig", help="kubeconfig file (default: $KUBECONFIG, ~/.kube/config)")
    cli.add_argument("-n", "--namespace", help="default: the kubeconfig context's namespace")
    commands = cli.add_subparsers(dest="command", required=True)
    st = commands.add_parser("status", help="per catalog: last success, failure, running, next")
    st.add_argument("-A", "--all-namespaces", action="store_true")
    run = commands.add_parser("run", help="start a run now from the schedule's template")
    run.add_argument("--schedule", help="the CronJob to run (default: the only one)")
    run.add_argument("--wait", action="store_true", help="follow the run until it ends")
    run.add_argument("--timeout", type=float, default=6 * 3600, help="seconds to --wait")
    run.add_argument("--interval", type=float, default=2.0, help=argparse.SUPPRESS)
    stop = commands.add_parser("cancel", help="cancel a run (spec.cancel)")
    stop.add_argument("run")
    commands.add_parser("check", help="the CRD is served and the operator is available")
    log = commands.add_parser("logs", help="the logs of a run's pods")
    log.add_argument("run")
    log.add_argument("--stage", choices=("fetcher", "maintainer"))
    log.add_argument("--tail", type=int, help="lines from the end of each pod's log")
    return cli


def kubeconfig_path(explicit: str | None) -> str | None:
    if explicit:
        return explicit
    if os.environ.get("KUBECONFIG"):
        return os.environ["KUBECONFIG"].split(os.pathsep)[0]
    default = Path.home() / ".kube" / "config"
    return str(default) if default.is_file() else None


async def _client(path: str | None) -> tuple[Any, str]:
    """An ApiClient and the context's namespace, like kubectl's (in-cluster without a file)."""
    from kubernetes_asyncio import client, config

    configuration = client.Configuration()
    if path is None:
        config.load_incluster_config(client_configuration=configuration)  # type: ignore[no-untyped-call]
        return client.ApiClient(configuration), current_namespace(None)
    await config.load_kube_config(config_file=path, client_configuration=configuration)
    _, active = config.list_kube_config_contexts(config_file=path)
    namespace = str(((active or {}).get("context") or {}).get("namespace") or "default")
    return client.ApiClient(configuration), namespace


async def _main(args: argparse.Namespace, console: Console) -> int:
    from kubernetes_asyncio.client.exceptions import ApiException

    api, context_namespace = await _client(kubeconfig_path(args.kubeconfig))
    namespace = args.namespace or context_namespace
    async with api:
        kube = Kube(api)
        try:
            if args.command == "status":
                return await status(kube, None if args.all_namespaces else namespace, console)
            if args.command == "run":
                run_namespace, name = await start(kube, namespace, args.schedule)
                console.print(f"started run {run_namespace}/{name}")
                if not args.wait:
                    return 0
                return await wait(
                    kube, run_namespace, name, console, within=args.timeout, interval=args.interval
                )
            if args.command == "check":
                return await check(kube, namespace, console)
            if args.command == "cancel":
                return await cancel(kube, namespace, args.run, console)
            return await logs(
                kube, namespace, args.run, stage=args.stage, tail=args.tail, out=sys.stdout
            )
        except ApiException as exc:
            raise _api_problem(exc, args.command) from None


def main(argv: Sequence[str] | None = None) -> int:
    args = parser().parse_args(sys.argv[1:] if argv is None else list(argv))
    console = Console(highlight=False)
    try:
        return asyncio.run(_main(args, console))
    except PluginError as exc:
        Console(stderr=True, highlight=False).print(f"error: {exc}")
        return EXIT_USAGE
    except KeyboardInterrupt:
        return 130
