"""The kopf handlers: thin triggers, each ending in :meth:`Runtime.reconcile`.

* create / resume start a run or re-attach to its Jobs after an operator restart;
* events of the CatalogSync itself (the jobs' live status patches, ``spec.cancel``), of its Jobs
  and of their Pods drive the transitions;
* a resync task re-derives every unfinished run every ``resync_interval`` seconds, which covers
  missed watch events and enforces deadlines when nothing else happens.

The resync is a plain task rather than a ``kopf.timer``: kopf puts a finalizer on every object with
a timer, and a finalizer would leave CatalogSyncs undeletable whenever the operator is not running.
Without one, deleting a CatalogSync never waits for the operator; its Jobs and Pods go through
owner references.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable, Sequence
from typing import Any

import kopf

from catalogsync.common.kube import GROUP, PLURAL, VERSION, kubeconfig_path
from catalogsync.operator.decide import is_running
from catalogsync.operator.jobs import MANAGED_BY, MANAGER, RUN_LABEL
from catalogsync.operator.runtime import Runtime

log = logging.getLogger(__name__)

Closer = Callable[[], Awaitable[None]]


def kopf_settings(*, clusterwide: bool) -> kopf.OperatorSettings:
    """kopf's defaults, minus its own event chatter ("Handler ... succeeded").

    Watching namespaces only, the operator has no right to list CRDs or namespaces cluster-wide,
    so kopf's scanning of them would only fill the log with refusals.
    """
    settings = kopf.OperatorSettings()
    settings.scanning.disabled = not clusterwide
    settings.posting.enabled = False  # the runtime posts the run's events itself
    settings.persistence.finalizer = f"{GROUP}/finalizer"
    settings.watching.server_timeout = 600
    settings.watching.client_timeout = 660
    return settings


def register(
    registry: kopf.OperatorRegistry,
    runtime: Runtime,
    namespaces: Sequence[str] | None,
    closers: Sequence[Closer] = (),
) -> None:
    """Attach the operator's handlers to ``registry`` (``namespaces`` None: cluster-wide)."""
    resync: dict[str, asyncio.Task[None]] = {}

    @kopf.on.login(registry=registry)
    def login(**kwargs: Any) -> kopf.ConnectionInfo | None:
        """The same precedence as ``common.kube.api_client``: KUBECONFIG, in-cluster, then
        ``~/.kube/config``."""
        if kubeconfig_path() is not None:
            return kopf.login_with_kubeconfig(**kwargs)
        return kopf.login_with_service_account(**kwargs)

    @kopf.on.startup(registry=registry)
    async def open_runtime(**_: Any) -> None:
        await runtime.open()
        resync["task"] = asyncio.get_running_loop().create_task(
            runtime.resync_forever(namespaces), name="catalogsync resync"
        )

    @kopf.on.cleanup(registry=registry)
    async def close_runtime(**_: Any) -> None:
        task = resync.pop("task", None)
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        for close in closers:
            await close()
        await runtime.close()

    def unfinished(body: kopf.Body, **_: Any) -> bool:
        return is_running(body)

    @kopf.on.create(GROUP, VERSION, PLURAL, registry=registry)
    async def run_created(namespace: str | None, name: str, **_: Any) -> None:
        if namespace:
            await runtime.reconcile(namespace, name)

    @kopf.on.resume(GROUP, VERSION, PLURAL, registry=registry, when=unfinished)
    async def run_resumed(namespace: str | None, name: str, **_: Any) -> None:
        if namespace:
            await runtime.reconcile(namespace, name)

    @kopf.on.event(GROUP, VERSION, PLURAL, registry=registry, when=unfinished)
    async def run_changed(type: str, namespace: str | None, name: str, **_: Any) -> None:
        if namespace and type != "DELETED":
            await runtime.reconcile(namespace, name)

    async def child_changed(namespace: str | None, labels: kopf.Labels) -> None:
        run = labels.get(RUN_LABEL)
        if namespace and run:
            await runtime.reconcile(namespace, run)

    @kopf.on.event("batch", "v1", "jobs", labels={MANAGED_BY: MANAGER}, registry=registry)
    async def job_changed(namespace: str | None, labels: kopf.Labels, **_: Any) -> None:
        await child_changed(namespace, labels)

    @kopf.on.event("v1", "pods", labels={MANAGED_BY: MANAGER}, registry=registry)
    async def pod_changed(namespace: str | None, labels: kopf.Labels, **_: Any) -> None:
        await child_changed(namespace, labels)
