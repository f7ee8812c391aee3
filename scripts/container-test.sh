#!/usr/bin/env bash
# Builds the container image from the Dockerfile and runs it as the restricted Kubernetes pod
# would: as the image's numeric non-root user, with a read-only root filesystem, no capabilities,
# no_new_privs, a writable data volume and a tmpfs /tmp. Then checks, against the image's own
# binaries: the image metadata (user, HEALTHCHECK, labels, no compiler inside), `eventbusd
# --version`, the image's HEALTHCHECK command, that the root filesystem refuses writes, a
# Subscribe/Raise round trip to a loopback JSON-RPC peer (exact bytes, async and sync), a metrics
# scrape with eventbus_ lines, and SIGTERM: a clean exit within the shutdown grace.
#
# The Debian 12 base is made once with debootstrap; buildah (vfs storage, chroot isolation: no
# daemon) keeps it, the cached layers and a ccache (/var/tmp/eventbus-container/ccache) between
# runs. Needs root (mount namespaces). Prints timings and "container-test: N passed, M failed".
#   bash scripts/container-test.sh           build + run
#   NO_BUILD=1 bash scripts/container-test.sh run the last image built
#
# Why not `buildah run`: it has no read-only root and no way to drop to the image's USER with
# no capabilities under chroot isolation; so the image's root filesystem (buildah mount) is bound
# read-only in a private mount namespace and entered with chroot + setpriv, the image's USER, Env
# and Entrypoint taken from its config.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
WORK="${WORK:-/var/tmp/eventbus-container}"
MIRROR="${MIRROR:-http://deb.debian.org/debian}"
B=(buildah --storage-driver=vfs)
BASE=localhost/eventbus-debian-base:12
VERSION="$(sed -n 's/^project(eventbus VERSION \([0-9.]*\).*/\1/p' "$ROOT/CMakeLists.txt")"
IMAGE="localhost/eventbus:$VERSION"
T0=$(date +%s)
elapsed() { echo "$(($(date +%s) - $1)) s"; }

[ "$(id -u)" -eq 0 ] || { echo "container-test: needs root (buildah vfs storage, mount namespaces)" >&2; exit 1; }
if ! command -v buildah >/dev/null || ! command -v debootstrap >/dev/null; then
  echo "container-test: installing buildah and debootstrap"
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends buildah debootstrap
fi
mkdir -p "$WORK/ccache"

passed=0 failed=0
pass() { echo "PASS $1"; passed=$((passed + 1)); }
fail() { echo "FAIL $1" >&2; failed=$((failed + 1)); }

if [ -z "$("${B[@]}" images -q "$BASE" 2>/dev/null)" ]; then
  t=$(date +%s)
  echo "== debootstrap bookworm base image"
  rm -rf "$WORK/rootfs"
  debootstrap --variant=minbase bookworm "$WORK/rootfs" "$MIRROR" >"$WORK/debootstrap.log"
  ctr=$("${B[@]}" from scratch)
  mnt=$("${B[@]}" mount "$ctr")
  cp -a "$WORK/rootfs/." "$mnt/"
  "${B[@]}" umount "$ctr" >/dev/null
  "${B[@]}" commit -q "$ctr" "$BASE" >/dev/null
  "${B[@]}" rm "$ctr" >/dev/null
  rm -rf "$WORK/rootfs"
  echo "time: base image $(elapsed "$t")"
fi

if [ "${NO_BUILD:-0}" != 1 ]; then
  echo "== buildah bud $IMAGE"
  t=$(date +%s)
  # --format docker keeps HEALTHCHECK; --layers caches each step (the dependency layer survives
  # source edits); the ccache volume makes a rebuild after a source edit incremental.
  bud=("${B[@]}" bud --format docker --layers --isolation=chroot --build-arg BASE="$BASE"
       --build-arg VERSION="$VERSION"
       --build-arg REVISION="$(git -C "$ROOT" rev-parse HEAD 2>/dev/null || echo unknown)"
       --volume "$WORK/ccache:/ccache")
  "${bud[@]}" -t "$IMAGE" "$ROOT" >"$WORK/build.log" 2>&1 ||
    { tail -40 "$WORK/build.log" >&2; echo "container-test: image build failed ($WORK/build.log)" >&2; exit 1; }
  # The build stage's image (the last "--> ID" before the runtime stage starts) is tagged, so
  # that pruning dangling images below keeps its cached layers for the next run.
  build_id=$(sed -n '/^\[2\/2\] STEP 1\//q; s/^--> \([0-9a-f]\{6,\}\)$/\1/p' "$WORK/build.log" | tail -1)
  [ -z "$build_id" ] || "${B[@]}" tag "$build_id" localhost/eventbus-build:cache
  grep -E "^\s*(Hits|Misses|cache hit|cache miss)" "$WORK/build.log" | tail -4 || true
  echo "time: image build $(elapsed "$t")"
  # vfs keeps a full copy per layer: stale layers of earlier builds go, the tagged ones stay.
  "${B[@]}" rmi --prune >/dev/null 2>&1 || true
  echo "storage: $(du -sh /var/lib/containers/storage 2>/dev/null | cut -f1)"
