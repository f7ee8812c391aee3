#!/usr/bin/env bash
# Builds the libFuzzer targets (tests/fuzz) with clang into build-fuzz/ (or $FUZZ_BUILD_DIR) and runs
# each for FUZZ_SECONDS (default 60) over a temporary copy of its seed corpus and regressions (the
# repository is never modified), FUZZ_JOBS targets at a time (default 2). Prints the executions
# per target; exits non-zero if any target crashed or broke a property, naming the reproducer
# (kept in $FUZZ_ARTIFACT_DIR, default <build dir>/artifacts).
#   scripts/fuzz.sh                      all targets
#   scripts/fuzz.sh reply_fuzz           some targets
#   FUZZ_SECONDS=600 scripts/fuzz.sh     a longer run
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
BUILD_DIR="${FUZZ_BUILD_DIR:-$ROOT/build-fuzz}"
SECONDS_PER_TARGET="${FUZZ_SECONDS:-60}"
JOBS="${FUZZ_JOBS:-2}"
ARTIFACTS="${FUZZ_ARTIFACT_DIR:-$BUILD_DIR/artifacts}"
FUZZ_DIR="$ROOT/tests/fuzz"
ALL_TARGETS=(socket_uri_fuzz reply_fuzz params_json_fuzz encoder_roundtrip_fuzz)
if [[ $# -gt 0 ]]; then TARGETS=("$@"); else TARGETS=("${ALL_TARGETS[@]}"); fi

dict_for() {
  case "$1" in
    socket_uri_fuzz) echo "$FUZZ_DIR/dict/socket_uri_fuzz.dict" ;;
    reply_fuzz | params_json_fuzz) echo "$FUZZ_DIR/dict/json.dict" ;;
    *) echo "" ;;
  esac
}

# clang and its libFuzzer runtime (Debian: clang, libclang-rt-14-dev); installed when missing.
if ! command -v clang++ >/dev/null ||
   ! compgen -G "/usr/lib/llvm-*/lib/clang/*/lib/linux/libclang_rt.fuzzer-x86_64.a" >/dev/null; then
  if [[ $(id -u) -eq 0 ]] && command -v apt-get >/dev/null; then
    apt-get install -y --no-install-recommends clang libclang-rt-14-dev >/dev/null
  else
    echo "fuzz.sh: needs clang and libFuzzer: apt-get install clang libclang-rt-14-dev" >&2
    exit 2
  fi
fi

export CCACHE_BASEDIR="${CCACHE_BASEDIR:-$ROOT}"
# With -g, ccache hashes the working directory too unless told not to: without this a clone in
# another folder (CI's) would miss every object.
export CCACHE_NOHASHDIR="${CCACHE_NOHASHDIR:-1}"
CC=clang CXX=clang++ cmake -S "$ROOT" -B "$BUILD_DIR" -G Ninja -DCMAKE_BUILD_TYPE=RelWithDebInfo \
  -DEVENTBUS_FUZZ=ON >/dev/null
cmake --build "$BUILD_DIR" -j"$(nproc)" --target "${TARGETS[@]}"

WORK="$(mktemp -d "${TMPDIR:-/tmp}/eventbus-fuzz.XXXXXX")"
trap 'rm -rf "$WORK"' EXIT
mkdir -p "$ARTIFACTS"

# Runs one target; its libFuzzer log goes to $WORK/<target>.log.
run_target() {
  local target="$1" corpus="$WORK/corpus/$1"
  mkdir -p "$corpus"
  cp -r "$FUZZ_DIR/corpus/$target/." "$corpus/"
  local seeds=("$corpus")
  [[ -d "$FUZZ_DIR/regressions/$target" ]] && seeds+=("$FUZZ_DIR/regressions/$target")
  local dict args=(-max_total_time="$SECONDS_PER_TARGET" -timeout=10 -rss_limit_mb=2048
                   -max_len=4096 -print_final_stats=1 -artifact_prefix="$ARTIFACTS/$target-")
  dict="$(dict_for "$target")"
  [[ -n "$dict" ]] && args+=(-dict="$dict")
  # The first directory receives new inputs (the temporary copy); the others are only read.
  "$BUILD_DIR/tests/fuzz/$target" "${args[@]}" "${seeds[@]}" >"$WORK/$target.log" 2>&1
}

status=0
report() {
  local target="$1" rc="$2" log="$WORK/$1.log" runs
  runs="$(sed -n 's/^stat::number_of_executed_units: *\([0-9]*\).*/\1/p' "$log" | tail -1)"
  [[ -n "$runs" ]] || runs="$(sed -n 's/^Done \([0-9]*\) runs.*/\1/p' "$log" | tail -1)"
  if [[ "$rc" -eq 0 ]]; then
    printf '%-24s %12s executions in %ss: ok\n' "$target" "${runs:-?}" "$SECONDS_PER_TARGET"
    return
  fi
  status=1
  printf '%-24s %12s executions: FAILED (exit %s)\n' "$target" "${runs:-?}" "$rc"
  # libFuzzer's report: the property that broke or the sanitizer's stack, and the input it saved.
  grep -E -A40 'fuzz property failed|ERROR: (AddressSanitizer|LeakSanitizer|libFuzzer)|runtime error' \
    "$log" | head -60 || tail -40 "$log"
  local artifact
  artifact="$(sed -n 's/.*Test unit written to \(.*\)$/\1/p' "$log" | tail -1)"
  if [[ -n "$artifact" ]]; then
    echo "reproducer: $artifact"
    echo "  replay:   $BUILD_DIR/tests/fuzz/$target $artifact"
    echo "  minimise: $BUILD_DIR/tests/fuzz/$target -minimize_crash=1 -runs=100000 $artifact"
    echo "  then add the minimised file to tests/fuzz/regressions/$target/"
  fi
}

# Waits for any running target and reports it (bash >= 5.1 for wait -p).
reap_one() {
  local pid="" rc=0
  wait -n -p pid "${!TARGET_OF[@]}" || rc=$?
  report "${TARGET_OF[$pid]}" "$rc"
  unset "TARGET_OF[$pid]"
}

declare -A TARGET_OF=()
for target in "${TARGETS[@]}"; do
  while [[ ${#TARGET_OF[@]} -ge $JOBS ]]; do reap_one; done
  run_target "$target" &
  TARGET_OF[$!]="$target"
done
while [[ ${#TARGET_OF[@]} -gt 0 ]]; do reap_one; done
exit "$status"
