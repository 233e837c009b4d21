"""Stage pod settings the API server would refuse, found before the run's first Job.

The API server validates a Job's pod template only when the Job is created, and the maintainer's
Job is created after the fetch: a maintainer asking for more memory than its limit would fail the
run only hours in, after a full download. Checking every stage of the run up front (the CR's
settings and the operator's defaults alike, since either may be wrong) turns that into an
``InvalidConfiguration`` at once, naming the stage, the setting and how to fix it. Only what is
invalid on its face is checked here; what depends on the cluster (quota, nodes, PriorityClasses)
is left to the API server and the scheduler.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from catalogsync.common.quantities import parse_quantity
from catalogsync.operator.settings import StagePod

RESOURCE_KEYS = ("requests", "limits", "claims")
SCRATCH_VOLUME = "scratch"
SCRATCH_DIR = "/tmp"
"""An emptyDir: the only writable path, for the fetcher's spool file and every temp file."""


def _fix(stage: str, setting: str) -> str:
    return f"spec.{stage}.{setting} (or the operator's default, Helm value {stage}.{setting})"


def _quantities(kind: str, values: Any, problems: list[str]) -> dict[str, tuple[float, Any]]:
    if not isinstance(values, Mapping):
        problems.append(f"resources.{kind} must be a mapping of resource names to quantities")
        return {}
    parsed: dict[str, tuple[float, Any]] = {}
    for name, value in values.items():
        try:
            amount = parse_quantity(value)
        except ValueError:
            problems.append(
                f"resources.{kind}.{name}: {value!r} is not a quantity (e.g. 500m, 2, 512Mi, 8Gi)"
            )
            continue
        if amount < 0:
            problems.append(f"resources.{kind}.{name}: {value!r} is negative")
            continue
        parsed[name] = (amount, value)
    return parsed


def _resources(resources: Mapping[str, Any]) -> list[str]:
    found = [f"resources: unknown key {key!r}" for key in resources if key not in RESOURCE_KEYS]
    requests = _quantities("requests", resources.get("requests") or {}, found)
    limits = _quantities("limits", resources.get("limits") or {}, found)
    for name, (amount, text) in requests.items():
        if name in limits and amount > limits[name][0]:
            found.append(
                f"resources.requests.{name} ({text}) is more than resources.limits.{name} "
                f"({limits[name][1]}); lower the request or raise the limit"
            )
    return found


def _tolerations(tolerations: list[dict[str, Any]]) -> list[str]:
    found = []
    for index, toleration in enumerate(tolerations):
        where = f"tolerations[{index}]"
        operator = toleration.get("operator") or "Equal"
        if operator not in ("Equal", "Exists"):
            found.append(f"{where}: operator {operator!r} is not Equal or Exists")
        elif operator == "Exists" and toleration.get("value"):
            found.append(f"{where}: operator Exists takes no value")
        if not toleration.get("key") and operator != "Exists":
            found.append(f"{where}: an empty key needs operator Exists")
        seconds = toleration.get("tolerationSeconds")
        if seconds is not None and toleration.get("effect") != "NoExecute":
            found.append(f"{where}: tolerationSeconds needs effect NoExecute")
    return found


def _volumes(pod: StagePod) -> list[tuple[str, str]]:
    """Extra volumes and mounts that would take the place of the built-in scratch volume."""
    found = [
        (
            f"extraVolumes[{index}]: the name {SCRATCH_VOLUME!r} is the built-in {SCRATCH_DIR} "
            "volume; give the volume another name",
            "extraVolumes",
        )
        for index, volume in enumerate(pod.extra_volumes)
        if volume.get("name") == SCRATCH_VOLUME
    ]
    found += [
        (
            f"extraVolumeMounts[{index}]: mountPath {SCRATCH_DIR} is the built-in scratch volume; "
            "mount it elsewhere",
            "extraVolumeMounts",
        )
        for index, mount in enumerate(pod.extra_volume_mounts)
        if str(mount.get("mountPath", "")).rstrip("/") == SCRATCH_DIR
    ]
    return found


def problems(stage: str, pod: StagePod) -> list[str]:
    """What is wrong with ``stage``'s pod settings, one message per problem (empty: nothing)."""
    found = [(problem, "resources") for problem in _resources(pod.resources)]
    found += [(problem, "tolerations") for problem in _tolerations(pod.tolerations)]
    messages = [f"{stage} pod: {problem}; fix {_fix(stage, setting)}" for problem, setting in found]
    return messages + [
        f"{stage} pod: {problem}; fix the operator's setting, Helm value {stage}.{setting} "
        "(not settable per run)"
        for problem, setting in _volumes(pod)
    ]
