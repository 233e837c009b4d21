"""The CLI outside a cluster and in --help: clear messages, no tracebacks, pointers that ship."""

from __future__ import annotations

import asyncio
import os
import sys
from pathlib import Path

import pytest

from catalogsync.common.errors import ExitCode

KUBECONFIG = """\
apiVersion: v1
kind: Config
clusters:
- name: closed
  cluster: {server: "https://127.0.0.1:1", insecure-skip-tls-verify: true}
users:
- name: u
  user: {token: Kube-T0ken-Secret}
contexts:
- name: here
  context: {cluster: closed, user: u}
current-context: here
"""


async def catalogsync(*args: str, home: Path, **env: str) -> tuple[int, str, str]:
    drop = ("KUBECONFIG", "KUBERNETES_SERVICE_HOST", "KUBERNETES_SERVICE_PORT")
    base = {k: v for k, v in os.environ.items() if k not in drop and not k.startswith("CATALOG")}
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "catalogsync",
        *args,
        env=base | {"HOME": str(home), "CATALOGSYNC_LOG_FORMAT": "json", **env},
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    out, err = await asyncio.wait_for(process.communicate(), 120)
    assert process.returncode is not None
    return process.returncode, out.decode(), err.decode()


async def test_operator_without_any_kubeconfig_says_so(tmp_path: Path) -> None:
    code, _, err = await catalogsync("operator", "-n", "sync", home=tmp_path)
    assert code == ExitCode.PERMANENT, err
    assert "KUBECONFIG" in err
    assert "~/.kube/config" in err
    assert "Traceback" not in err


async def test_operator_uses_the_home_kubeconfig_and_names_an_unreachable_server(
    tmp_path: Path,
) -> None:
    (tmp_path / ".kube").mkdir()
    (tmp_path / ".kube" / "config").write_text(KUBECONFIG)
    code, _, err = await catalogsync("operator", "-n", "sync", home=tmp_path)
    assert code == ExitCode.TRANSIENT, err
    assert "cannot reach the Kubernetes API server at https://127.0.0.1:1" in err
    assert "Traceback" not in err
    assert "Kube-T0ken-Secret" not in err


async def test_create_run_without_any_kubeconfig_says_so(tmp_path: Path) -> None:
    template = tmp_path / "template.yaml"
    template.write_text("apiVersion: catalogsync.io/v1alpha1\nkind: CatalogSync\nspec: {}\n")
    code, _, err = await catalogsync(
        "create-run", "--template", str(template), "--namespace", "sync", home=tmp_path
    )
    assert code == ExitCode.PERMANENT, err
    assert "KUBECONFIG" in err
    assert "Traceback" not in err


@pytest.mark.parametrize(
    ("command", "variables"),
    [
        ("maintain", ("DATABASE_URL", "MAINTAINER_CHUNK_SIZE", "STORAGE_URL", "SYNC_RUN_ID")),
        ("fetch", ("MEDIPIM_URL", "FETCHER_MAX_ATTEMPTS", "STORAGE_URL", "CATALOGSYNC_LOG_LEVEL")),
    ],
)
async def test_help_lists_the_variables_and_exit_codes(
    tmp_path: Path, command: str, variables: tuple[str, ...]
) -> None:
    code, out, _ = await catalogsync(command, "--help", home=tmp_path)
    assert code == 0
    for name in variables:
        assert name in out
    assert "Exit codes:" in out
    for exit_code in ("0 done", "1 transient", "2 configuration", "3 invalid data"):
        assert exit_code in out


async def test_configuration_errors_point_to_help_not_the_readme(tmp_path: Path) -> None:
    code, _, err = await catalogsync(
        "maintain", home=tmp_path, MAINTAINER_CHUNK_SIZE="5", DATABASE_URL="not-a-url"
    )
    assert code == ExitCode.PERMANENT
    assert "catalogsync <command> --help" in err
    assert "README" not in err
