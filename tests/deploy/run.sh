#!/usr/bin/env bash
# Renders every overlay under deploy/overlays with `kubectl kustomize` (offline) and checks the
# result: `schema` validates every object against the Kubernetes schemas with unknown fields
# rejected (validate_schema.mjs); `pss` checks every pod template against the restricted Pod
# Security Standard and the project's hardening rules (check_pss.mjs).
#   bash tests/deploy/run.sh schema|pss [OVERLAYS_DIR]
set -euo pipefail
HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
ROOT="$(cd "$HERE/../.." && pwd)"
MODE="${1:?usage: run.sh schema|pss [OVERLAYS_DIR]}"
OVERLAYS="${2:-$ROOT/deploy/overlays}"
for tool in kubectl node; do
  command -v "$tool" >/dev/null || { echo "deploy test: $tool not found (scripts/install-deps.sh)" >&2; exit 1; }
done
OUT="$(mktemp -d)"
trap 'rm -rf "$OUT"' EXIT

files=()
for dir in "$OVERLAYS"/*/; do
  name="$(basename "$dir")"
  if ! kubectl kustomize "$dir" >"$OUT/$name.yaml" 2>"$OUT/$name.err"; then
    echo "FAIL render $name: $(cat "$OUT/$name.err")" >&2
    exit 1
  fi
  files+=("$OUT/$name.yaml")
done
[ ${#files[@]} -gt 0 ] || { echo "deploy test: no overlay in $OVERLAYS" >&2; exit 1; }
echo "rendered: $(cd "$OVERLAYS" && ls -d */ | tr -d / | tr '\n' ' ')"
case "$MODE" in
  schema) exec node "$HERE/validate_schema.mjs" "${files[@]}" ;;
  pss) exec node "$HERE/check_pss.mjs" "${files[@]}" ;;
  *) echo "run.sh: unknown mode \"$MODE\" (schema or pss)" >&2; exit 2 ;;
esac
