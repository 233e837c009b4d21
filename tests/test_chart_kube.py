"""The rendered chart against the real API server: schema validation and Pod Security admission.

``kubectl apply --dry-run=server`` runs every object through the API server's validation,
defaulting and admission (including PodSecurity) without persisting it, so a field the server
rejects, or a pod template the restricted profile would refuse, fails here and not at install.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.chart import NON_DEFAULT_VALUES, Helm, documents, helm_binary
from tests.plugins.kube import Kubectl

pytestmark = pytest.mark.kube

RESTRICTED = {
    "pod-security.kubernetes.io/enforce": "restricted",
    "pod-security.kubernetes.io/warn": "restricted",
    "pod-security.kubernetes.io/audit": "restricted",
}


@pytest.fixture(scope="module")
def helm(tmp_path_factory: pytest.TempPathFactory) -> Helm:
    return Helm(helm_binary(), tmp_path_factory.mktemp("helm"))


@pytest.fixture
def restricted(namespace: str, kubectl: Kubectl) -> str:
    kubectl("label", "namespace", namespace, *(f"{k}={v}" for k, v in RESTRICTED.items()))
    return namespace


@pytest.fixture
def second_namespace(kubectl: Kubectl, restricted: str) -> Iterator[str]:
    name = f"{restricted[:50]}-runs"
    kubectl("create", "namespace", name)
    kubectl("label", "namespace", name, *(f"{k}={v}" for k, v in RESTRICTED.items()))
    yield name
    kubectl("delete", "namespace", name, "--wait=false", "--ignore-not-found")


def dry_run(kubectl: Kubectl, manifest: str) -> str:
    result = kubectl.run("apply", "--dry-run=server", "-f", "-", input=manifest, check=False)
    assert result.returncode == 0, result.stderr
    assert "Warning" not in result.stderr, result.stderr
    return result.stdout


def test_default_values_are_accepted_by_the_api_server(
    helm: Helm, kubectl: Kubectl, restricted: str
) -> None:
    manifest = helm.template_text(namespace=restricted)
    out = dry_run(kubectl, manifest)
    kinds = {doc["kind"] for doc in documents(manifest)}
    assert kinds == {
        "CustomResourceDefinition",
        "ServiceAccount",
        "ConfigMap",
        "Role",
        "RoleBinding",
        "NetworkPolicy",
        "Deployment",
        "CronJob",
    }
    assert out.count("(server dry run)") == len(documents(manifest))


def test_non_default_values_are_accepted_by_the_api_server(
    helm: Helm, kubectl: Kubectl, restricted: str, second_namespace: str
) -> None:
    values = {
        **NON_DEFAULT_VALUES,
        "operator": {
            **NON_DEFAULT_VALUES["operator"],
            "watchNamespaces": [restricted, second_namespace],
        },
        "schedule": {**NON_DEFAULT_VALUES["schedule"], "runNamespace": second_namespace},
    }
    manifest = helm.template_text(values, namespace=restricted)
    dry_run(kubectl, manifest)


def test_cluster_wide_mode_is_accepted_by_the_api_server(
    helm: Helm, kubectl: Kubectl, restricted: str
) -> None:
    manifest = helm.template_text(
        {"operator": {"watchAllNamespaces": True}, "crds": {"create": False}},
        namespace=restricted,
        release=f"cw-{restricted[:20]}",
    )
    assert "kind: ClusterRole" in manifest
    dry_run(kubectl, manifest)


def test_the_restricted_profile_really_is_enforced_here(
    helm: Helm, kubectl: Kubectl, restricted: str
) -> None:
    """The same dry run rejects a chart whose pods would run as root: the check has teeth."""
    manifest = helm.template_text(namespace=restricted).replace(
        "runAsNonRoot: true", "runAsNonRoot: false"
    )
    result = kubectl.run("apply", "--dry-run=server", "-f", "-", input=manifest, check=False)
    assert 'would violate PodSecurity "restricted:latest"' in result.stderr
