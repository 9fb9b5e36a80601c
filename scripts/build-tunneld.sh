#!/usr/bin/env bash
# Build ecliptic-tunneld (tunneld/main.go) with Debian's Go toolchain and Debian's
# golang.org/x/crypto (packages golang-go, golang-golang-x-crypto-dev: no module download).
# Usage: scripts/build-tunneld.sh OUTPUT [check]   ("check" also runs gofmt and go vet)
# One file of x/crypto is patched at build time (tunneld/x-crypto-ssh-window.patch, applied
# to Debian's copy through go build -overlay): the build fails if the patch does not apply.
set -euo pipefail
out=$(realpath -m "${1:?usage: build-tunneld.sh OUTPUT [check]}")
root="$(cd "$(dirname "$0")/.." && pwd)"
export GO111MODULE=off GOPATH=/usr/share/gocode GOFLAGS=-trimpath CGO_ENABLED=0
export GOCACHE="${GOCACHE:-$root/.cache/go-build}" HOME="${HOME:-/root}"
command -v go >/dev/null || { echo "go is missing: run scripts/setup-system.sh" >&2; exit 1; }
command -v patch >/dev/null || { echo "patch is missing: run scripts/setup-system.sh" >&2; exit 1; }
upstream=$GOPATH/src/golang.org/x/crypto/ssh/channel.go
overlay=$(mktemp -d)
trap 'rm -rf "$overlay"' EXIT
cp "$upstream" "$overlay/channel.go"
patch --quiet --forward --no-backup-if-mismatch -p2 -d "$overlay" \
  <"$root/tunneld/x-crypto-ssh-window.patch" >&2 || {
  echo "tunneld/x-crypto-ssh-window.patch does not apply to $upstream (x/crypto changed?)" >&2
  exit 1
}
printf '{"Replace":{"%s":"%s"}}\n' "$upstream" "$overlay/channel.go" >"$overlay/overlay.json"
cd "$root/tunneld"
if [ "${2:-}" = check ]; then
  unformatted=$(gofmt -l .)
  [ -z "$unformatted" ] || { echo "gofmt would change: $unformatted" >&2; exit 1; }
  go vet -overlay "$overlay/overlay.json" .
fi
go build -overlay "$overlay/overlay.json" -o "$out.tmp" . && mv -f "$out.tmp" "$out"
