"""Run a pod's containers from a built image instead of the checkout.

With an :class:`ImageSandbox` the process kubelet runs each container of a project image inside
that image's unpacked root filesystem (``scripts/build-image.sh`` makes it), the way a container
runtime would, as far as tests need: the image's entrypoint, command, environment and working
directory; the pod's ``runAsUser``/``runAsGroup``/``fsGroup``/``supplementalGroups`` and
``runAsNonRoot``; ``readOnlyRootFilesystem``; ``allowPrivilegeEscalation: false`` as
``no_new_privs``; ``emptyDir``, ``secret`` and ``configMap`` volumes at their ``mountPath``; the
ServiceAccount credentials under ``/var/run/secrets/kubernetes.io/serviceaccount``; and the
termination message at ``terminationMessagePath``. So a missing dependency, a wrong entrypoint, a
write outside the pod's volumes or a path only root can use fails there as it would on a node.
:mod:`catalogsync.dev.kubelet.chroot` does the mounting; the network stays the host's.
"""

from __future__ import annotations

import json
import os
import shutil
import sys
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

from catalogsync.dev.kubelet import chroot
from catalogsync.dev.kubelet.api import Api, Obj
from catalogsync.dev.kubelet.containers import TERMINATION_ENV
from catalogsync.dev.kubelet.env import ContainerConfigError, expand, object_data
from catalogsync.dev.kubelet.images import ImageRefused, ImageRule

SERVICE_ACCOUNT_DIR = "/var/run/secrets/kubernetes.io/serviceaccount"
DEFAULT_TERMINATION_PATH = "/dev/termination-log"


@dataclass(frozen=True)
class ImageRoot:
    """An unpacked image: its root filesystem and its OCI config (``config.json``)."""

    rootfs: Path
    config: Obj

    @classmethod
    def load(cls, directory: Path) -> ImageRoot:
        """The output directory of ``scripts/build-image.sh``."""
        config = json.loads((directory / "config.json").read_text()).get("config") or {}
        return cls(directory / "rootfs", config)

    def env(self) -> dict[str, str]:
        pairs = (item.partition("=") for item in self.config.get("Env") or [])
        return {name: value for name, _, value in pairs}

    def user(self) -> tuple[int | None, int | None]:
        """The image's numeric ``USER`` (uid, gid); names are not resolved."""
        user, _, group = str(self.config.get("User") or "").partition(":")
        return (int(user) if user.isdigit() else None, int(group) if group.isdigit() else None)

    def home(self, uid: int) -> str:
        """``HOME`` as runtimes set it: the user's passwd entry in the image, else ``/``."""
        try:
            lines = (self.rootfs / "etc/passwd").read_text().splitlines()
        except OSError:
            return "/"
        for line in lines:
            fields = line.split(":")
            if len(fields) > 5 and fields[2] == str(uid):
                return fields[5]
        return "/"


@dataclass(frozen=True)
class Identity:
    uid: int
    gid: int
    groups: list[int] = field(default_factory=list)


def security(pod: Obj, container: Obj) -> Obj:
    """The container's effective security settings (container fields override the pod's)."""
    return {
        **(pod["spec"].get("securityContext") or {}),
        **(container.get("securityContext") or {}),
    }


def identity(pod: Obj, container: Obj, image: ImageRoot) -> Identity:
    settings = security(pod, container)
    image_uid, image_gid = image.user()
    uid = settings.get("runAsUser", image_uid if image_uid is not None else 0)
    gid = settings.get("runAsGroup", image_gid if image_gid is not None else 0)
    if settings.get("runAsNonRoot") and uid == 0:
        raise ContainerConfigError("container has runAsNonRoot and image will run as root")
    pod_security = pod["spec"].get("securityContext") or {}
    groups = [gid, *pod_security.get("supplementalGroups", [])]
    if "fsGroup" in pod_security:
        groups.append(pod_security["fsGroup"])
    return Identity(int(uid), int(gid), sorted(set(groups)))


