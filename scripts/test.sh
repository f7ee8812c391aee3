#!/usr/bin/env bash
# Set up and test: installs what is missing, builds everything, lints the API, and runs every
# test (unit and integration: real loopback peers, a real etcd, real SQLite files).
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
BUILD_DIR="${BUILD_DIR:-$ROOT/build}"
bash "$ROOT/scripts/install-deps.sh"
bash "$ROOT/scripts/build.sh"
echo "== buf lint proto/"
"$ROOT/.tools/node_modules/.bin/buf" lint "$ROOT/proto"
echo "== ctest"
ctest --test-dir "$BUILD_DIR" --output-on-failure --timeout 300 -j"${TEST_JOBS:-2}" "$@"
