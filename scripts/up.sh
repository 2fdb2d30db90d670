#!/usr/bin/env bash
# Quickstart: install what is needed, then run everything on http://127.0.0.1:8080 (Ctrl-C stops it).
# Extra arguments go to `fiscal up` (e.g. --port 9090, --replicas 2, --signing-backend pkcs11).
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/bootstrap.sh
if printf '%s\n' "$@" | grep -q pkcs11; then apt_install softhsm2-util:softhsm2; fi
exec .venv/bin/fiscal up "$@"
