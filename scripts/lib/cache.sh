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

# build_go_command NAME STAMP BIN TOOLS_DIR PACKAGE LDFLAGS VERSION_ARGS [SCRIPT_ARGS...]: the whole
# of a script that builds one Go command from a module pinned in tools/<name> into the cache:
# --print-path and --force, skip when current, the lock, a staged build checked by running it with
# VERSION_ARGS, then the stamp. Prints BIN as the last line on stdout.
build_go_command() {
  go_name=$1 go_stamp=$2 go_bin=$3 go_tools=$4 go_package=$5 go_ldflags=$6 go_version_args=$7
  shift 7
  go_bin_dir="$(dirname "$go_bin")"
  force=0
  for arg in "$@"; do
    case "$arg" in
      --print-path) echo "$go_bin"; exit 0 ;;
      --force) force=1 ;;
      *) echo "usage: $0 [--print-path] [--force]" >&2; exit 2 ;;
    esac
  done
  is_current() {
    [[ -x "$go_bin" && -f "$go_bin_dir/.stamp" && "$(cat "$go_bin_dir/.stamp")" == "$go_stamp" ]]
  }
  done_if_current "$go_bin" "$go_name up to date ($go_stamp)"

  lock_cache "$go_bin_dir/.build.lock" "$go_bin"
  go_build_env
  go_staging="$(mktemp -d "$go_bin_dir/.build.XXXXXX")"
  trap 'rm -rf "$go_staging"' EXIT

  local start=$SECONDS
  echo "building $go_name ($go_stamp) ..." >&2
  (cd "$go_tools" && nice go build -p "$build_jobs" -ldflags "$go_ldflags" \
    -o "$go_staging/$go_name" "$go_package")
  # shellcheck disable=SC2086 # VERSION_ARGS is a list of words
  "$go_staging/$go_name" $go_version_args >&2

  mv -f "$go_staging/$go_name" "$go_bin"
  echo "$go_stamp" > "$go_bin_dir/.stamp"
  echo "built $go_name in $((SECONDS - start))s" >&2
  echo "$go_bin"
}
