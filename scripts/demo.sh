#!/usr/bin/env bash
# A full sync on this machine with nothing but the repository: embedded PostgreSQL, the MediPim
# simulator and local file storage. Arguments go to `catalogsync demo` (see --help).
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/bootstrap.sh
exec .venv/bin/catalogsync demo "$@"
