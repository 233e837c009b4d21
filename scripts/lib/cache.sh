# Sourced by the scripts that build or install a tool into the cache outside the checkout
# (build-k8s.sh, build-helm.sh, build-promtool.sh, install-checkov.sh), so that fresh clones on
# the same machine (CI) reuse what an earlier run made. Each script defines `is_current` and sets
# `force` (--force).

cache_root="${CATALOGSYNC_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/catalogsync}"

# done_if_current RESULT [MESSAGE]: unless forced, stop here when the cached tool is current,
# printing RESULT as the script's last line on stdout (callers read it).
done_if_current() {
  if (( ! force )) && is_current; then
    [[ -z "${2:-}" ]] || echo "$2" >&2
    echo "$1"
    exit 0
  fi
}

# lock_cache LOCKFILE RESULT: serialise concurrent builds (parallel CI jobs, a developer shell);
# one that waited finds the other's result and stops there. The lock lasts until the script exits.
lock_cache() {
  mkdir -p "$(dirname "$1")"
  exec 9>"$1"
  flock 9
  done_if_current "$2"
}

# go_build_env: static binaries from the local toolchain, no VCS stamping; -mod=readonly builds
# exactly what go.mod and go.sum pin, downloading into an empty module cache as needed.
go_build_env() {
  export CGO_ENABLED=0 GOTOOLCHAIN="${GOTOOLCHAIN:-local}"
  export GOFLAGS="-trimpath -mod=readonly -buildvcs=false"
  build_jobs="${CATALOGSYNC_BUILD_JOBS:-$(nproc)}"
}
