"""How every part of the project talks to the Kubernetes API.

``KUBECONFIG`` wins over the in-cluster service account, so the same code runs in a pod, on a
laptop, and under the test suite's process kubelet (which hands each pod a kubeconfig minted for
the pod's own ServiceAccount). Outside a pod, without ``KUBECONFIG``, ``~/.kube/config`` is used,
as kubectl does.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from catalogsync.common.errors import PermanentError, TransientError
from catalogsync.common.reasons import Reason

GROUP = "catalogsync.io"
VERSION = "v1alpha1"
KIND = "CatalogSync"
PLURAL = "catalogsyncs"
API_VERSION = f"{GROUP}/{VERSION}"


DEFAULT_KUBECONFIG = "~/.kube/config"


def kubeconfig_path() -> str | None:
    """The kubeconfig to use, or None for the pod's service account.

    ``KUBECONFIG`` first; inside a pod (``KUBERNETES_SERVICE_HOST`` set) the service account;
    elsewhere ``~/.kube/config``. With none of them there is nothing to connect with: say so
    instead of failing deep inside the client library.
    """
    if kubeconfig := os.environ.get("KUBECONFIG"):
        return kubeconfig
    if os.environ.get("KUBERNETES_SERVICE_HOST"):
        return None
    default = Path(DEFAULT_KUBECONFIG).expanduser()
    if default.is_file():
        return str(default)
    raise PermanentError(
        f"no Kubernetes configuration: KUBECONFIG is not set, {DEFAULT_KUBECONFIG} does not "
        "exist and this is not a pod (KUBERNETES_SERVICE_HOST is not set); set KUBECONFIG to a "
        "kubeconfig file or run inside the cluster",
        reason=Reason.NoKubeConfig,
    )


async def api_client() -> Any:
    """An authenticated ``kubernetes_asyncio`` ApiClient; the caller closes it."""
    from kubernetes_asyncio import client, config

    configuration = client.Configuration()
    kubeconfig = kubeconfig_path()
    try:
        if kubeconfig is not None:
            # Named explicitly: the library reads KUBECONFIG once, when it is first imported.
            await config.load_kube_config(
                config_file=kubeconfig, client_configuration=configuration
            )
        else:
            config.load_incluster_config(client_configuration=configuration)  # type: ignore[no-untyped-call]
    except (config.ConfigException, OSError, ValueError) as exc:
        source = kubeconfig or "the pod's service account"
        raise PermanentError(
            f"cannot load the Kubernetes configuration from {source}: {exc}",
            reason=Reason.InvalidKubeConfig,
        ) from None
    return client.ApiClient(configuration)


def status_message(exc: BaseException) -> str:
    """The ``message`` of the API server's ``Status`` answer to a failed call (it names the
    field or the rule), else the HTTP reason."""
    body = getattr(exc, "body", None)
    try:
        message = json.loads(body).get("message") if body else None
    except (ValueError, AttributeError, TypeError):
        message = None
    return str(message or getattr(exc, "reason", "") or exc)


def api_unreachable(host: str, error: BaseException) -> TransientError:
    """The API server did not answer: name it, so the fix (context, VPN, cluster) is obvious."""
    detail = str(error) or type(error).__name__
    return TransientError(
        f"cannot reach the Kubernetes API server at {host}: {detail} (check the current context "
        "of the kubeconfig, or KUBECONFIG)",
        reason=Reason.ApiServerUnavailable,
    )


async def custom_objects_api() -> Any:
    from kubernetes_asyncio import client

    return client.CustomObjectsApi(await api_client())
