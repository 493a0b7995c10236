#!/usr/bin/env bash
# Installs what the project needs and says so: the JavaScript dependencies (Bun itself comes from
# npm) and the system servers the stack helper starts (nats-server, redis-server, PostgreSQL,
# mosquitto for the benchmark) with apt-get when they are missing. Fast when all is present.
set -euo pipefail
cd "$(dirname "$0")/.."
if [ ! -x node_modules/.bin/bun ] || [ ! -f node_modules/.package-lock.json ] || [ package-lock.json -nt node_modules/.package-lock.json ]; then
  echo "setup: installing JavaScript dependencies with npm install (Bun, gRPC, Connect, NATS, Redis, PostgreSQL clients)…"
  # npm install, not npm ci: npm 11 refuses `ci` for @bufbuild/buf's optional per-platform packages
  # ("Missing ... from lock file"), a known npm lock-file bug; install follows the lock all the same.
  npm install --no-audit --no-fund --loglevel=error
fi
# Also where npm install was skipped or ran with --ignore-scripts: patches/ (idempotent).
patched=$(node_modules/.bin/patch-package --error-on-fail 2>&1) || { echo "$patched" >&2; exit 1; }
bash scripts/ensure-system.sh
