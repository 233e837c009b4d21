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
build_go_command promtool "promtool=${version}" \
  "${CATALOGSYNC_PROMTOOL_BIN:-$cache_root/promtool/${version}/promtool}" \
  "$tools" github.com/prometheus/prometheus/cmd/promtool "-s -w" "--version" "$@"
