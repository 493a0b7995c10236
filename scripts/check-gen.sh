#!/usr/bin/env bash
# Fails when proto/ does not lint or gen/ is not what `buf generate` makes of proto/ (offline).
set -euo pipefail
cd "$(dirname "$0")/.."
PATH="$PWD/node_modules/.bin:$PATH"
buf lint
out="$(mktemp -d)"
trap 'rm -rf "$out"' EXIT
buf generate --output "$out"
if ! diff -r "$out/gen" gen >/dev/null; then
  diff -r "$out/gen" gen | head -40 >&2 || true
  echo "check-gen: gen/ is stale: run 'npx buf generate' and commit gen/" >&2
  exit 1
fi
echo "check-gen: proto lints clean and gen/ is up to date"