class ImageSandbox:
    """Turns a container of a project image into a chrooted process (see the module doc)."""

    def __init__(self, image: ImageRoot, rule: ImageRule | None = None) -> None:
        self.image = image
        self.rule = rule or ImageRule()

    def environment(
        self,
        pod: Obj,
        container: Obj,
        declared: Mapping[str, str],
        extra: Mapping[str, str],
        *,
        credentials: bool,
    ) -> dict[str, str]:
        """The image's ``Env``, then what a runtime adds, then the container's own variables."""
        user = identity(pod, container, self.image)
        env = {
            **self.image.env(),
            "HOSTNAME": pod["spec"].get("hostname") or pod["metadata"]["name"],
            "HOME": self.image.home(user.uid),
            **extra,
        }
        if credentials:
            env["KUBECONFIG"] = f"{SERVICE_ACCOUNT_DIR}/kubeconfig"
        return {**env, **declared}

    async def argv(
        self, api: Api, pod: Obj, directory: Path, container: Obj, env: Mapping[str, str]
    ) -> list[str]:
        """Write the container's launch spec (and its secret volumes); the argv that runs it."""
        image = container.get("image", "")
        if not self.rule.accepts(image):
            raise ImageRefused(
                f'image "{image}" is not the built image: only repositories ending with '
                f"{' or '.join(self.rule.project_images)} run from it"
            )
        command = [expand(c, env) for c in container.get("command") or []]
        args = [expand(a, env) for a in container.get("args") or []]
        if command:
            program = command + args
        else:
            program = list(self.image.config.get("Entrypoint") or [])
            program += args or list(self.image.config.get("Cmd") or [])
        if not program:
            raise ContainerConfigError("no command specified")
        settings = security(pod, container)
        user = identity(pod, container, self.image)
        name = container["name"]
        spec = {
            "rootfs": str(self.image.rootfs),
            "state": str(directory / "containers" / name),
            "argv": program,
            "uid": user.uid,
            "gid": user.gid,
            "groups": user.groups,
            "workdir": container.get("workingDir") or self.image.config.get("WorkingDir") or "/",
            "readOnlyRoot": bool(settings.get("readOnlyRootFilesystem")),
            "noNewPrivileges": settings.get("allowPrivilegeEscalation") is False,
            "termination": container.get("terminationMessagePath") or DEFAULT_TERMINATION_PATH,
            "termination_env": TERMINATION_ENV,
            "mounts": await self._mounts(api, pod, directory, container, user),
        }
        path = directory / f"{name}.sandbox.json"
        path.write_text(json.dumps(spec, indent=2))
        unshare = shutil.which("unshare") or "unshare"
        return [
            unshare,
            "--mount",
            "--propagation",
            "private",
            "--",
            sys.executable,
            "-I",
            chroot.__file__,
            str(path),
        ]

    async def _mounts(
        self, api: Api, pod: Obj, directory: Path, container: Obj, user: Identity
    ) -> list[Obj]:
        volumes = {v["name"]: v for v in pod["spec"].get("volumes") or []}
        mounts: list[Obj] = []
        for mount in container.get("volumeMounts") or []:
            volume = volumes.get(mount["name"])
            if volume is None:
                raise ContainerConfigError(f'volume "{mount["name"]}" is not defined in the pod')
            source = await self._volume(api, pod, directory, volume)
            if mount.get("subPath"):
                source = source / mount["subPath"]
            mounts.append(
                {
                    "source": str(source),
                    "target": mount["mountPath"],
                    "readOnly": bool(mount.get("readOnly")) or "emptyDir" not in volume,
                }
            )
        credentials = directory / "serviceaccount"
        mounted = {m["target"] for m in mounts}
        if (credentials / "token").exists() and SERVICE_ACCOUNT_DIR not in mounted:
            mounts.append(
                {"source": str(credentials), "target": SERVICE_ACCOUNT_DIR, "readOnly": True}
            )
        return mounts

    async def _volume(self, api: Api, pod: Obj, directory: Path, volume: Obj) -> Path:
        """The host directory behind a volume: an emptyDir, or a Secret's/ConfigMap's files."""
        path: Path = directory / "volumes" / str(volume["name"])
        if "emptyDir" in volume:
            return empty_dir(path)
        sources = (volume.get("projected") or {}).get("sources") or []
        if any("serviceAccountToken" in source for source in sources):
            # The API server's kube-api-access volume: the credentials the kubelet minted, with
            # the volume's file mode (the API defaults it to 0644), so the pod's uid can read them.
            return readable(
                directory / "serviceaccount", int(volume["projected"].get("defaultMode", 0o644))
            )
        for kind, key, plural in (
            ("Secret", "secret", "secrets"),
            ("ConfigMap", "configMap", "configmaps"),
        ):
            if key in volume:
                source = volume[key]
                name = source.get("secretName") if kind == "Secret" else source.get("name")
                namespace = pod["metadata"]["namespace"]
                obj = await api.get_optional(f"/api/v1/namespaces/{namespace}/{plural}/{name}")
                if obj is None and not source.get("optional"):
                    raise ContainerConfigError(f'{kind.lower()} "{name}" not found')
                data = {} if obj is None else object_data(kind, obj)
                write_files(path, data, source.get("items"), int(source.get("defaultMode", 0o644)))
                return path
        raise ContainerConfigError(f"unsupported volume {volume['name']}: {sorted(volume)}")


def empty_dir(path: Path) -> Path:
    """An emptyDir as the kubelet makes it: any uid of the pod may write."""
    path.mkdir(parents=True, exist_ok=True)
    path.chmod(0o777)
    return path


def readable(path: Path, mode: int) -> Path:
    path.mkdir(parents=True, exist_ok=True)
    path.chmod(0o755)
    for file in path.iterdir():
        file.chmod(mode)
    return path


def write_files(path: Path, data: Mapping[str, str], items: list[Obj] | None, mode: int) -> None:
    """A Secret's or ConfigMap's keys as files (``items`` picks keys and paths), fresh each time."""
    shutil.rmtree(path, ignore_errors=True)
    path.mkdir(parents=True)
    path.chmod(0o755)
    chosen = items or [{"key": key, "path": key} for key in data]
    for item in chosen:
        if item["key"] not in data:
            raise ContainerConfigError(f"couldn't find key {item['key']} in the volume's source")
        target = path / item["path"]
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_text(data[item["key"]])
        os.chmod(target, int(item.get("mode", mode)))
