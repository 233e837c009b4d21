"""The README's first command: a full local sync, re-runs that skip, and a changed version."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow


SHELL_TRAPS = {
    "DATABASE_URL": "postgresql://prod:Pr0dPass@127.0.0.1:1/prod",
    "STORAGE_URL": "http://127.0.0.1:1/storage/v1",
    "MEDIPIM_URL": "http://127.0.0.1:1",
}
"""A shell that names other services (closed loopback ports): the demo must not use them."""


def demo(data_dir: Path, *args: str) -> str:
    env = {**os.environ, **SHELL_TRAPS}
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


def test_demo_ignores_the_shell_and_a_dry_run_stores_nothing(tmp_path: Path) -> None:
    first = demo(tmp_path)
    assert "127.0.0.1:1" not in first
    assert "reading products from the MediPim simulator at http://127.0.0.1:" in first
    latest = tmp_path / "small" / "storage" / "medipim-raw" / "latest.ndjson"
    before = latest.stat()
    runs = sorted((latest.parent / "runs").iterdir())
    dry = demo(tmp_path, "--dry-run", "--version", "2")
    assert "temporary store" in dry
    assert counts(dry)["updated"] > 0  # it counted the changes of version 2 ...
    after = latest.stat()
    assert (after.st_ino, after.st_mtime_ns) == (before.st_ino, before.st_mtime_ns)
    assert sorted((latest.parent / "runs").iterdir()) == runs  # ... and stored nothing
    again = counts(demo(tmp_path))
    assert again["updated"] == again["inserted"] == 0  # nor wrote a product


def test_ctrl_c_ends_the_demo_without_a_traceback(tmp_path: Path) -> None:
    process = subprocess.Popen(
        [sys.executable, "-m", "catalogsync", "demo", "--data-dir", str(tmp_path)],
        env={**os.environ, **SHELL_TRAPS, "PYTHONUNBUFFERED": "1", "COLUMNS": "120"},
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        start_new_session=True,  # a terminal's Ctrl-C reaches the whole process group
    )
    assert process.stdout is not None
    seen = []
    for line in process.stdout:
        seen.append(line)
        if line.startswith("state: "):  # the servers are up and the fetch is starting
            break
    time.sleep(2)
    os.killpg(process.pid, signal.SIGINT)
    rest, _ = process.communicate(timeout=120)
    output = "".join(seen) + rest
    assert process.returncode == 130, output
    assert "Traceback" not in output, output
    assert "interrupted" in output
