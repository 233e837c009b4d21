"""A container's environment, resolved the way the kubelet resolves ``env`` and ``envFrom``.

Values get ``$(VAR)`` expansion; ``secretKeyRef`` / ``configMapKeyRef`` read the objects through the
API (``optional`` honoured; a missing object or key raises ContainerConfigError, which keeps the
container waiting and is retried); ``fieldRef`` and ``resourceFieldRef`` are answered from the pod
and the Node without a request.
"""

from __future__ import annotations

import base64
import math
import re
from collections.abc import Mapping
from pathlib import Path

from catalogsync.common.quantities import parse_quantity
from catalogsync.dev.kubelet.api import Api, Obj
from catalogsync.dev.kubelet.nodes import POD_IP


class ContainerConfigError(Exception):
    """The container cannot be created yet (kubelet reason ``CreateContainerConfigError``)."""


def expand(text: str, variables: Mapping[str, str]) -> str:
    """Kubernetes ``$(VAR)`` expansion: ``$$`` escapes, unknown references stay as written."""
    out: list[str] = []
    i = 0
    while i < len(text):
        char = text[i]
        if char == "$" and i + 1 < len(text):
            nxt = text[i + 1]
            if nxt == "$":
                out.append("$")
                i += 2
                continue
            if nxt == "(":
                end = text.find(")", i + 2)
                if end != -1:
                    name = text[i + 2 : end]
                    out.append(variables.get(name, text[i : end + 1]))
                    i = end + 1
                    continue
        out.append(char)
        i += 1
    return "".join(out)


def base_environment(
    directory: Path,
    pod: Obj,
    search_path: str,
    extra: Mapping[str, str],
    kubeconfig: Path | None,
) -> dict[str, str]:
    """What every process gets before the container's own variables: PATH, HOME, TMPDIR …"""
    name = pod["metadata"]["name"]
    home = directory / "home"
    tmp = pod_tmpdir(directory, pod)
    home.mkdir(exist_ok=True)
    env = {
        "PATH": search_path,
        "HOME": str(home),
        "TMPDIR": str(tmp),
        "HOSTNAME": pod["spec"].get("hostname") or name,
        "LANG": "C.UTF-8",
        "PYTHONUNBUFFERED": "1",
        **extra,
    }
    if kubeconfig is not None:
        env["KUBECONFIG"] = str(kubeconfig)
    return env


def pod_tmpdir(directory: Path, pod: Obj) -> Path:
    """The pod's temp dir; an emptyDir volume mounted at /tmp is that same directory."""
    tmp = directory / "tmp"
    tmp.mkdir(exist_ok=True)
    for volume in pod["spec"].get("volumes") or []:
        if "emptyDir" in volume:
            (directory / "volumes" / volume["name"]).mkdir(parents=True, exist_ok=True)
    return tmp


async def declared_environment(
    api: Api, pod: Obj, container: Obj, allocatable: Mapping[str, str]
) -> dict[str, str]:
    """The container's own variables, resolved in kubelet order (envFrom, then env).

    ``allocatable`` is the Node's, the default for limits a ``resourceFieldRef`` names.
    """
    declared: dict[str, str] = {}
    for source in container.get("envFrom") or []:
        declared.update(await _env_from(api, pod, source))
    for item in container.get("env") or []:
        value = await _env_value(api, pod, container, item, declared, allocatable=allocatable)
        if value is not None:
            declared[item["name"]] = value
    return declared


async def _env_from(api: Api, pod: Obj, source: Obj) -> dict[str, str]:
    prefix = source.get("prefix", "")
    _, _, data = await _referenced(api, pod, source, "secretRef", "configMapRef")
    if data is None:
        return {}
    valid = re.compile(r"[-._a-zA-Z][-._a-zA-Z0-9]*")
    return {prefix + k: v for k, v in data.items() if valid.fullmatch(prefix + k)}


async def _referenced(
    api: Api, pod: Obj, source: Obj, secret: str, config_map: str
) -> tuple[Obj, str, dict[str, str] | None]:
    """(reference, kind, data) of the Secret or ConfigMap that ``source`` names.

    ``data`` is None when the object is missing and the reference ``optional``; a missing
    required object keeps the container waiting, as on a real node.
    """
    if secret in source:
        ref, kind = source[secret], "Secret"
    else:
        ref, kind = source[config_map], "ConfigMap"
    plural = "secrets" if kind == "Secret" else "configmaps"
    namespace = pod["metadata"]["namespace"]
    obj = await api.get_optional(f"/api/v1/namespaces/{namespace}/{plural}/{ref['name']}")
    data = None if obj is None else object_data(kind, obj)
    if data is None and not ref.get("optional"):
        raise ContainerConfigError(f'{kind.lower()} "{ref["name"]}" not found')
    return ref, kind, data


