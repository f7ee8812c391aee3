#!/usr/bin/env bash
# Builds the container image from the Dockerfile and runs it: a Debian 12 base image made with
# debootstrap, `buildah bud` (vfs storage, chroot isolation: no daemon needed), then eventbusd
# from the image serving on loopback and answering the image's own CLI, and stopping on SIGTERM.
# Slow (a full build inside the image): not part of scripts/test.sh.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
WORK="${WORK:-/var/tmp/eventbus-container}"
MIRROR="${MIRROR:-http://deb.debian.org/debian}"
B=(buildah --storage-driver=vfs)
BASE=localhost/eventbus-debian-base:12

for tool in buildah debootstrap; do
  command -v "$tool" >/dev/null || DEBIAN_FRONTEND=noninteractive apt-get install -y -qq \
    --no-install-recommends buildah debootstrap
done
mkdir -p "$WORK"

if [ -z "$("${B[@]}" images -q "$BASE" 2>/dev/null)" ]; then
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
fi

echo "== buildah bud"
"${B[@]}" bud -q --isolation=chroot --build-arg BASE="$BASE" -t localhost/eventbus:test "$ROOT"

echo "== run the image"
ctr=$("${B[@]}" from localhost/eventbus:test)
cleanup() { "${B[@]}" rm "$ctr" >/dev/null 2>&1 || true; }
trap cleanup EXIT
port=$(/usr/bin/python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
run() { "${B[@]}" run --isolation=chroot --network=host "$ctr" -- "$@"; }
run env EVENTBUS_LISTEN=127.0.0.1:$port /usr/local/bin/eventbusd --store=memory &
server=$!
for _ in $(seq 100); do
  run /usr/local/bin/eventbus --server=127.0.0.1:$port events >/dev/null 2>&1 && break
  sleep 0.2
done
run /usr/local/bin/eventbus --server=127.0.0.1:$port subscribe E_IMAGE tcp:127.0.0.1:9
events=$(run /usr/local/bin/eventbus --server=127.0.0.1:$port events)
grep -q E_IMAGE <<<"$events"
# Chroot isolation shares the host's PID space: signal eventbusd itself, as a kubelet would.
pkill -TERM -f "^/usr/local/bin/eventbusd --store=memory$"
wait "$server"
echo "container-test: 1 passed, 0 failed"
