"""The Helm chart under test: the built helm and checkov binaries, and rendering helpers."""

from __future__ import annotations

import os
import subprocess
from collections.abc import Iterable, Iterator, Mapping
from pathlib import Path
from typing import Any

import pytest
import yaml

ROOT = Path(__file__).resolve().parent.parent
CHART = ROOT / "deploy/helm/catalogsync"
CRD_SOURCE = ROOT / "deploy/crds/catalogsync.io_catalogsyncs.yaml"
KIND_VALUES = ROOT / "deploy/examples/kind-values.yaml"

Manifest = dict[str, Any]


def cached_tool(script: str, flag: str, what: str) -> Path:
    """The path a build/install script caches its tool at; skip (or fail in CI) when absent."""
    path = Path(
        subprocess.run(
            [str(ROOT / "scripts" / script), flag], capture_output=True, text=True, check=True
        ).stdout.strip()
    )
    if not os.access(path, os.X_OK):
        message = f"{what} not found at {path}: run scripts/{script}"
        if os.environ.get("CATALOGSYNC_REQUIRE_K8S"):
            pytest.fail(f"CATALOGSYNC_REQUIRE_K8S is set but {message}", pytrace=False)
        pytest.skip(message)
    return path


def helm_binary() -> Path:
    return cached_tool("build-helm.sh", "--print-path", "helm")


def promtool_binary() -> Path:
    return cached_tool("build-promtool.sh", "--print-path", "promtool")


def checkov_binary() -> Path:
    return cached_tool("install-checkov.sh", "--print-path", "checkov")


class Helm:
    """The built helm CLI, with HOME-independent config and cache directories."""

    def __init__(self, binary: Path, home: Path) -> None:
        self.binary = binary
        self.env = {
            **os.environ,
            "HELM_CONFIG_HOME": str(home / "config"),
            "HELM_CACHE_HOME": str(home / "cache"),
            "HELM_DATA_HOME": str(home / "data"),
        }

    def run(
        self, *args: str, input: str | None = None, check: bool = True
    ) -> subprocess.CompletedProcess[str]:
        result = subprocess.run(
            [str(self.binary), *args],
            input=input,
            capture_output=True,
            text=True,
            env=self.env,
            timeout=120,
            check=False,
        )
        if check and result.returncode != 0:
            raise AssertionError(
                f"helm {' '.join(args)} exited {result.returncode}:\n{result.stderr}"
            )
        return result

    def template_text(
        self,
        values: Mapping[str, Any] | None = None,
        *,
        namespace: str = "catalogsync",
        release: str = "cs",
        tests: bool = False,
    ) -> str:
        """``helm template`` of the chart; ``values`` go in as one values file. The ``helm test``
        hook's objects are left out unless ``tests``: ``helm install`` does not create them."""
        args = ["template", release, str(CHART), "--namespace", namespace]
        if not tests:
            args.append("--skip-tests")
        if not values:
            return self.run(*args).stdout
        return self.run(*args, "--values", "-", input=yaml.safe_dump(dict(values))).stdout

    def template(self, values: Mapping[str, Any] | None = None, **kwargs: Any) -> list[Manifest]:
        return documents(self.template_text(values, **kwargs))


def documents(text: str) -> list[Manifest]:
    return [doc for doc in yaml.safe_load_all(text) if doc]


def find(manifests: Iterable[Manifest], kind: str, name_suffix: str = "") -> list[Manifest]:
    return [
        m for m in manifests if m["kind"] == kind and m["metadata"]["name"].endswith(name_suffix)
    ]


def one(manifests: Iterable[Manifest], kind: str, name_suffix: str = "") -> Manifest:
    found = find(manifests, kind, name_suffix)
    assert len(found) == 1, f"expected one {kind} *{name_suffix}, found {len(found)}"
    return found[0]


def pod_specs(manifests: Iterable[Manifest]) -> Iterator[tuple[str, Manifest]]:
    """Every pod template of the chart, by ``Kind/name``."""
    for m in manifests:
        name = f"{m['kind']}/{m['metadata']['name']}"
        if m["kind"] in ("Deployment", "Job", "StatefulSet", "DaemonSet"):
            yield name, m["spec"]["template"]["spec"]
        elif m["kind"] == "CronJob":
            yield name, m["spec"]["jobTemplate"]["spec"]["template"]["spec"]


