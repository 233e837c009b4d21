#!/usr/bin/env bash
# Build the image from the repository's Dockerfile (the file users `docker build`) with buildah,
# without a container registry: the base is made here from Debian packages with mmdebstrap
# (bookworm, its python3 3.11), where users build on the official python slim image pinned in the
# Dockerfile by tag and digest.
#
# Outputs, in $CATALOGSYNC_CACHE/image/<key>/ (key: a hash of every build input, so an unchanged
# tree is never rebuilt and a warm CI run skips the build):
#   catalogsync-<version>.oci.tar   the image as an OCI archive, tagged ghcr.io/catalogsync/catalogsync:<version>
#   digest                          its manifest digest (sha256:...)
#   sbom.cdx.json                   CycloneDX SBOM of the image's Python environment (also in the image)
#   rootfs/                         the image's root filesystem, unpacked (the process kubelet runs it)
#   config.json                     the image's OCI config (entrypoint, env, user, labels)
# The last line on stdout is that directory.
#
# Build-time plumbing stays out of the image and out of the Dockerfile: this machine's CA bundle
# and global pip configuration (package downloads may pass a TLS-inspecting proxy) are mounted
# read-only into the RUN steps only.
#
# Needs root (buildah with the vfs driver and chroot isolation) and installs buildah and
# mmdebstrap with apt when they are missing.
#
# Usage: scripts/build-image.sh [--print-path] [--force] [--lock]
set -euo pipefail

repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
# shellcheck source=lib/cache.sh
source "$repo/scripts/lib/cache.sh"
images="$cache_root/image"
buildah_root="$images/storage"
name=ghcr.io/catalogsync/catalogsync
version="$(sed -n 's/^version = "\(.*\)"$/\1/p' "$repo/pyproject.toml" | head -1)"
source_url=https://github.com/catalogsync/catalogsync

# The Debian base: its inputs are its key.
suite=bookworm
base_packages=python3,python3-venv,python-is-python3,passwd,ca-certificates
mirrors=(
  "deb http://deb.debian.org/debian $suite main"
  "deb http://deb.debian.org/debian $suite-updates main"
  "deb http://deb.debian.org/debian-security $suite-security main"
)
base_key="$(printf '%s\n' "v1" "$suite" "$base_packages" "${mirrors[@]}" | sha256sum | cut -c1-16)"
base_tar="$images/base-$base_key.tar"
base_image="localhost/catalogsync-base:$base_key"

force=0
print_only=0
for arg in "$@"; do
  case "$arg" in
    --print-path) print_only=1 ;;
    --force) force=1 ;;
    --lock)
      "$repo/scripts/bootstrap.sh"
      cd "$repo/tools/sbom"
      "$repo/.venv/bin/uv" pip compile requirements.in --python-version 3.11 --upgrade \
        --generate-hashes -q -o requirements.txt
      exit 0 ;;
    *) echo "usage: $0 [--print-path] [--force] [--lock]" >&2; exit 2 ;;
  esac
done

# What the Dockerfile reads (.dockerignore admits exactly these), plus this script and the base.
inputs() {
  cd "$repo"
  find Dockerfile .dockerignore pyproject.toml constraints.txt README.md LICENSE \
    tools/sbom/requirements.txt src operator jobs scripts/build-image.sh \
    \( -name __pycache__ -o -name '*.egg-info' -o -path src/catalogsync/dev \) -prune \
    -o -print | LC_ALL=C sort
}
inputs_hash() {
  cd "$repo"
  inputs | while read -r path; do
    if [[ -L "$path" ]]; then printf 'link %s %s\n' "$path" "$(readlink "$path")"
    elif [[ -f "$path" ]]; then printf 'file %s %s\n' "$path" "$(sha256sum < "$path" | cut -c1-64)"
    fi
  done | cat - <(echo "base $base_key") | sha256sum | cut -c1-16
}
# The revision the image's contents come from: the last commit that touched an input.
revision() {
  cd "$repo"
  local paths commit
  mapfile -t paths < <(inputs)
  commit="$(git log -1 --format=%H -- "${paths[@]}" 2>/dev/null || true)"
  [[ -n "$commit" ]] || { echo unknown; return; }
  if ! git diff --quiet HEAD -- "${paths[@]}" 2>/dev/null; then commit="$commit-modified"; fi
  echo "$commit"
}

key="$(inputs_hash)"
out="$images/$key"
archive="$out/catalogsync-$version.oci.tar"
if (( print_only )); then echo "$out"; exit 0; fi

