#!/usr/bin/env bash
# The whole test suite: installs what it needs, checks generated code, runs the Python tests
# (real PostgreSQL, Envoy, services as processes, SoftHSM2) and the JavaScript SDK's tests.
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/bootstrap.sh
apt_install softhsm2-util:softhsm2 chromium:chromium

echo "== generated code matches protos/"
.venv/bin/python protos/generate.py --check

echo "== lint (ruff)"
.venv/bin/ruff check services cli stack gateway simulators tests protos

echo "== types (mypy)"
.venv/bin/mypy  # what and how: [tool.mypy] in pyproject.toml

echo "== unit tests (no processes, seconds)"
.venv/bin/pytest tests/unit -q

echo "== Python tests (integration: real PostgreSQL, Envoy, services as processes)"
[ $# -gt 0 ] || set -- --ignore=tests/unit  # the unit layer just ran
.venv/bin/pytest "$@"

if [ -f sdk/js/package.json ] && [ -z "${SKIP_SDK_TESTS:-}" ]; then
  echo "== POS SDK tests"
  (cd sdk/js && npm ci --no-audit --no-fund --loglevel=error && npm run build --if-present && \
     FISCAL_BIN="$PWD/../../.venv/bin/fiscal" npm test)
fi
