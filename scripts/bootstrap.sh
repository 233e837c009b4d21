#!/usr/bin/env bash
# Create or refresh .venv with the pinned dependencies. Idempotent and quick when nothing changed:
# the hash of pyproject.toml + constraints.txt is stamped into the venv.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
VENV=.venv
UV_VERSION=0.13.9
stamp_src=$(cat pyproject.toml constraints.txt | sha256sum | cut -c1-16)
if [ -f "$VENV/.stamp" ] && [ "$(cat "$VENV/.stamp")" = "$stamp_src" ] && [ -x "$VENV/bin/catalogsync" ]; then
  exit 0
fi
"$PY" -c 'import sys; assert sys.version_info >= (3, 11), "Python 3.11+ is required"'
[ -x "$VENV/bin/python" ] || "$PY" -m venv "$VENV"
[ -x "$VENV/bin/uv" ] || "$VENV/bin/python" -m pip install -q --disable-pip-version-check "uv==$UV_VERSION"
"$VENV/bin/uv" pip install -q --python "$VENV/bin/python" -c constraints.txt -e '.[dev]'
echo "$stamp_src" > "$VENV/.stamp"
