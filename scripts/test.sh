#!/usr/bin/env bash
# Set up and test: installs what is missing, builds everything, lints the API, runs every test
# (unit and integration: real loopback peers, real eventbusd binaries, a real etcd, real SQLite
# files), the container image test, then the fuzzers for FUZZ_SECONDS each and the whole suite
# again under AddressSanitizer + UBSan and under ThreadSanitizer. Extra arguments go to the first
# ctest run.
#   QUICK=1 bash scripts/test.sh    the build, lint and ctest only (no fuzzing, no sanitizers)
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
BUILD_DIR="${BUILD_DIR:-$ROOT/build}"
start=$(date +%s)
step() { echo "== $1 ($(($(date +%s) - start)) s)"; }

bash "$ROOT/scripts/install-deps.sh"
step "build"
bash "$ROOT/scripts/build.sh"
step "buf lint proto/"
"$ROOT/.tools/node_modules/.bin/buf" lint "$ROOT/proto"
step "ctest"
ctest --test-dir "$BUILD_DIR" --output-on-failure --timeout 600 -j"${TEST_JOBS:-2}" "$@"
if [ "${QUICK:-0}" = 1 ]; then
  step "done (QUICK=1: fuzzing and sanitizers skipped)"
  exit 0
fi

# The image, run as the restricted pod runs it (README, Operations: "Container image"). buildah
# keeps the base, the layers and a ccache between runs: 1-4 min warm, about 11 min the first time
# on a machine. CONTAINER_TEST=0 skips it.
if [ "${CONTAINER_TEST:-1}" = 1 ]; then
  step "container image (scripts/container-test.sh)"
  bash "$ROOT/scripts/container-test.sh"
fi

step "fuzz (${FUZZ_SECONDS:-60} s per target)"
bash "$ROOT/scripts/fuzz.sh"
step "AddressSanitizer + UBSan: whole suite"
bash "$ROOT/scripts/sanitize.sh" asan --timeout 900
step "ThreadSanitizer"
bash "$ROOT/scripts/sanitize.sh" tsan --timeout 900
step "done"
