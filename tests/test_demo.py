"""The README's first command: a full local sync, re-runs that skip, and a changed version."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow


def demo(data_dir: Path, *args: str) -> str:
    env = {
        k: v
        for k, v in os.environ.items()
        if k not in ("MEDIPIM_URL", "STORAGE_URL", "DATABASE_URL")
    }
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "catalogsync",
            "demo",
            "--data-dir",
            str(data_dir),
            "--products",
            "3000",
            *args,
        ],
        env={**env, "COLUMNS": "120"},
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    return result.stdout


def counts(output: str) -> dict[str, int]:
    found = {}
    for key in ("products fetched", "inserted", "updated", "skipped", "deleted", "invalid"):
        match = re.search(rf"{key}\s*│\s*([\d,]+)", output)
        assert match, f"no {key!r} row in:\n{output}"
        found[key] = int(match.group(1).replace(",", ""))
    return found


def test_demo_syncs_then_skips_then_applies_a_new_version(tmp_path: Path) -> None:
    first = counts(demo(tmp_path))
    assert first["products fetched"] > 2000
    assert first["inserted"] == first["products fetched"]
    assert first["updated"] == first["skipped"] == first["invalid"] == 0

    again = counts(demo(tmp_path))
    assert again["skipped"] == first["products fetched"]
    assert again["inserted"] == again["updated"] == 0

    changed = counts(demo(tmp_path, "--version", "2"))
    assert changed["updated"] > 0
    assert changed["inserted"] > 0
    assert changed["deleted"] > 0
    assert changed["skipped"] > changed["updated"]
