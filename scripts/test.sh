#!/usr/bin/env bash
# The whole test suite, from a fresh clone: installs what it needs (cached outside the clone under
# ${CATALOGSYNC_CACHE:-~/.cache/catalogsync}), lints, type-checks, then runs pytest against real
# servers (PostgreSQL, the storage server, the MediPim simulator, a Kubernetes control plane) and
# the image built from the Dockerfile (scripts/build-image.sh, cached by its inputs).
# Extra arguments go to pytest, e.g. scripts/test.sh -k fetcher -x
set -euo pipefail
cd "$(dirname "$0")/.."
export CATALOGSYNC_CACHE=${CATALOGSYNC_CACHE:-$HOME/.cache/catalogsync}
step() { printf '\n== %s (%s)\n' "$1" "$(date +%H:%M:%S)"; }

step "python environment"
scripts/bootstrap.sh
step "kubernetes binaries"
scripts/build-k8s.sh
step "helm"
scripts/build-helm.sh
step "promtool"
scripts/build-promtool.sh
step "checkov"
scripts/install-checkov.sh
step "image"
# buildah (vfs, chroot) and running pods inside the image need root; elsewhere the image tests skip.
if [[ $EUID -eq 0 ]]; then
  scripts/build-image.sh
  export CATALOGSYNC_REQUIRE_IMAGE=1
else
  echo "not root: the image is not built and the tests that run it are skipped"
fi

step "ruff"
.venv/bin/ruff check .
.venv/bin/ruff format --check .
step "mypy"
.venv/bin/mypy
step "import contracts"
.venv/bin/lint-imports

step "pytest"
export CATALOGSYNC_REQUIRE_K8S=1
exec .venv/bin/pytest "$@"
