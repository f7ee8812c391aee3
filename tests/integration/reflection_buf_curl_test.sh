#!/usr/bin/env bash
# An admin with no .proto file: `buf curl` (like grpcurl) discovers EventBus through gRPC server
# reflection, subscribes, raises in sync mode, and checks grpc.health.v1.
# Usage: reflection_buf_curl_test.sh EVENTBUSD BUF
set -euo pipefail
EVENTBUSD=$1
BUF=$2
[ -x "$BUF" ] || { echo "buf not installed at $BUF (scripts/install-deps.sh installs it)"; exit 1; }

work=$(mktemp -d)
port=$(/usr/bin/python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
closed=$(/usr/bin/python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
"$EVENTBUSD" --listen=127.0.0.1:$port --store=memory >"$work/log" 2>&1 &
pid=$!
cleanup() { kill "$pid" 2>/dev/null || true; wait "$pid" 2>/dev/null || true; rm -rf "$work"; }
trap cleanup EXIT
fail() { echo "FAIL: $*"; echo "--- eventbusd log"; cat "$work/log"; exit 1; }

url=http://127.0.0.1:$port
call() { "$BUF" curl --protocol grpc --http2-prior-knowledge "$@"; }

for _ in $(seq 100); do
  services=$(call --list-services "$url" 2>/dev/null) && break
  sleep 0.1
done
echo "$services"
grep -qx "eventbus.v1.EventBusService" <<<"$services" || fail "EventBusService not listed"
grep -qx "grpc.health.v1.Health" <<<"$services" || fail "grpc.health.v1.Health not listed"

out=$(call -d '{"event":"E_ADMIN","socket":"tcp:127.0.0.1:'"$closed"'","expire_seconds":60}' \
  "$url/eventbus.v1.EventBusService/Subscribe")
echo "$out"
grep -q '"created": true' <<<"$out" || fail "Subscribe did not create"

out=$(call -d '{"event":"E_ADMIN","named":{"params":[{"name":"ip","value":"10.0.0.1"}]},"sync":true,"timeout_ms":300}' \
  "$url/eventbus.v1.EventBusService/Raise")
echo "$out"
grep -q 'DELIVERY_STATUS_CONNECT_FAILED' <<<"$out" || fail "Raise did not report CONNECT_FAILED"

out=$(call -d '{}' "$url/eventbus.v1.EventBusService/ListEvents")
echo "$out"
grep -q '"event": "E_ADMIN"' <<<"$out" || fail "ListEvents does not show E_ADMIN"

out=$(call -d '{"service":"eventbus.v1.EventBusService"}' "$url/grpc.health.v1.Health/Check")
echo "$out"
grep -q 'SERVING' <<<"$out" || fail "health is not SERVING"

out=$(call -d '{"event":"bad event","socket":"tcp:h:1"}' "$url/eventbus.v1.EventBusService/Subscribe" 2>&1 || true)
echo "$out"
grep -q 'invalid_argument' <<<"$out" || fail "a bad event name was not INVALID_ARGUMENT"

kill -TERM "$pid"
wait "$pid" || fail "eventbusd did not exit 0 on SIGTERM"
trap - EXIT
rm -rf "$work"
echo "reflection_buf_curl_test: 1 passed, 0 failed"
