"""How every part of the project talks to the Kubernetes API.

``KUBECONFIG`` wins over the in-cluster service account, so the same code runs in a pod, on a
laptop, and under the test suite's process kubelet (which hands each pod a kubeconfig minted for
the pod's own ServiceAccount).
"""

from __future__ import annotations

import json
import os
from typing import Any

GROUP = "catalogsync.io"
VERSION = "v1alpha1"
KIND = "CatalogSync"
PLURAL = "catalogsyncs"
API_VERSION = f"{GROUP}/{VERSION}"


async def api_client() -> Any:
    """An authenticated ``kubernetes_asyncio`` ApiClient; the caller closes it."""
    from kubernetes_asyncio import client, config

    configuration = client.Configuration()
    if kubeconfig := os.environ.get("KUBECONFIG"):
        # Named explicitly: the library reads KUBECONFIG once, when it is first imported.
        await config.load_kube_config(config_file=kubeconfig, client_configuration=configuration)
    else:
        config.load_incluster_config(client_configuration=configuration)  # type: ignore[no-untyped-call]
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


async def custom_objects_api() -> Any:
    from kubernetes_asyncio import client

    return client.CustomObjectsApi(await api_client())
