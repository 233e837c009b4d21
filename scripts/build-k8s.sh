#!/usr/bin/env bash
# Build the test control plane (etcd, kube-apiserver, kube-controller-manager, kube-scheduler,
# kubectl) from source at the versions pinned in tools/k8s/versions.env.
#
# The binaries go to a cache outside the checkout so that fresh clones (CI) reuse them:
#   $CATALOGSYNC_K8S_BIN, else ${CATALOGSYNC_CACHE:-~/.cache/catalogsync}/k8s/<k8s>-etcd<etcd>/bin
# A build is skipped when that directory already holds binaries stamped with the same versions.
# The last line printed on stdout is the binary directory.
#
# Usage: scripts/build-k8s.sh [--print-bin-dir] [--force]
set -euo pipefail

repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
tools="$repo/tools/k8s"
# shellcheck source=/dev/null
source "$tools/versions.env"
# shellcheck source=lib/cache.sh
source "$repo/scripts/lib/cache.sh"

bin_dir="${CATALOGSYNC_K8S_BIN:-$cache_root/k8s/${K8S_VERSION}-etcd${ETCD_VERSION}/bin}"
binaries=(etcd kube-apiserver kube-controller-manager kube-scheduler kubectl)
stamp_text="k8s=${K8S_VERSION} etcd=${ETCD_VERSION}"

force=0
for arg in "$@"; do
  case "$arg" in
    --print-bin-dir) echo "$bin_dir"; exit 0 ;;
    --force) force=1 ;;
    *) echo "usage: $0 [--print-bin-dir] [--force]" >&2; exit 2 ;;
  esac
done

is_current() {
  [[ -f "$bin_dir/.stamp" && "$(cat "$bin_dir/.stamp")" == "$stamp_text" ]] || return 1
  local b
  for b in "${binaries[@]}"; do [[ -x "$bin_dir/$b" ]] || return 1; done
}

done_if_current "$bin_dir" "control plane binaries up to date (${stamp_text})"

# The committed build modules must match the pinned versions (regenerate them after a bump).
grep -q "k8s.io/kubernetes ${K8S_VERSION}\b" "$tools/go.mod" \
  || { echo "tools/k8s/go.mod is not at ${K8S_VERSION}: run tools/k8s/gen-replaces.sh" >&2; exit 1; }
grep -q "go.etcd.io/etcd/server/v3 ${ETCD_VERSION}\b" "$tools/etcd/go.mod" \
  || { echo "tools/k8s/etcd/go.mod is not at ${ETCD_VERSION}: run tools/k8s/etcd/update.sh" >&2; exit 1; }

lock_cache "$(dirname "$bin_dir")/.build.lock" "$bin_dir"
go_build_env
staging="$(mktemp -d "$(dirname "$bin_dir")/.build.XXXXXX")"
trap 'rm -rf "$staging"' EXIT

# The release's commit time (from the module's .info file: `go mod download -json` of a version
# that go.mod requires does not print it).
info="$(cd "$tools" && go mod download -json "k8s.io/kubernetes@${K8S_VERSION}" \
  | sed -n 's/^[[:space:]]*"Info": "\(.*\)",$/\1/p')"
build_date="$(sed -n 's/.*"Time": *"\([^"]*\)".*/\1/p' "$info")"
minor="${K8S_VERSION#v1.}"; minor="${minor%%.*}"
ldflags="-s -w"
for pkg in k8s.io/component-base/version k8s.io/client-go/pkg/version; do
  ldflags+=" -X ${pkg}.gitVersion=${K8S_VERSION} -X ${pkg}.gitMajor=1 -X ${pkg}.gitMinor=${minor}"
  ldflags+=" -X ${pkg}.gitTreeState=clean -X ${pkg}.buildDate=${build_date}"
done

start=$SECONDS
echo "building etcd ${ETCD_VERSION} ..." >&2
(cd "$tools/etcd" && nice go build -p "$build_jobs" -ldflags "-s -w" -o "$staging/etcd" \
  go.etcd.io/etcd/server/v3)
echo "building Kubernetes ${K8S_VERSION} (slow on a cold Go cache) ..." >&2
(cd "$tools" && nice go build -p "$build_jobs" -ldflags "$ldflags" -o "$staging/" \
  k8s.io/kubernetes/cmd/kube-apiserver k8s.io/kubernetes/cmd/kube-controller-manager \
  k8s.io/kubernetes/cmd/kube-scheduler k8s.io/kubernetes/cmd/kubectl)
echo "$stamp_text" > "$staging/.stamp"
chmod 755 "$staging"

if [[ -e "$bin_dir" ]]; then
  # Replace only a directory this script made (it has a stamp); never wipe a foreign one.
  if [[ -f "$bin_dir/.stamp" ]] || [[ -z "$(ls -A "$bin_dir")" ]]; then
    rm -rf "$bin_dir"
  else
    echo "refusing to replace $bin_dir: not made by $0 (no .stamp)" >&2
    exit 1
  fi
fi
mv "$staging" "$bin_dir"
trap - EXIT
echo "built ${stamp_text} in $((SECONDS - start))s" >&2
echo "$bin_dir"
