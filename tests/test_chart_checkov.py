"""checkov on the rendered chart and the Dockerfile: no finding left without a written reason."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.chart import NON_DEFAULT_VALUES, ROOT, Helm, checkov_binary, helm_binary

pytestmark = pytest.mark.slow

CONFIG = ROOT / "deploy/checkov.yaml"


@pytest.fixture(scope="module")
def checkov() -> Path:
    return checkov_binary()


@pytest.fixture(scope="module")
def helm(tmp_path_factory: pytest.TempPathFactory) -> Helm:
    return Helm(helm_binary(), tmp_path_factory.mktemp("helm"))


def scan(checkov: Path, target: Path, *args: str) -> dict[str, Any]:
    result = subprocess.run(
        [str(checkov), "--skip-download", "-o", "json", "-f", str(target), *args],
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert result.returncode in (0, 1), result.stderr[-2000:]
    report = json.loads(result.stdout)
    reports = report if isinstance(report, list) else [report]
    assert len(reports) == 1, [r.get("check_type") for r in reports]
    scanned: dict[str, Any] = reports[0]
    return scanned


def failures(report: dict[str, Any]) -> list[str]:
    return [
        f"{c['check_id']} {c['check_name']} ({c['resource']})"
        for c in report["results"]["failed_checks"]
    ]


@pytest.mark.parametrize("values", ["default", "non-default"])
def test_rendered_chart_passes_checkov(
    checkov: Path, helm: Helm, tmp_path: Path, values: str
) -> None:
    rendered = tmp_path / "chart.yaml"
    rendered.write_text(helm.template_text(NON_DEFAULT_VALUES if values == "non-default" else None))
    report = scan(checkov, rendered, "--config-file", str(CONFIG))
    assert report["summary"]["passed"] > 100
    assert failures(report) == []


def test_a_pinned_digest_passes_the_digest_check_that_the_config_skips(
    checkov: Path, helm: Helm, tmp_path: Path
) -> None:
    rendered = tmp_path / "chart.yaml"
    rendered.write_text(helm.template_text(NON_DEFAULT_VALUES))
    report = scan(checkov, rendered, "--framework", "kubernetes", "--check", "CKV_K8S_43")
    assert failures(report) == []
    assert report["summary"]["passed"] == 2, "the operator Deployment and the CronJob"


def test_the_config_still_catches_an_unsafe_pod(checkov: Path, tmp_path: Path) -> None:
    """Guards against a config that silently skips everything."""
    bad = {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": "bad", "namespace": "x"},
        "spec": {
            "containers": [
                {"name": "c", "image": "busybox:latest", "securityContext": {"privileged": True}}
            ]
        },
    }
    target = tmp_path / "bad.yaml"
    target.write_text(yaml.safe_dump(bad))
    found = {
        line.split()[0] for line in failures(scan(checkov, target, "--config-file", str(CONFIG)))
    }
    assert {"CKV_K8S_16", "CKV_K8S_20", "CKV_K8S_22"} <= found


def test_dockerfile_passes_checkov_with_its_one_explained_skip(checkov: Path) -> None:
    report = scan(checkov, ROOT / "Dockerfile", "--framework", "dockerfile")
    assert failures(report) == []
    skipped = report["results"]["skipped_checks"]
    assert [c["check_id"] for c in skipped] == ["CKV_DOCKER_7"]
    assert "pinned" in skipped[0]["check_result"]["suppress_comment"]
    passed = {c["check_id"] for c in report["results"]["passed_checks"]}
    assert {"CKV_DOCKER_3", "CKV_DOCKER_8"} & passed, "a non-root USER is checked"
