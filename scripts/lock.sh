#!/usr/bin/env bash
# Re-pin every dependency after editing pyproject.toml.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/bootstrap.sh >/dev/null 2>&1 || true
.venv/bin/uv pip compile pyproject.toml --extra dev --python-version 3.11 --upgrade -q -o constraints.txt
