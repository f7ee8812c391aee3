#!/usr/bin/env bash
# Builds the whole test suite with clang under sanitizers and runs all of ctest.
#   scripts/sanitize.sh asan [ctest args]   AddressSanitizer + UBSan into build-asan/
#   scripts/sanitize.sh tsan [ctest args]   ThreadSanitizer into build-tsan/
# Any report fails the test that produced it: UBSan does not recover, ASan and TSan halt on the
# first error. tests/tsan.supp holds TSan suppressions for third-party code only.
# BUILD_DIR overrides the build directory, JOBS the build parallelism (default: nproc).
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
mode="${1:-}"
shift || true
case "$mode" in
  asan) sanitize=address,undefined ;;
  tsan) sanitize=thread ;;
  *)
    echo "usage: $0 asan|tsan [ctest args]" >&2
    exit 2
    ;;
esac
BUILD_DIR="${BUILD_DIR:-$ROOT/build-$mode}"
# Paths relative to the checkout, so ccache hits across clones (CI builds a fresh one).
export CCACHE_BASEDIR="${CCACHE_BASEDIR:-$ROOT}"
# With -g, ccache hashes the working directory too unless told not to: without this a clone in
# another folder (CI's) would miss every object.
export CCACHE_NOHASHDIR="${CCACHE_NOHASHDIR:-1}"

start=$(date +%s)
cmake -S "$ROOT" -B "$BUILD_DIR" -G Ninja -DCMAKE_BUILD_TYPE=RelWithDebInfo \
  -DCMAKE_CXX_COMPILER=clang++ -DEVENTBUS_SANITIZE="$sanitize" -DEVENTBUS_BUILD_BENCH=OFF \
  >/dev/null
cmake --build "$BUILD_DIR" -j"${JOBS:-$(nproc)}"
built=$(date +%s)

# detect_leaks stays on (the default): a leak fails the test.
export ASAN_OPTIONS="${ASAN_OPTIONS:-abort_on_error=1:detect_stack_use_after_return=1:strict_string_checks=1}"
export UBSAN_OPTIONS="${UBSAN_OPTIONS:-print_stacktrace=1:halt_on_error=1}"
export TSAN_OPTIONS="${TSAN_OPTIONS:-halt_on_error=1:second_deadlock_stack=1:suppressions=$ROOT/tests/tsan.supp}"
status=0
ctest --test-dir "$BUILD_DIR" --output-on-failure -j"${TEST_JOBS:-2}" "$@" || status=$?
echo "sanitize.sh $mode: build $((built - start)) s, tests $(($(date +%s) - built)) s" >&2
exit "$status"
