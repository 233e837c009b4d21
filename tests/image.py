"""The built image (scripts/build-image.sh) and running commands inside it like a pod would."""

from __future__ import annotations

import asyncio
import os
import subprocess
from dataclasses import dataclass
from pathlib import Path
from typing import Any, cast

import pytest

from catalogsync.dev.kubelet.api import Api
from catalogsync.dev.kubelet.sandbox import ImageRoot, ImageSandbox
from tests.chart import ROOT

IMAGE = "ghcr.io/catalogsync/catalogsync"
UID = 10001


def built_image_dir() -> Path:
    """The build of the checkout's current inputs; skip (fail in CI) when it was not built.

    ``CATALOGSYNC_IMAGE_DIR`` names another build's directory instead (an image built elsewhere,
    or an older build while iterating on tests).
    """
    chosen = os.environ.get("CATALOGSYNC_IMAGE_DIR")
    directory = Path(
        chosen
        or subprocess.run(
            [str(ROOT / "scripts/build-image.sh"), "--print-path"],
            capture_output=True,
            text=True,
            check=True,
        ).stdout.strip()
    )
    if not (directory / "done").exists():
        message = f"no image of the current tree at {directory}: run scripts/build-image.sh"
        if os.environ.get("CATALOGSYNC_REQUIRE_IMAGE"):
            pytest.fail(f"CATALOGSYNC_REQUIRE_IMAGE is set but {message}", pytrace=False)
        pytest.skip(message)
    if os.geteuid() != 0:
        pytest.skip("running the image's root filesystem needs root (mounts and chroot)")
    return directory


@dataclass
class Result:
    returncode: int
    output: str


def pod(
    *,
    read_only: bool = True,
    run_as_user: int = UID,
    volumes: list[dict[str, Any]] | None = None,
) -> dict[str, Any]:
    """A pod with one container of the image, secured as the chart's pods are."""
    return {
        "metadata": {"name": "probe", "namespace": "default", "uid": "0" * 8},
        "spec": {
            "securityContext": {
                "runAsNonRoot": True,
                "runAsUser": run_as_user,
                "runAsGroup": run_as_user,
                "fsGroup": run_as_user,
            },
            "containers": [
                {
                    "name": "main",
                    "image": f"{IMAGE}:test",
                    "securityContext": {
                        "readOnlyRootFilesystem": read_only,
                        "allowPrivilegeEscalation": False,
                        "capabilities": {"drop": ["ALL"]},
                    },
                    "volumeMounts": [{"name": "tmp", "mountPath": "/tmp"}],
                }
            ],
            "volumes": volumes or [{"name": "tmp", "emptyDir": {}}],
        },
    }


def run_in_image(
    image: ImageRoot,
    directory: Path,
    args: list[str],
    *,
    command: list[str] | None = None,
    spec: dict[str, Any] | None = None,
    env: dict[str, str] | None = None,
) -> Result:
    """Run the image's entrypoint (or ``command``) with ``args`` as a pod's container would."""
    body = spec or pod()
    container = body["spec"]["containers"][0]
    container["args"] = args
    if command is not None:
        container["command"] = command
    sandbox = ImageSandbox(image)
    variables = sandbox.environment(body, container, env or {}, {}, credentials=False)
    # No secret volumes here, so the API is never asked.
    argv = asyncio.run(sandbox.argv(cast(Api, None), body, directory, container, variables))
    done = subprocess.run(
        argv,
        env=variables,
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    return Result(done.returncode, done.stdout + done.stderr)
