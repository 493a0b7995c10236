#!/usr/bin/env bash
# Makes sure the system servers the stack helper starts are installed, and installs the missing
# Debian packages with apt-get when it can (root, or sudo without a password). Idempotent and fast
# when all is present: it only looks for binaries (and, for python-grpc, the modules).
#
#   scripts/ensure-system.sh                  # nats redis postgres mosquitto
#   scripts/ensure-system.sh nats postgres    # only these
#   scripts/ensure-system.sh python-grpc      # Debian's Python gRPC (grpcio, grpc_tools), for the
#                                             # interop test with a client of another language
#   scripts/ensure-system.sh test-clients     # curl and libnghttp2 (HTTP/2 clients the tests use
#                                             # that share no code with the servers)
#   scripts/ensure-system.sh promtool         # Prometheus's promtool (Debian's prometheus package),
#                                             # which checks and unit-tests the alert rules in ops/
#   scripts/ensure-system.sh chromium         # Debian's chromium, the real browser the web tests drive
#                                             # with playwright-core (dev/browser.ts; never a download)
#
# Exit status 0 when everything asked for is present afterwards; 1 with a message naming the
# package to install otherwise. Messages go to stderr, prefixed "ensure-system:".
set -euo pipefail

say() { echo "ensure-system: $*" >&2; }

# name -> Debian package, and how to tell it is there.
package_of() {
  case "$1" in
    nats) echo nats-server ;;
    redis) echo redis-server ;;
    postgres) echo postgresql ;;
    mosquitto) echo mosquitto ;;
    python-grpc) echo python3-grpcio python3-grpc-tools ;;
    test-clients) echo curl libnghttp2-14 ;;
    promtool) echo prometheus ;;
    chromium) echo chromium ;;
    *) return 1 ;;
  esac
}

has_postgres() {
  local bin
  for bin in /usr/lib/postgresql/*/bin/postgres; do
    [ -x "$bin" ] && [ -x "$(dirname "$bin")/initdb" ] && return 0
  done
  command -v postgres >/dev/null 2>&1 && command -v initdb >/dev/null 2>&1
}

present() {
  case "$1" in
    nats) command -v nats-server >/dev/null 2>&1 || [ -x /usr/sbin/nats-server ] ;;
    redis) command -v redis-server >/dev/null 2>&1 || [ -x /usr/bin/redis-server ] ;;
    postgres) has_postgres ;;
    mosquitto) command -v mosquitto >/dev/null 2>&1 || [ -x /usr/sbin/mosquitto ] ;;
    # Debian's python3, where apt puts the modules (a python3 earlier on PATH may be another one).
    python-grpc) [ -x /usr/bin/python3 ] && /usr/bin/python3 -c 'import grpc, grpc_tools.protoc' >/dev/null 2>&1 ;;
    test-clients) command -v curl >/dev/null 2>&1 && ldconfig -p 2>/dev/null | grep -q 'libnghttp2\.so\.14' ;;
    promtool) command -v promtool >/dev/null 2>&1 || [ -x /usr/bin/promtool ] ;;
    chromium) [ -x /usr/bin/chromium ] ;;
  esac
}

wanted=("$@")
[ ${#wanted[@]} -eq 0 ] && wanted=(nats redis postgres mosquitto)

missing=()
for name in "${wanted[@]}"; do
  if ! package_of "$name" >/dev/null; then
    say "unknown name \"$name\" (expected nats, redis, postgres, mosquitto, python-grpc, test-clients, promtool or chromium)"
    exit 1
  fi
  present "$name" || missing+=("$name")
done
[ ${#missing[@]} -eq 0 ] && exit 0

packages=()
for name in "${missing[@]}"; do
  read -ra pkgs <<< "$(package_of "$name")"
  packages+=("${pkgs[@]}")
done

as_root=()
if [ "$(id -u)" -ne 0 ]; then
  if command -v sudo >/dev/null 2>&1 && sudo -n true 2>/dev/null; then
    as_root=(sudo -n)
  else
    say "missing ${packages[*]}: install with 'sudo apt-get install -y ${packages[*]}' (Debian/Ubuntu),"
    say "or point NATS_URL / REDIS_URL / DATABASE_URL at servers you run yourself"
    exit 1
  fi
fi
if ! command -v apt-get >/dev/null 2>&1; then
  say "missing ${packages[*]} and no apt-get here: install them with your system's package manager"
  exit 1
fi

for pkg in "${packages[@]}"; do say "installing $pkg with apt-get (missing)"; done
export DEBIAN_FRONTEND=noninteractive
install() { "${as_root[@]}" apt-get install -y -q --no-install-recommends "${packages[@]}" >&2; }
# A fresh image has no package lists: update only when the first try fails.
if ! install; then
  say "apt-get install failed; running apt-get update and trying again"
  "${as_root[@]}" apt-get update -q >&2
  install
fi

for name in "${missing[@]}"; do
  if ! present "$name"; then
    say "installed $(package_of "$name") but it is still not found"
    exit 1
  fi
done
say "installed ${packages[*]}"
