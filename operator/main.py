"""``catalogsync operator``: run the kopf operator that drives CatalogSync runs.

Configuration comes from the environment (``CATALOGSYNC_*``, see ``settings.py``; the Helm chart
sets it); the namespaces to watch may also be given on the command line. Logs are JSON lines unless
a terminal is attached; kopf's liveness endpoint answers on ``CATALOGSYNC_LIVENESS_ENDPOINT`` and
Prometheus metrics on ``CATALOGSYNC_METRICS_PORT``.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
from collections.abc import Sequence

from catalogsync.common import redact
from catalogsync.common.config import load
from catalogsync.common.errors import ExitCode, SyncError
from catalogsync.common.kube import GROUP, VERSION, api_client, api_unreachable
from catalogsync.common.logs import LogFormat, setup_logging
from catalogsync.operator import metrics
from catalogsync.operator.notify import Notifier, WebhookSettings
from catalogsync.operator.runtime import FinishedHook, Runtime
from catalogsync.operator.settings import OperatorSettings

log = logging.getLogger(__name__)


class _KopfExtras(logging.Filter):
    """Drop the attributes kopf attaches to its records for its own formatter.

    ``settings`` cannot be serialised (the JSON formatter would fail on every kopf line).
    """

    def filter(self, record: logging.LogRecord) -> bool:
        record.__dict__.pop("settings", None)
        record.__dict__.pop("k8s_skip", None)
        return True


def configure_logging(fmt: LogFormat) -> None:
    setup_logging(fmt)
    for handler in logging.getLogger().handlers:
        handler.addFilter(_KopfExtras())
    # kopf logs every handled event at INFO ("Handler ... succeeded"); keep its problems only.
    logging.getLogger("kopf.objects").setLevel(logging.WARNING)


def parser() -> argparse.ArgumentParser:
    cli = argparse.ArgumentParser(
        prog="catalogsync operator",
        description="Run the operator that turns CatalogSync resources into fetcher and "
        "maintainer Jobs.",
    )
    cli.add_argument(
        "-n",
        "--namespace",
        action="append",
        default=[],
        help="namespace to watch (repeatable; default: CATALOGSYNC_NAMESPACES)",
    )
    cli.add_argument(
        "-A",
        "--all-namespaces",
        action="store_true",
        help="watch every namespace (needs cluster-wide RBAC)",
    )
    cli.add_argument(
        "--liveness",
        metavar="URL",
        help="liveness endpoint, e.g. http://0.0.0.0:8080/healthz "
        "(default: CATALOGSYNC_LIVENESS_ENDPOINT)",
    )
    cli.add_argument("--log-format", choices=("auto", "json", "text"), help="default: auto")
    return cli


async def crd_served(group: str = GROUP, version: str = VERSION) -> bool:
    """Whether the API server serves CatalogSyncs (discovery is open to every identity)."""
    from kubernetes_asyncio.client import ApiException, CustomObjectsApi

    async with await api_client() as client:
        try:
            await CustomObjectsApi(client).get_api_resources(group, version)
        except ApiException as exc:
            if exc.status == 404:
                return False
            raise
        except (OSError, TimeoutError) as exc:
            # The client's connection errors (refused, unresolvable, reset) are OSErrors, so the
            # transport library stays an indirect dependency.
            raise api_unreachable(client.configuration.host, exc) from None
    return True


async def serve(
    settings: OperatorSettings,
    namespaces: Sequence[str],
    *,
    clusterwide: bool,
    liveness: str | None,
) -> None:
    import kopf

    from catalogsync.operator import handlers

    hooks: list[FinishedHook] = []
    closers: list[handlers.Closer] = []
    notifier = Notifier.from_settings(load(WebhookSettings))
    if notifier is not None:
        hooks.append(notifier.finished)
        closers.append(notifier.aclose)
    operator_metrics = metrics.OperatorMetrics()
    runtime = Runtime(settings, finished_hooks=hooks, metrics=operator_metrics)
    if settings.metrics_port:
        closers.append(
            metrics.serve(operator_metrics.registry, settings.metrics_host, settings.metrics_port)
        )
        log.info("metrics at http://%s:%d/metrics", settings.metrics_host, settings.metrics_port)
    registry = kopf.OperatorRegistry()
    handlers.register(registry, runtime, None if clusterwide else namespaces, closers)
    await kopf.operator(
        registry=registry,
        settings=handlers.kopf_settings(clusterwide=clusterwide),
        standalone=True,
        clusterwide=clusterwide,
        namespaces=() if clusterwide else list(namespaces),
        liveness_endpoint=liveness or None,
    )


def main(argv: Sequence[str]) -> int:
    args = parser().parse_args(list(argv))
    redact.register_environment()
    try:
        settings = load(OperatorSettings)
    except SyncError as exc:
        configure_logging(args.log_format or "auto")
        log.error("%s", exc)
        return int(exc.exit_code)
    configure_logging(args.log_format or settings.log_format)
    clusterwide = args.all_namespaces or settings.all_namespaces
    namespaces = args.namespace or settings.namespaces
    if not clusterwide and not namespaces:
        log.error(
            "no namespace to watch: pass --namespace NAME (or set CATALOGSYNC_NAMESPACES), "
            "or --all-namespaces"
        )
        return int(ExitCode.PERMANENT)
    log.info(
        "operator starting",
        extra={"namespaces": "*" if clusterwide else ",".join(namespaces), "image": settings.image},
    )
    try:
        served = asyncio.run(crd_served())
    except SyncError as exc:
        log.error("%s", exc, extra={"reason": exc.reason})
        return int(exc.exit_code)
    if not clusterwide and not served:
        # Namespaced, the operator cannot watch for the CRD to appear (that needs cluster-wide
        # RBAC), so it would never notice it later: exit and let the Deployment restart it.
        log.error(
            "the CatalogSync CRD is not installed: kubectl apply -f "
            "deploy/crds/catalogsync.io_catalogsyncs.yaml (or install the chart with "
            "crds.create=true)"
        )
        return int(ExitCode.TRANSIENT)
    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(
            serve(
                settings,
                namespaces,
                clusterwide=clusterwide,
                liveness=args.liveness or settings.liveness_endpoint,
            )
        )
    return int(ExitCode.OK)
