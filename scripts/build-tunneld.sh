#!/usr/bin/env bash
# Build ecliptic-tunneld (tunneld/main.go) with Debian's Go toolchain and Debian's
# golang.org/x/crypto (packages golang-go, golang-golang-x-crypto-dev: no module download).
# Usage: scripts/build-tunneld.sh OUTPUT [check]   ("check" also runs gofmt and go vet)
set -euo pipefail
out=$(realpath -m "${1:?usage: build-tunneld.sh OUTPUT [check]}")
root="$(cd "$(dirname "$0")/.." && pwd)"
export GO111MODULE=off GOPATH=/usr/share/gocode GOFLAGS=-trimpath CGO_ENABLED=0
export GOCACHE="$root/.cache/go-build" HOME="${HOME:-/root}"
command -v go >/dev/null || { echo "go is missing: run scripts/setup-system.sh" >&2; exit 1; }
cd "$root/tunneld"
if [ "${2:-}" = check ]; then
  unformatted=$(gofmt -l .)
  [ -z "$unformatted" ] || { echo "gofmt would change: $unformatted" >&2; exit 1; }
  go vet .
fi
go build -o "$out.tmp" . && mv -f "$out.tmp" "$out"
