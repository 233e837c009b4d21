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

helm_bin="${CATALOGSYNC_HELM_BIN:-$cache_root/helm/${HELM_VERSION}/helm}"
bin_dir="$(dirname "$helm_bin")"

force=0
for arg in "$@"; do
  case "$arg" in
    --print-path) echo "$helm_bin"; exit 0 ;;
    --force) force=1 ;;
    *) echo "usage: $0 [--print-path] [--force]" >&2; exit 2 ;;
  esac
done

is_current() {
  [[ -x "$helm_bin" && -f "$bin_dir/.stamp" && "$(cat "$bin_dir/.stamp")" == "helm=${HELM_VERSION}" ]]
}

done_if_current "$helm_bin" "helm ${HELM_VERSION} up to date"

lock_cache "$bin_dir/.build.lock" "$helm_bin"
go_build_env
staging="$(mktemp -d "$bin_dir/.build.XXXXXX")"
trap 'rm -rf "$staging"' EXIT

ldflags="-s -w -X helm.sh/helm/v4/internal/version.version=${HELM_VERSION}"
ldflags+=" -X helm.sh/helm/v4/internal/version.metadata= -X helm.sh/helm/v4/internal/version.gitTreeState=clean"

start=$SECONDS
echo "building helm ${HELM_VERSION} ..." >&2
(cd "$tools" && nice go build -p "$build_jobs" -ldflags "$ldflags" -o "$staging/helm" helm.sh/helm/v4/cmd/helm)
"$staging/helm" version --short >&2

mv -f "$staging/helm" "$helm_bin"
echo "helm=${HELM_VERSION}" > "$bin_dir/.stamp"
echo "built helm ${HELM_VERSION} in $((SECONDS - start))s" >&2
echo "$helm_bin"
