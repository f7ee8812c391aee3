#!/usr/bin/env bash
# An admin with no .proto file: runs README's admin commands (`buf curl`, and `grpcurl` where it is
# installed) exactly as README writes them, through gRPC server reflection, against a live
# eventbusd and a loopback JSON-RPC subscriber that checks the bytes each Raise produces. The
# commands are read from README (tests/integration/admin_commands.py), so README and test cannot
# drift; only the server address, the subscriber's port and the subscription id are put in.
# Usage: reflection_buf_curl_test.sh EVENTBUSD BUF README JSONRPC_PEER_PY
set -euo pipefail
EVENTBUSD=$1
BUF=$2
README=$3
PEER=$4
HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
PY=/usr/bin/python3
[ -x "$BUF" ] || { echo "buf not installed at $BUF (scripts/install-deps.sh installs it)"; exit 1; }

work=$(mktemp -d)
pids=()
cleanup() {
  for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; wait "$p" 2>/dev/null || true; done
  rm -rf "$work"
}
trap cleanup EXIT
fail() { echo "FAIL: $*"; echo "--- eventbusd log"; cat "$work/log"; exit 1; }

"$EVENTBUSD" --listen=127.0.0.1:0 --store=memory >"$work/log" 2>&1 &
server_pid=$!
pids+=("$server_pid")
for _ in $(seq 200); do
  port=$(sed -n 's/.*msg="eventbusd serving".* port=\([0-9]*\).*/\1/p' "$work/log")
  [ -n "$port" ] && break
  sleep 0.05
done
[ -n "$port" ] || fail "eventbusd did not start serving"

# The bytes each Raise of the blocks must produce at the subscriber (the sync one is the first
# request on its connection: id 1): the 64-bit id exact, "z" before "a".
want_async='{"jsonrpc":"2.0","method":"E_PIKE_BLOCKED","params":{"ip":"192.168.2.11","count":3}}'
want_sync='{"id":1,"jsonrpc":"2.0","method":"E_PIKE_BLOCKED","params":{"id":12345678901234567890,"where":{"z":1,"a":2},"ok":true}}'

# Waits for the subscriber's line $2 (1-based) in file $1 and prints it.
peer_line() {
  for _ in $(seq 200); do
    line=$(sed -n "${2}p" "$1")
    [ -n "$line" ] && { echo "$line"; return; }
    sleep 0.05
  done
  echo "(nothing)"
}

# Runs one README block ($1: buf or grpcurl) against a fresh subscriber; checks every answer.
run_block() {
  local block=$1 peer_out="$work/peer_$1.out" peer_port id="" out i=0
  rm -f "$work/peer_port"
  "$PY" "$PEER" --port_file "$work/peer_port" --result '{"accepted":true}' >"$peer_out" &
  pids+=("$!")
  for _ in $(seq 200); do [ -s "$work/peer_port" ] && break; sleep 0.05; done
  peer_port=$(cat "$work/peer_port")
  mapfile -t commands < <("$PY" "$HERE/admin_commands.py" "$README" "$block")
  [ "${#commands[@]}" = 9 ] ||
    fail "README's $block block has ${#commands[@]} commands; this test checks 9 (update both)"
  for command in "${commands[@]}"; do
    command=${command//127.0.0.1:50051/127.0.0.1:$port}
    command=${command//tcp:127.0.0.1:8080/tcp:127.0.0.1:$peer_port}
    command=${command//SUBSCRIPTION_ID/$id}
    echo "\$ $command"
    out=$(BUF=$BUF eval "$command" 2>&1) || fail "exit $?: $out"
    echo "$out"
    case $i in
      0) grep -q "eventbus.v1.EventBusService" <<<"$out" && grep -q "grpc.health.v1.Health" <<<"$out" ||
           fail "the services are not listed" ;;
      1) grep -q '"status": "SERVING"' <<<"$out" || fail "health is not SERVING" ;;
      2) grep -q '"created": true' <<<"$out" || fail "Subscribe did not create"
         id=$("$PY" -c 'import json,sys; print(json.load(sys.stdin)["subscription"]["id"])' <<<"$out") ;;
      3) grep -q '"subscribers": 1' <<<"$out" && grep -q '"queued": 1' <<<"$out" ||
           fail "the async Raise was not QUEUED for its one subscriber"
         got=$(peer_line "$peer_out" 1)
         [ "$got" = "$want_async" ] || fail "the subscriber got $got, want $want_async" ;;
      4) grep -q 'DELIVERY_STATUS_OK' <<<"$out" && grep -qF '"result": "{\"accepted\":true}"' <<<"$out" ||
           fail "the sync Raise did not answer OK with the subscriber's result"
         got=$(peer_line "$peer_out" 2)
         [ "$got" = "$want_sync" ] || fail "the subscriber got $got, want $want_sync" ;;
      5) grep -q "\"id\": \"$id\"" <<<"$out" || fail "ListSubscriptions does not show $id"
         ! grep -q "nextPageToken" <<<"$out" || fail "ListSubscriptions' only page has a nextPageToken" ;;
      6) grep -q '"event": "E_PIKE_BLOCKED"' <<<"$out" && grep -q '"subscribers": 1' <<<"$out" ||
           fail "ListEvents does not show E_PIKE_BLOCKED with 1 subscriber" ;;
      7) grep -q '"removed": 1' <<<"$out" || fail "Unsubscribe by id did not remove it" ;;
      8) grep -q '"removed": 0' <<<"$out" || fail "the second Unsubscribe did not say removed 0" ;;
    esac
    i=$((i + 1))
  done
}

run_block buf
"$PY" "$HERE/admin_commands.py" "$README" compare || fail "README's grpcurl and buf curl blocks differ"
passed=2
if command -v grpcurl >/dev/null; then
  run_block grpcurl
  passed=3
else
  echo "grpcurl is not installed (not a Debian 12 package): its block was compared, not run"
fi

out=$("$BUF" curl --protocol grpc --http2-prior-knowledge -d '{"event":"bad event","socket":"tcp:h:1"}' \
  "http://127.0.0.1:$port/eventbus.v1.EventBusService/Subscribe" 2>&1 || true)
echo "$out"
grep -q 'invalid_argument' <<<"$out" || fail "a bad event name was not INVALID_ARGUMENT"
passed=$((passed + 1))

kill -TERM "$server_pid"
wait "$server_pid" || fail "eventbusd did not exit 0 on SIGTERM"
echo "reflection_buf_curl_test: $passed passed, 0 failed"
