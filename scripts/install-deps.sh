#!/usr/bin/env bash
# Installs every Debian 12 package EventBus needs to build, test and run. Idempotent: packages that
# are already installed are skipped, and apt is only touched when something is missing.
set -euo pipefail

PACKAGES=(
  # toolchain
  build-essential cmake ninja-build ccache pkg-config git clang-format
  # libraries
  libgrpc++-dev libgrpc-dev protobuf-compiler-grpc libprotobuf-dev protobuf-compiler grpc-proto
  libabsl-dev libsimdjson-dev libsqlite3-dev prometheus-cpp-dev
  # OpenSSL: TLS files checked at start-up (server/tls), token hashes (server/auth), tls:
  # subscriber targets (server/net/tls_transport.cc)
  libssl-dev
  # tests and benchmarks
  libgtest-dev libgmock-dev libbenchmark-dev
  # real components used by the integration tests (prlimit: util-linux)
  etcd-server etcd-client sqlite3 util-linux
  # promtool (checks a live /metrics scrape); openssl makes the TLS tests' certificates
  prometheus openssl
  # fuzzing (libFuzzer, FuzzedDataProvider.h) and the sanitizer builds (clang, llvm-symbolizer)
  clang libclang-rt-14-dev llvm
  # the Python and Go clients run in CI (tests/polyglot). grpc-go 1.33 marshals through
  # github.com/golang/protobuf, whose 1.3 (apt's default pick) panics on protoc-gen-go 1.28's
  # messages: 1.5 hands them to APIv2.
  python3-grpcio python3-protobuf
  golang-go golang-google-grpc-dev golang-google-protobuf-dev golang-github-golang-protobuf-1-5-dev
  protoc-gen-go protoc-gen-go-grpc
)

# CONTAINER_BUILD=1 (the image's build stage): only what compiles eventbusd and the CLI; the test,
# fuzzing, sanitizer and lint packages stay out of the image.
if [ "${CONTAINER_BUILD:-0}" = 1 ]; then
  build_only=()
  for p in "${PACKAGES[@]}"; do
    case "$p" in
      git|clang-format|libgtest-dev|libgmock-dev|libbenchmark-dev|etcd-server|etcd-client|sqlite3|\
        util-linux|clang|libclang-rt-*|llvm|prometheus|openssl|python3-*|golang-*|protoc-gen-go*) ;;
      *) build_only+=("$p") ;;
    esac
  done
  PACKAGES=("${build_only[@]}")
fi

# npm (for buf) may already come from outside Debian's packaging; only ask apt when it is absent.
[ "${SKIP_TOOLS:-0}" = 1 ] || command -v npm >/dev/null 2>&1 || PACKAGES+=(npm)

missing=()
for p in "${PACKAGES[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done

SUDO=""
[ "$(id -u)" -eq 0 ] || SUDO="sudo"

if [ ${#missing[@]} -gt 0 ]; then
  echo "install-deps: installing ${missing[*]}"
  export DEBIAN_FRONTEND=noninteractive
  $SUDO apt-get update -qq
  $SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}"
else
  echo "install-deps: all Debian packages present"
fi

# buf (protobuf linter) comes from npm into a project-local tools folder, never at build time.
# SKIP_TOOLS=1 (container builds) skips it.
[ "${SKIP_TOOLS:-0}" = 1 ] && exit 0
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
TOOLS="$ROOT/.tools"
if [ ! -x "$TOOLS/node_modules/.bin/buf" ]; then
  echo "install-deps: installing @bufbuild/buf into $TOOLS"
  mkdir -p "$TOOLS"
  npm install --silent --prefix "$TOOLS" --no-audit --no-fund @bufbuild/buf@1 >/dev/null
fi
# The Node client (client/node, run in CI by tests/polyglot): gRPC and the .proto loader. Pinned.
GRPC_NPM=(@grpc/grpc-js@1.14.7 @grpc/proto-loader@0.8.1)
if [ ! -f "$TOOLS/node_modules/@grpc/grpc-js/package.json" ] ||
   [ ! -f "$TOOLS/node_modules/@grpc/proto-loader/package.json" ]; then
  echo "install-deps: installing ${GRPC_NPM[*]} into $TOOLS"
  mkdir -p "$TOOLS"
  npm install --silent --prefix "$TOOLS" --no-audit --no-fund "${GRPC_NPM[@]}" >/dev/null
fi
# The offline Kubernetes schema validation of deploy/ (tests/deploy): compiled OpenAPI schemas,
# the field lists that reject unknown fields, and a YAML parser. Pinned versions.
K8S_NPM=(kubernetes-models@5.1.0 @kubernetes-models/prometheus-operator@6.0.0
         @kubernetes/client-node@2.0.1 js-yaml@4.1.0)
if [ ! -f "$TOOLS/node_modules/kubernetes-models/package.json" ] ||
   [ ! -f "$TOOLS/node_modules/@kubernetes-models/prometheus-operator/package.json" ] ||
   [ ! -f "$TOOLS/node_modules/@kubernetes/client-node/package.json" ] ||
   [ ! -f "$TOOLS/node_modules/js-yaml/package.json" ]; then
  echo "install-deps: installing ${K8S_NPM[*]} into $TOOLS"
  mkdir -p "$TOOLS"
  npm install --silent --prefix "$TOOLS" --no-audit --no-fund "${K8S_NPM[@]}" >/dev/null
fi
