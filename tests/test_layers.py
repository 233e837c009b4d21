"""What the import contracts in pyproject.toml (checked by ``lint-imports``) do not see."""

from __future__ import annotations

import subprocess
import sys


def test_the_simulator_package_loads_its_server_and_cli_only_when_asked() -> None:
    probe = (
        "import sys, catalogsync.dev.simulator as s\n"
        "eager = [m for m in ('aiohttp', 'catalogsync.dev.simulator.server',"
        " 'catalogsync.dev.simulator.cli') if m in sys.modules]\n"
        "assert not eager, eager\n"
        "assert s.SimulatorServer.__module__ == 'catalogsync.dev.simulator.server'\n"
        "assert callable(s.main)\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", probe], check=False, capture_output=True, text=True
    )
    assert done.returncode == 0, done.stderr
