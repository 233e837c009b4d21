"""One rule for the cache directory, the same as scripts/lib/cache.sh."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from catalogsync.dev import cache
from catalogsync.dev.controlplane import default_bin_dir
from catalogsync.dev.simulator import cache_root as simulator_cache

ROOT = Path(__file__).resolve().parent.parent


@pytest.mark.parametrize(
    ("env", "expected"),
    [
        ({"CATALOGSYNC_CACHE": "/c", "XDG_CACHE_HOME": "/x"}, "/c"),
        ({"XDG_CACHE_HOME": "/x"}, "/x/catalogsync"),
        ({}, "~/.cache/catalogsync"),
    ],
)
def test_every_tool_resolves_the_cache_as_the_scripts_do(
    monkeypatch: pytest.MonkeyPatch, env: dict[str, str], expected: str
) -> None:
    for name in ("CATALOGSYNC_CACHE", "XDG_CACHE_HOME", "CATALOGSYNC_K8S_BIN"):
        monkeypatch.delenv(name, raising=False)
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    root = Path(expected).expanduser()
    assert cache.cache_root() == root
    assert simulator_cache() == root / "simulator"
    assert default_bin_dir().is_relative_to(root / "k8s")
    script = f'. "{ROOT}/scripts/lib/cache.sh"; printf %s "$cache_root"'
    shell = subprocess.run(
        ["bash", "-c", script],
        check=True,
        capture_output=True,
        text=True,
        env={**env, "HOME": str(Path.home())},
    )
    assert Path(shell.stdout) == root
