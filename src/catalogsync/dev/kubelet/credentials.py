"""A pod's API credentials: a bound ServiceAccount token, written into a kubeconfig."""

from __future__ import annotations

import shutil
from dataclasses import dataclass
from pathlib import Path

from catalogsync.dev.controlplane import ClusterAccess, write_kubeconfig
from catalogsync.dev.kubelet.api import Api, ApiError, Obj
from catalogsync.dev.kubelet.env import ContainerConfigError


@dataclass
class Credentials:
    """What a pod's processes get for talking to the API."""

    kubeconfig: Path | None


async def pod_credentials(
    api: Api, access: ClusterAccess, pod: Obj, directory: Path
) -> Credentials:
    """A kubeconfig with a bound token of the pod's ServiceAccount, unless automount is off."""
    meta, spec = pod["metadata"], pod["spec"]
    namespace, name, uid = meta["namespace"], meta["name"], meta["uid"]
    account = spec.get("serviceAccountName") or "default"
    automount = spec.get("automountServiceAccountToken")
    if automount is None:
        sa = await api.get_optional(f"/api/v1/namespaces/{namespace}/serviceaccounts/{account}")
        if sa is None:
            raise ContainerConfigError(f'serviceaccount "{account}" not found')
        automount = sa.get("automountServiceAccountToken", True)
    if not automount:
        return Credentials(None)
    request = {
        "apiVersion": "authentication.k8s.io/v1",
        "kind": "TokenRequest",
        "spec": {
            "expirationSeconds": 3607,
            "boundObjectRef": {
                "apiVersion": "v1",
                "kind": "Pod",
                "name": name,
                "uid": uid,
            },
        },
    }
    try:
        answer = await api.request(
            "POST",
            f"/api/v1/namespaces/{namespace}/serviceaccounts/{account}/token",
            request,
        )
    except ApiError as exc:
        raise ContainerConfigError(f"cannot mint a token for {account}: {exc}") from exc
    token = answer["status"]["token"]
    secrets = directory / "serviceaccount"
    secrets.mkdir(exist_ok=True)
    (secrets / "token").write_text(token)
    (secrets / "namespace").write_text(namespace)
    shutil.copyfile(access.ca_file, secrets / "ca.crt")
    kubeconfig = write_kubeconfig(
        secrets / "kubeconfig",
        access.server,
        access.ca_file.read_bytes(),
        user=f"system:serviceaccount:{namespace}:{account}",
        token=token,
        namespace=namespace,
    )
    return Credentials(kubeconfig)