fi

echo "== image metadata"
inspect() { "${B[@]}" inspect --type image --format "$1" "$IMAGE"; }
user=$(inspect '{{.Docker.Config.User}}')
[[ "$user" =~ ^[1-9][0-9]*:[1-9][0-9]*$ ]] && pass "USER is numeric and non-root ($user)" ||
  fail "USER \"$user\" is not numeric uid:gid, non-zero"
uid=${user%%:*} gid=${user##*:}
health=$(inspect '{{.Docker.Config.Healthcheck}}')
grep -q '/usr/local/bin/eventbus ' <<<"$health" && pass "HEALTHCHECK kept: $health" ||
  fail "no HEALTHCHECK calling eventbus in the image config: $health (built without --format docker?)"
labels=$(inspect '{{range $k, $v := .Docker.Config.Labels}}{{println $k $v}}{{end}}')
grep -qx "org.opencontainers.image.version $VERSION" <<<"$labels" &&
  pass "OCI labels (version $VERSION)" || fail "OCI labels: $labels"
echo "image size: $("${B[@]}" images --format '{{.Size}}' "$IMAGE" | head -1)"

echo "== run it as the restricted pod would"
ctr=$("${B[@]}" from -q "$IMAGE")
mnt=$("${B[@]}" mount "$ctr")
RUN="$WORK/run"
rm -rf "$RUN"
mkdir -p "$RUN/root" "$RUN/data"
chown "$uid:$gid" "$RUN/data"
chmod 0750 "$RUN/data"
mapfile -t image_env < <(inspect '{{range .Docker.Config.Env}}{{println .}}{{end}}' | sed '/^$/d')
mapfile -t entrypoint < <(inspect '{{range .Docker.Config.Entrypoint}}{{println .}}{{end}}' | sed '/^$/d')
pids=()
cleanup() {
  for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
  "${B[@]}" umount "$ctr" >/dev/null 2>&1 || true
  "${B[@]}" rm "$ctr" >/dev/null 2>&1 || true
}
trap cleanup EXIT

# Runs COMMAND... inside the image: private mount namespace, the image root bound read-only,
# /proc, /dev, a tmpfs /tmp and the data volume; the image's user, no capabilities, no new
# privileges, only the image's environment (plus EXTRA_ENV). Host network (loopback only).
# With PIDFILE set, the PID of the command (exec keeps it) is written there.
in_image() {
  unshare --mount --propagation private -- /bin/bash -c '
    set -e
    root=$1 mnt=$2 data=$3 uid=$4 gid=$5 pidfile=$6; shift 6
    mount --bind "$mnt" "$root"
    mount -o remount,bind,ro "$root"
    mount -t proc proc "$root/proc"
    mount --rbind /dev "$root/dev"
    mount -t tmpfs -o size=64m,mode=1777,nosuid,nodev tmpfs "$root/tmp"
    mount --bind "$data" "$root/var/lib/eventbus"
    [ -z "$pidfile" ] || echo $$ >"$pidfile"
    exec chroot "$root" /usr/bin/setpriv --reuid="$uid" --regid="$gid" --clear-groups \
      --no-new-privs --inh-caps=-all --bounding-set=-all -- "$@"
  ' in_image "$RUN/root" "$mnt" "$RUN/data" "$uid" "$gid" "${PIDFILE:-}" \
    /usr/bin/env -i "${image_env[@]}" ${EXTRA_ENV:-} "$@"
}
free_port() {
  /usr/bin/python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'
}
port=$(free_port)
mport=$(free_port)
CLI=(/usr/local/bin/eventbus --server="127.0.0.1:$port" --timeout_ms=3000)

out=$(in_image /usr/local/bin/eventbusd --version 2>&1) && grep -q "$VERSION" <<<"$out" &&
  pass "eventbusd --version: $(head -1 <<<"$out")" ||
  fail "eventbusd --version does not print $VERSION: $(head -3 <<<"$out")"
out=$(in_image /usr/bin/id -u 2>&1)
[ "$out" = "$uid" ] && pass "runs as uid $out" || fail "runs as uid \"$out\", not $uid"
# The user could not write to / anyway: the mount itself must say ro.
root_opts=$(in_image /bin/sh -c 'while read -r _ _ _ _ mp opts _; do
  [ "$mp" = / ] && echo "$opts"; done </proc/self/mountinfo; true' | tail -1)
if [[ "$root_opts" == ro* ]] && ! in_image /usr/bin/touch /usr/local/bin/written 2>/dev/null; then
  pass "root filesystem is mounted read-only ($root_opts)"
else
  fail "the root filesystem is not read-only (mount options \"$root_opts\")"
fi
in_image /usr/bin/touch /var/lib/eventbus/written /tmp/written && pass "data volume and /tmp writable" ||
  fail "data volume or /tmp not writable for uid $uid"
rm -f "$RUN/data/written"

# Configured through the environment variables the Kubernetes manifests set (the entrypoint gets
# no flags); metrics on a loopback port only if this eventbusd has the flag.
# (--helpfull exits 1: its output is taken whatever the exit code.)
helpfull=$(in_image /usr/local/bin/eventbusd --helpfull 2>&1 || true)
metrics_env=""
if grep -q -- "metrics_listen" <<<"$helpfull"; then
  metrics_env="EVENTBUS_METRICS_LISTEN=127.0.0.1:$mport"
fi
GRACE_MS=3000
t=$(date +%s%N)
PIDFILE="$RUN/eventbusd.pid" EXTRA_ENV="EVENTBUS_LISTEN=127.0.0.1:$port EVENTBUS_STORE=sqlite \
EVENTBUS_SHUTDOWN_GRACE_MS=$GRACE_MS $metrics_env" in_image "${entrypoint[@]}" >"$RUN/eventbusd.log" 2>&1 &
pids+=($!)
ready=0
for _ in $(seq 150); do
  if in_image "${CLI[@]}" events >/dev/null 2>&1; then ready=1; break; fi
  sleep 0.1
done
[ "$ready" = 1 ] && pass "eventbusd serving (SQLite store in the data volume) after $((($(date +%s%N) - t) / 1000000)) ms" ||
  { fail "eventbusd did not answer within 15 s"; cat "$RUN/eventbusd.log" >&2; }
server_pid=$(cat "$RUN/eventbusd.pid" 2>/dev/null || echo 0)

# The image's own HEALTHCHECK command, as `docker` would run it.
mapfile -t hc < <(inspect '{{range .Docker.Config.Healthcheck.Test}}{{println .}}{{end}}' | sed '/^$/d')
if [ "${hc[0]:-}" = CMD ] &&
   EXTRA_ENV="EVENTBUS_SERVER=127.0.0.1:$port" in_image "${hc[@]:1}" >"$RUN/health.out" 2>&1; then
  pass "HEALTHCHECK command exits 0: ${hc[*]:1}"
else
  fail "HEALTHCHECK command \"${hc[*]:1}\" failed: $(head -2 "$RUN/health.out" 2>/dev/null)"
fi
out=$(in_image "${CLI[@]}" health 2>&1) && pass "eventbus health (liveness): $out" ||
  fail "eventbus health: $(head -2 <<<"$out")"

# A loopback JSON-RPC peer that checks the exact bytes of one notification and one request
# (answering the request), then writes what it saw.
peer_port=$(free_port)
/usr/bin/python3 - "$peer_port" "$RUN/peer.out" <<'PY' &
import json, re, socket, sys
port, out = int(sys.argv[1]), sys.argv[2]
srv = socket.socket(); srv.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
srv.bind(("127.0.0.1", port)); srv.listen(4); srv.settimeout(30)
want_note = b'{"jsonrpc":"2.0","method":"E_IMAGE","params":{"ip":"192.168.2.11","count":3}}'
got, buf = [], b""
conn, _ = srv.accept(); conn.settimeout(30)
dec = json.JSONDecoder()
while len(got) < 2:
    data = conn.recv(65536)
    if not data:
        break
    buf += data
    while buf:
        try:
            _, end = dec.raw_decode(buf.decode())
        except ValueError:
            break
        msg, buf = buf[:end], buf[end:]
        got.append(msg)
        if len(got) == 2:
            rid = json.loads(msg).get("id")
            want_req = b'{"id":%d,"jsonrpc":"2.0","method":"E_IMAGE","params":{"ip":"10.0.0.1"}}' % (rid or 0)
            conn.sendall(b'{"jsonrpc":"2.0","result":"ok","id":%d}' % (rid or 0))
with open(out, "w") as f:
    f.write("note %s\n" % ("ok" if got[:1] == [want_note] else "BAD %r" % got[:1]))
    f.write("req %s\n" % ("ok" if len(got) > 1 and got[1] == want_req else "BAD %r" % got[1:2]))
conn.close()
PY
peer=$!
pids+=($peer)
sleep 0.3
t=$(date +%s%N)
# Seen 2 times in about 25 runs: a call fails at once with UNAVAILABLE ("failed to connect to all
# addresses ... No such file or directory") while eventbusd serves; the CLI makes no retry. Retry
# such a call (it reached no server, so the peer sees nothing twice) and say so.
cli() {
  local out i
  for i in 1 2 3; do
    if out=$(in_image "${CLI[@]}" "$@" 2>&1); then echo "$out"; return 0; fi
    grep -q "UNAVAILABLE: failed to connect" <<<"$out" || break
    echo "note: retrying \"eventbus $1\" after: $out" >&2
    sleep 0.2
  done
  echo "$out"
  return 1
}
step=subscribe
if out=$(cli subscribe E_IMAGE "tcp:127.0.0.1:$peer_port" 2>&1) && step=async &&
   out=$(cli raise --async E_IMAGE ip=192.168.2.11 count:=3 2>&1) && step=sync &&
   out=$(cli raise --sync --timeout 3000 E_IMAGE ip=10.0.0.1 2>&1); then
  wait "$peer" || true
  if grep -q "note ok" "$RUN/peer.out" && grep -q "req ok" "$RUN/peer.out" && grep -q " OK " <<<"$out"; then
    pass "Subscribe/Raise round trip, exact bytes async and sync ($((($(date +%s%N) - t) / 1000000)) ms): $out"
  else
    fail "round trip: peer saw $(tr '\n' ' ' <"$RUN/peer.out" 2>/dev/null); CLI: $out"
  fi
else
  fail "round trip: the CLI's $step call failed: $out"
fi

if [ -z "$metrics_env" ]; then
  fail "metrics: this eventbusd has no --metrics_listen flag"
else
  scrape=$(/usr/bin/python3 -c 'import sys, urllib.request; print(urllib.request.urlopen(sys.argv[1], timeout=5).read().decode())' \
             "http://127.0.0.1:$mport/metrics" 2>&1) || true
  n=$(grep -c '^eventbus_' <<<"$scrape" || true)
  [ "$n" -gt 0 ] && pass "metrics scrape: $n eventbus_ sample lines" ||
    fail "metrics scrape has no eventbus_ lines: $(head -3 <<<"$scrape")"
  counted=$(grep -cE '^eventbus_[a-z_]+\{[^}]*event="E_IMAGE"[^}]*\} [1-9]' <<<"$scrape" || true)
  [ "$counted" -gt 0 ] && pass "metrics count the round trip: $counted non-zero series with event=\"E_IMAGE\"" ||
    fail "no non-zero eventbus_ series with event=\"E_IMAGE\" after the round trip"
  if command -v promtool >/dev/null; then
    lint=$(promtool check metrics <<<"$scrape" 2>&1) && pass "promtool check metrics: clean" ||
      fail "promtool check metrics: $(head -5 <<<"$lint")"
  fi
fi

if [ "$server_pid" -gt 1 ] && kill -0 "$server_pid" 2>/dev/null; then
  t=$(date +%s%N)
  kill -TERM "$server_pid"
  # Bounded: a hung drain is killed after the grace + 5 s (and fails below).
  for _ in $(seq $(((GRACE_MS + 5000) / 100))); do
    kill -0 "$server_pid" 2>/dev/null || break
    sleep 0.1
  done
  kill -KILL "$server_pid" 2>/dev/null || true
  rc=0
  wait "${pids[0]}" || rc=$?
  ms=$((($(date +%s%N) - t) / 1000000))
  [ "$rc" = 0 ] && [ "$ms" -le $((GRACE_MS + 2000)) ] &&
    pass "SIGTERM: exit 0 after $ms ms (grace $GRACE_MS ms)" ||
    fail "SIGTERM: exit $rc after $ms ms (grace $GRACE_MS ms); log: $(tail -3 "$RUN/eventbusd.log")"
else
  fail "eventbusd is not running before SIGTERM"
fi
[ -s "$RUN/data/subscriptions.db" ] && pass "SQLite file written in the data volume" ||
  fail "no subscriptions.db in the data volume"

echo "time: container-test total $(elapsed "$T0")"
echo "container-test: $passed passed, $failed failed"
[ "$failed" = 0 ]
