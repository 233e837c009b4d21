#!/usr/bin/env bash
# Install checkov (policy checks for the rendered chart and the Dockerfile) into its own venv.
#
# checkov pins many libraries that clash with the project's own, so it never goes into .venv. Its
# dependency set is locked in tools/checkov/requirements.txt (regenerate with --lock after editing
# tools/checkov/requirements.in). The venv lives outside the checkout so that fresh clones reuse it:
#   $CATALOGSYNC_CHECKOV_VENV, else ${CATALOGSYNC_CACHE:-~/.cache/catalogsync}/checkov-venv
# An install is skipped when the venv is stamped with the current lock file's hash.
# The last line printed on stdout is the path of the checkov executable.
#
# Usage: scripts/install-checkov.sh [--print-path] [--force] [--lock]
set -euo pipefail

repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
tools="$repo/tools/checkov"
# shellcheck source=lib/cache.sh
source "$repo/scripts/lib/cache.sh"
venv="${CATALOGSYNC_CHECKOV_VENV:-$cache_root/checkov-venv}"
py="${PYTHON:-python3}"

force=0
for arg in "$@"; do
  case "$arg" in
    --print-path) echo "$venv/bin/checkov"; exit 0 ;;
    --force) force=1 ;;
    --lock)
      "$repo/scripts/bootstrap.sh"
      cd "$tools"
      "$repo/.venv/bin/uv" pip compile requirements.in --python-version 3.11 --upgrade -q \
        -o requirements.txt
      exit 0 ;;
    *) echo "usage: $0 [--print-path] [--force] [--lock]" >&2; exit 2 ;;
  esac
done

stamp="$(sha256sum "$tools/requirements.txt" | cut -c1-16)"
is_current() {
  [[ -x "$venv/bin/checkov" && -f "$venv/.stamp" && "$(cat "$venv/.stamp")" == "$stamp" ]]
}

done_if_current "$venv/bin/checkov" "checkov up to date in $venv"

lock_cache "$venv.lock" "$venv/bin/checkov"

start=$SECONDS
rm -rf "$venv"
"$py" -m venv "$venv"
if [[ -x "$repo/.venv/bin/uv" ]]; then
  nice "$repo/.venv/bin/uv" pip install -q --python "$venv/bin/python" -r "$tools/requirements.txt"
else
  nice "$venv/bin/python" -m pip install -q --disable-pip-version-check -r "$tools/requirements.txt"
fi
"$venv/bin/checkov" --version >&2
echo "$stamp" > "$venv/.stamp"
echo "installed checkov in $((SECONDS - start))s" >&2
echo "$venv/bin/checkov"