is_current() { [[ -f "$out/done" ]]; }
done_if_current "$out" "image up to date in $out ($(cat "$out/digest" 2>/dev/null))"
lock_cache "$images/build.lock" "$out"

if [[ $EUID -ne 0 ]]; then
  echo "build-image.sh needs root (buildah --storage-driver vfs --isolation chroot)" >&2
  exit 1
fi

ensure_tools() {
  local missing=()
  command -v buildah >/dev/null || missing+=(buildah)
  command -v mmdebstrap >/dev/null || missing+=(mmdebstrap)
  (( ${#missing[@]} )) || return 0
  echo "installing ${missing[*]} with apt" >&2
  export DEBIAN_FRONTEND=noninteractive
  apt-get install -y -q "${missing[@]}" >&2 || { apt-get update -q >&2 && apt-get install -y -q "${missing[@]}" >&2; }
}

bah() { nice buildah --root "$buildah_root" --runroot "$images/run" --storage-driver vfs "$@"; }

# This machine's CA bundle and global pip configuration, read-only, for the RUN steps only.
build_mounts() {
  local file
  for file in /etc/ssl/certs/ca-certificates.crt /etc/pip.conf; do
    [[ -f "$file" ]] && printf -- '--volume=%s:%s:ro\n' "$file" "$file"
  done
  return 0
}

ensure_base() {
  if bah inspect --type image "$base_image" >/dev/null 2>&1; then return; fi
  if [[ ! -f "$base_tar" ]]; then
    echo "making the $suite base with mmdebstrap ($base_packages)" >&2
    local aptopts=()
    [[ -f /etc/apt/apt.conf.d/99artifact-registry ]] &&
      aptopts+=(--aptopt=/etc/apt/apt.conf.d/99artifact-registry)
    nice mmdebstrap --quiet --variant=minbase --include="$base_packages" "${aptopts[@]}" \
      --customize-hook='rm -rf "$1"/var/lib/apt/lists/* "$1"/var/cache/apt/*' \
      "$suite" "$base_tar.tmp" "${mirrors[@]}" >&2
    mv "$base_tar.tmp" "$base_tar"
  fi
  local ctr
  ctr="$(bah from scratch)"
  bah add "$ctr" "$base_tar" / >&2
  bah config --env PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin \
    --env LANG=C.UTF-8 --cmd python3 "$ctr"
  bah commit --rm -q "$ctr" "$base_image" >&2
}

start=$SECONDS
ensure_tools
mkdir -p "$images"
ensure_base
echo "building $name:$version from the Dockerfile (inputs $key)" >&2
mapfile -t mounts < <(build_mounts)
tag="localhost/catalogsync:$key"
# An image of these inputs left by an interrupted run is reused.
bah inspect --type image "$tag" >/dev/null 2>&1 || bah bud --isolation chroot --layers=false -q "${mounts[@]}" \
  --build-arg "PYTHON_IMAGE=$base_image" \
  --build-arg "VERSION=$version" \
  --build-arg "REVISION=$(revision)" \
  --build-arg "SOURCE=$source_url" \
  -f "$repo/Dockerfile" -t "$tag" "$repo" >&2

rm -rf "$out.tmp"
mkdir -p "$out.tmp/rootfs"
bah push -q --digestfile "$out.tmp/digest" "$tag" "oci-archive:$out.tmp/catalogsync-$version.oci.tar:$name:$version" >&2
bah inspect --type image "$tag" | python3 -c 'import json, sys; json.dump(json.load(sys.stdin)["OCIv1"], sys.stdout, indent=2)' > "$out.tmp/config.json"
ctr="$(bah from --pull-never -q "$tag")"
mnt="$(bah mount "$ctr")"
tar -C "$mnt" -cf - . | tar -C "$out.tmp/rootfs" -xpf -
bah umount "$ctr" >/dev/null
bah rm "$ctr" >/dev/null
bah rmi -f "$tag" >/dev/null
cp "$out.tmp/rootfs/opt/catalogsync/sbom.cdx.json" "$out.tmp/sbom.cdx.json"
rm -rf "$out"
mv "$out.tmp" "$out"
touch "$out/done"
# Outputs of other inputs go after two hours (a running test may still use one); the base stays.
find "$images" -mindepth 1 -maxdepth 1 -type d -regex '.*/[0-9a-f]\{16\}\(\.tmp\)?' ! -name "$key" -mmin +120 \
  -exec rm -rf {} +
echo "built $name:$version $(cat "$out/digest") in $((SECONDS - start))s" >&2
echo "$out"