NON_DEFAULT_VALUES: dict[str, Any] = {
    "image": {
        "repository": "registry.example.com/platform/catalogsync",
        "tag": "1.2.3",
        "digest": "sha256:" + "ab" * 32,
        "pullPolicy": "Always",
        "pullSecrets": ["registry-credentials"],
    },
    "commonLabels": {"team": "data"},
    "operator": {
        "resources": {"requests": {"cpu": "20m", "memory": "96Mi"}, "limits": {"memory": "200Mi"}},
        "nodeSelector": {"kubernetes.io/os": "linux"},
        "tolerations": [{"key": "dedicated", "operator": "Exists", "effect": "NoSchedule"}],
        "affinity": {
            "nodeAffinity": {
                "preferredDuringSchedulingIgnoredDuringExecution": [
                    {
                        "weight": 10,
                        "preference": {
                            "matchExpressions": [
                                {"key": "pool", "operator": "In", "values": ["system"]}
                            ]
                        },
                    }
                ]
            }
        },
        "podAnnotations": {"example.com/scrape": "false"},
        "env": [{"name": "HTTPS_PROXY", "value": "http://proxy.example.com:3128"}],
    },
    "defaults": {
        "medipim": {"url": "https://medipim.example.com", "credentialsSecret": "mp"},
        "storage": {
            "url": "https://abcd.supabase.co",
            "bucket": "catalog",
            "credentialsSecret": "st",
        },
        "database": {"table": "catalog.products", "credentialsSecret": "db"},
    },
    "history": {
        "successfulRunsHistoryLimit": 5,
        "failedRunsHistoryLimit": 1,
        "skippedRunsHistoryLimit": 2,
    },
    "fetcher": {
        "resources": {"requests": {"cpu": "200m", "memory": "300Mi"}},
        "nodeSelector": {"pool": "batch"},
        "tolerations": [],
        "priorityClassName": "batch-low",
        "backoffLimit": 4,
        "activeDeadlineSeconds": 3600,
        "scratchSizeLimit": "2Gi",
        "env": [{"name": "FETCHER_MAX_ATTEMPTS", "value": "7"}],
        "podSecurityContext": {"fsGroupChangePolicy": "OnRootMismatch", "runAsUser": 20000},
        "securityContext": {"runAsUser": 20000},
        "extraVolumes": [{"name": "ca", "configMap": {"name": "corporate-ca"}}],
        "extraVolumeMounts": [{"name": "ca", "mountPath": "/etc/ssl/corporate", "readOnly": True}],
    },
    "maintainer": {
        "resources": {"requests": {"cpu": "2", "memory": "4Gi"}, "limits": {"memory": "4Gi"}},
        # null removes a default map (Helm merges maps, so {} would keep the default's keys).
        "nodeSelector": None,
        "tolerations": [],
        "scratchSizeLimit": None,
        "affinity": {
            "nodeAffinity": {
                "requiredDuringSchedulingIgnoredDuringExecution": {
                    "nodeSelectorTerms": [
                        {"matchExpressions": [{"key": "pool", "operator": "In", "values": ["db"]}]}
                    ]
                }
            }
        },
        "priorityClassName": "batch-high",
        "backoffLimit": 1,
        "activeDeadlineSeconds": 7200,
        "env": [],
        "podSecurityContext": {"supplementalGroups": [5000]},
        "securityContext": {"runAsGroup": 30000},
    },
    "schedule": {
        "schedule": "30 3 * * 1-5",
        "timeZone": "Australia/Sydney",
        "suspend": True,
        "startingDeadlineSeconds": 300,
        "ttlSecondsAfterFinished": 600,
        "runNamePrefix": "nightly",
        "run": {
            "labels": {"team": "data"},
            "spec": {"maintainer": {"chunkSize": 2000, "deleteMissing": True}},
        },
        "priorityClassName": "batch-low",
    },
    "notifications": {"webhook": {"secretName": "sync-webhook", "attempts": 3}},
}
