#!/usr/bin/env bash
# Set up and run: installs what is missing, builds, and starts eventbusd on 127.0.0.1:50051 with
# its embedded default store (SQLite in --data_dir). Arguments are passed to eventbusd.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
bash "$ROOT/scripts/install-deps.sh"
BUILD_TARGETS="eventbusd eventbus" bash "$ROOT/scripts/build.sh"
echo "eventbusd: starting (CLI: $ROOT/build/client/eventbus)" >&2
exec "$ROOT/build/server/service/eventbusd" "$@"
