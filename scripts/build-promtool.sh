#!/usr/bin/env bash
# Build promtool (Prometheus' rule checker and rule unit tester) from source at the version pinned
# in tools/promtool (go.mod + versions.env). The chart's alert rules are checked with it.
#
# The binary goes to a cache outside the checkout so that fresh clones (CI) reuse it:
#   $CATALOGSYNC_PROMTOOL_BIN, else ${CATALOGSYNC_CACHE:-~/.cache/catalogsync}/promtool/<version>/promtool
# A build is skipped when that file already exists and is stamped with the same version.
# The last line printed on stdout is the path of the binary.
#
# Usage: scripts/build-promtool.sh [--print-path] [--force]
set -euo pipefail

repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
tools="$repo/tools/promtool"
# shellcheck source=/dev/null
source "$tools/versions.env"
# shellcheck source=lib/cache.sh
source "$repo/scripts/lib/cache.sh"

version="$PROMETHEUS_MODULE_VERSION"
promtool_bin="${CATALOGSYNC_PROMTOOL_BIN:-$cache_root/promtool/${version}/promtool}"
bin_dir="$(dirname "$promtool_bin")"

force=0
for arg in "$@"; do
  case "$arg" in
    --print-path) echo "$promtool_bin"; exit 0 ;;
    --force) force=1 ;;
    *) echo "usage: $0 [--print-path] [--force]" >&2; exit 2 ;;
  esac
done

is_current() {
  [[ -x "$promtool_bin" && -f "$bin_dir/.stamp" && "$(cat "$bin_dir/.stamp")" == "promtool=${version}" ]]
}

done_if_current "$promtool_bin" "promtool ${version} up to date"

lock_cache "$bin_dir/.build.lock" "$promtool_bin"
go_build_env
staging="$(mktemp -d "$bin_dir/.build.XXXXXX")"
trap 'rm -rf "$staging"' EXIT

start=$SECONDS
echo "building promtool ${version} ..." >&2
(cd "$tools" && nice go build -p "$build_jobs" -ldflags "-s -w" \
  -o "$staging/promtool" github.com/prometheus/prometheus/cmd/promtool)
"$staging/promtool" --version >&2

mv -f "$staging/promtool" "$promtool_bin"
echo "promtool=${version}" > "$bin_dir/.stamp"
echo "built promtool ${version} in $((SECONDS - start))s" >&2
echo "$promtool_bin"
