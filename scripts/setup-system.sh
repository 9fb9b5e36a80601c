#!/usr/bin/env bash
# Install the Debian packages Ecliptic needs, only those missing. Idempotent; needs root
# (or sudo) when something is missing. Usage: scripts/setup-system.sh [run|test]
set -euo pipefail
purpose=${1:-run}

# command -> Debian package
declare -A need=(
  [ip]=iproute2
  [nsenter]=util-linux
  [unshare]=util-linux
  [ping]=iputils-ping
  [ps]=procps
)
if [ "$purpose" = test ]; then
  need[pg_ctlcluster]=postgresql
fi

missing=()
for cmd in "${!need[@]}"; do
  command -v "$cmd" >/dev/null 2>&1 || PATH="$PATH:/usr/sbin:/sbin" command -v "$cmd" >/dev/null 2>&1 \
    || missing+=("${need[$cmd]}")
done
if [ "$purpose" = test ] && ! ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1; then
  missing+=(postgresql)
fi
if ! python3 -c 'import venv, ensurepip' >/dev/null 2>&1; then
  missing+=(python3-venv)
fi
if [ ${#missing[@]} -eq 0 ]; then
  exit 0
fi
mapfile -t pkgs < <(printf '%s\n' "${missing[@]}" | sort -u)
echo "Installing Debian packages: ${pkgs[*]}" >&2
SUDO=""
if [ "$(id -u)" != 0 ]; then
  command -v sudo >/dev/null || { echo "run as root, or install: ${pkgs[*]}" >&2; exit 1; }
  SUDO=sudo
fi
export DEBIAN_FRONTEND=noninteractive
$SUDO apt-get update -qq
$SUDO apt-get install -y -qq --no-install-recommends "${pkgs[@]}" >/dev/null
