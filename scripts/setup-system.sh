#!/usr/bin/env bash
# Install the Debian packages Ecliptic needs, only those missing. Idempotent; needs root
# (or sudo) when something is missing.
# Usage: scripts/setup-system.sh [venv|run|test|bench]
#   venv   only what creating the Python venv needs (python3-venv)
#   run    what `make run` needs (the local cloud, the tunnel gateway, the browser terminal)
#   test   run's, and PostgreSQL and Chromium for the tests
#   bench  run's, and wrk and curl for the benchmarks
set -euo pipefail
purpose=${1:-run}
case "$purpose" in venv|run|test|bench) ;; *) echo "usage: $0 [venv|run|test|bench]" >&2; exit 2;; esac

# command -> Debian package
declare -A need=(
  [ip]=iproute2
  [nsenter]=util-linux
  [unshare]=util-linux
  [ping]=iputils-ping
  [ps]=procps
  [ssh]=openssh-client
  [ssh-keygen]=openssh-client
  [nginx]=nginx
  [nft]=nftables  # fences tunnels' loopback listeners off from other local accounts
  [cc]=gcc  # builds ecliptic-sandbox, local-cloud servers' init (sandbox/sandbox.c)
  [cp]=coreutils
  [npm]=npm  # the portal's front-end packages (src/ecliptic/web/package-lock.json)
  # scripts/build-tunneld.sh fetches golang.org/x/crypto's source with apt and unpacks it
  [apt-get]=apt
  [dpkg-deb]=dpkg
)
if [ "$purpose" = test ] || [ "$purpose" = bench ]; then
  need[sshd]=openssh-server  # the tests' stand-in SSH servers and the benchmark's anchor
fi
if [ "$purpose" = test ]; then
  need[pg_ctlcluster]=postgresql
  need[chromium]=chromium  # the browser tests drive it through Playwright
  need[git]=git  # the first-run test clones the checkout
fi
if [ "$purpose" = bench ]; then
  need[wrk]=wrk  # bench.gateway's load generator
  need[curl]=curl
fi
if [ "$purpose" = venv ]; then
  need=()
fi

missing=()
for cmd in "${!need[@]}"; do
  command -v "$cmd" >/dev/null 2>&1 || PATH="$PATH:/usr/sbin:/sbin" command -v "$cmd" >/dev/null 2>&1 \
    || missing+=("${need[$cmd]}")
done
if [ "$purpose" = test ] && ! ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1; then
  missing+=(postgresql)
fi
# The browser terminal (ecliptic agent terminal, run inside servers, which see the host's
# /usr) serves xterm.js linked from node-xterm's modules and libjs-xterm's addons.
if [ "$purpose" != venv ] && { [ ! -e /usr/share/nodejs/xterm/lib/xterm.js ] \
  || [ ! -e /usr/share/javascript/xterm/addons/fit/fit.js ]; }; then
  missing+=(libjs-xterm node-xterm)
fi
if [ "$purpose" != venv ] && [ ! -r /usr/share/keyrings/debian-archive-keyring.gpg ]; then
  missing+=(debian-archive-keyring)  # checks that x/crypto's source package is Debian's
fi
if [ "$purpose" != venv ] && [ ! -e /usr/include/linux/seccomp.h ]; then
  missing+=(linux-libc-dev libc6-dev)  # the sandbox's headers
fi
if ! python3 -c 'import venv, ensurepip' >/dev/null 2>&1; then
  missing+=(python3-venv)
fi
install_packages() {
mapfile -t pkgs < <(printf '%s\n' "${missing[@]}" | sort -u)
echo "Installing Debian packages: ${pkgs[*]}" >&2
SUDO=""
if [ "$(id -u)" != 0 ]; then
  command -v sudo >/dev/null || { echo "run as root, or install: ${pkgs[*]}" >&2; exit 1; }
  SUDO=sudo
fi
export DEBIAN_FRONTEND=noninteractive
$SUDO apt-get update -qq
# Packages such as nginx and openssh-server would start their system services on install;
# Ecliptic starts its own instances, so keep the system ones stopped.
blocker=/usr/sbin/policy-rc.d
if [ ! -e "$blocker" ]; then
  printf '#!/bin/sh\nexit 101\n' | $SUDO tee "$blocker" >/dev/null
  $SUDO chmod 755 "$blocker"
  trap '$SUDO rm -f "$blocker"' EXIT
fi
$SUDO apt-get install -y -qq --no-install-recommends "${pkgs[@]}" >/dev/null
}

# The tunnel gateway's SSH endpoint (ecliptic-tunneld) runs as the unprivileged account
# 'tunnel'. The tests' and the benchmark's stock sshd log clients in as it too ("tunnel@...",
# so the account must be unlocked) and need sshd's privilege-separation directory.
ensure_tunnel_user() {
  local SUDO=""
  [ "$(id -u)" = 0 ] || SUDO=sudo
  if ! getent passwd tunnel >/dev/null; then
    echo "Creating system user 'tunnel' for the tunnel gateway" >&2
    $SUDO useradd --system --no-create-home --home-dir /nonexistent --shell /usr/sbin/nologin tunnel
  fi
  # A locked account ('!') is refused by sshd without PAM; '*' means "no password" instead.
  if [ "$(getent shadow tunnel | cut -d: -f2)" != "*" ]; then
    $SUDO usermod -p '*' tunnel
  fi
  $SUDO mkdir -p /run/sshd
}

# The gateway's nginx workers run as 'ecliptic-web', an account of their own: they hold
# the auth cache (whose keys are the requests' credentials), which no other process on the
# host may read (not 'nobody', which other daemons share).
ensure_web_user() {
  local SUDO=""
  [ "$(id -u)" = 0 ] || SUDO=sudo
  if ! getent passwd ecliptic-web >/dev/null; then
    echo "Creating system user 'ecliptic-web' for the gateway's nginx workers" >&2
    $SUDO useradd --system --user-group --no-create-home --home-dir /nonexistent \
      --shell /usr/sbin/nologin ecliptic-web
  fi
}

if [ ${#missing[@]} -gt 0 ]; then
  install_packages
fi
if [ "$purpose" != venv ]; then
  ensure_tunnel_user
  ensure_web_user
fi