def object_data(kind: str, obj: Obj) -> dict[str, str]:
    """The decoded key/value pairs of a Secret or ConfigMap (``binaryData`` included)."""
    if kind == "Secret":
        return {
            k: base64.b64decode(v).decode(errors="replace")
            for k, v in (obj.get("data") or {}).items()
        }
    data = dict(obj.get("data") or {})
    for key, value in (obj.get("binaryData") or {}).items():
        data[key] = base64.b64decode(value).decode(errors="replace")
    return data


async def _env_value(
    api: Api,
    pod: Obj,
    container: Obj,
    item: Obj,
    declared: Mapping[str, str],
    *,
    allocatable: Mapping[str, str],
) -> str | None:
    if "value" in item or "valueFrom" not in item:
        return expand(str(item.get("value", "")), declared)
    source = item["valueFrom"]
    if "secretKeyRef" in source or "configMapKeyRef" in source:
        return await _key_ref(api, pod, source)
    if "fieldRef" in source:
        return field_value(pod, source["fieldRef"]["fieldPath"])
    if "resourceFieldRef" in source:
        return resource_value(pod, container, source["resourceFieldRef"], allocatable)
    raise ContainerConfigError(f"unsupported valueFrom for {item['name']}: {sorted(source)}")


async def _key_ref(api: Api, pod: Obj, source: Obj) -> str | None:
    ref, kind, data = await _referenced(api, pod, source, "secretKeyRef", "configMapKeyRef")
    if data is None:
        return None
    if ref["key"] not in data:
        if ref.get("optional"):
            return None
        namespace = pod["metadata"]["namespace"]
        raise ContainerConfigError(
            f"couldn't find key {ref['key']} in {kind} {namespace}/{ref['name']}"
        )
    return data[ref["key"]]


def resource_value(pod: Obj, container: Obj, ref: Obj, allocatable: Mapping[str, str]) -> str:
    """A ``resourceFieldRef`` value; unset limits default to the Node's ``allocatable``."""
    target = ref.get("containerName") or container["name"]
    spec = next(
        (
            c
            for c in [
                *(pod["spec"].get("initContainers") or []),
                *pod["spec"]["containers"],
            ]
            if c["name"] == target
        ),
        container,
    )
    kind, _, resource = ref["resource"].partition(".")
    values = (spec.get("resources") or {}).get(kind) or {}
    if resource in values:
        amount = parse_quantity(values[resource])
    elif kind == "limits":
        amount = parse_quantity(allocatable.get(resource, "0"))
    else:
        amount = 0.0
    divisor = parse_quantity(ref.get("divisor") or "1") or 1.0  # the API defaults it to 0
    if resource == "cpu":
        return str(math.ceil(round(amount * 1000) / round(divisor * 1000)))
    return str(math.ceil(amount / divisor))


def field_value(pod: Obj, path: str) -> str:
    """A ``fieldRef`` value as the kubelet resolves it (downward API)."""
    meta, spec, status = pod["metadata"], pod["spec"], pod.get("status") or {}
    match = re.fullmatch(r"metadata\.(labels|annotations)\['(.+)'\]", path)
    if match:
        return str((meta.get(match.group(1)) or {}).get(match.group(2), ""))
    simple = {
        "metadata.name": meta.get("name"),
        "metadata.namespace": meta.get("namespace"),
        "metadata.uid": meta.get("uid"),
        "spec.nodeName": spec.get("nodeName"),
        "spec.serviceAccountName": spec.get("serviceAccountName"),
        "status.podIP": status.get("podIP") or POD_IP,
        "status.hostIP": status.get("hostIP") or POD_IP,
        "status.podIPs": status.get("podIP") or POD_IP,
        "status.hostIPs": status.get("hostIP") or POD_IP,
    }
    if path in simple:
        return str(simple[path] or "")
    if path in ("metadata.labels", "metadata.annotations"):
        items = meta.get(path.split(".")[1]) or {}
        return "\n".join(f'{k}="{v}"' for k, v in sorted(items.items()))
    raise ContainerConfigError(f"unsupported fieldRef {path}")
