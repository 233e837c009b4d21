"""The image → command rule: which images run locally, and which program each container runs."""

from __future__ import annotations

import os
import shutil
import sys
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from catalogsync.dev.kubelet.api import Obj
from catalogsync.dev.kubelet.env import expand


class ImageRefused(Exception):
    """The image is not the project's; the process kubelet cannot run it."""


def image_repository(image: str) -> str:
    """``registry/path/name`` of an image reference, without tag or digest."""
    name = image.split("@", 1)[0]
    last_slash = name.rfind("/")
    colon = name.rfind(":")
    return name[:colon] if colon > last_slash else name


@dataclass(frozen=True)
class ImageRule:
    """Which images map to local commands, and how programs are found."""

    project_images: Sequence[str] = ("catalogsync",)
    entrypoint: str = "catalogsync"
    bin_dir: Path = Path(sys.executable).parent

    @property
    def search_path(self) -> str:
        return os.pathsep.join([str(self.bin_dir), os.environ.get("PATH", os.defpath)])

    def accepts(self, image: str) -> bool:
        return image_repository(image).rsplit("/", 1)[-1] in self.project_images

    def argv(self, container: Obj, variables: Mapping[str, str]) -> list[str]:
        """The process's argv: the image entrypoint unless ``command`` replaces it."""
        image = container.get("image", "")
        if not self.accepts(image):
            raise ImageRefused(
                f'image "{image}" cannot be run by the process kubelet: only images whose '
                f"repository ends with {' or '.join(self.project_images)} map to local commands"
            )
        command = [expand(c, variables) for c in container.get("command") or []]
        args = [expand(a, variables) for a in container.get("args") or []]
        argv = (command or [self.entrypoint]) + args
        return [self.program(argv[0]), *argv[1:]]

    def program(self, name: str) -> str:
        """An executable for ``name``; absolute image paths fall back to their basename."""
        base = os.path.basename(name)
        if base in ("python", "python3"):
            return sys.executable
        if "/" in name and os.access(name, os.X_OK):
            return name
        return shutil.which(base, path=self.search_path) or name
