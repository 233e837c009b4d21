#!/usr/bin/env bash
# Build the helm CLI from source at the version pinned in tools/helm (go.mod + versions.env).
#
# The binary goes to a cache outside the checkout so that fresh clones (CI) reuse it:
#   $CATALOGSYNC_HELM_BIN, else ${CATALOGSYNC_CACHE:-~/.cache/catalogsync}/helm/<version>/helm
# A build is skipped when that file already exists and is stamped with the same version.
# The last line printed on stdout is the path of the binary.
#
# Usage: scripts/build-helm.sh [--print-path] [--force]
set -euo pipefail

repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
tools="$repo/tools/helm"
# shellcheck source=/dev/null
source "$tools/versions.env"
# shellcheck source=lib/cache.sh
source "$repo/scripts/lib/cache.sh"

ldflags="-s -w -X helm.sh/helm/v4/internal/version.version=${HELM_VERSION}"
ldflags+=" -X helm.sh/helm/v4/internal/version.metadata= -X helm.sh/helm/v4/internal/version.gitTreeState=clean"

build_go_command helm "helm=${HELM_VERSION}" \
  "${CATALOGSYNC_HELM_BIN:-$cache_root/helm/${HELM_VERSION}/helm}" \
  "$tools" helm.sh/helm/v4/cmd/helm "$ldflags" "version --short" "$@"
