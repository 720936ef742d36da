#!/usr/bin/env bash
# Builds the go-hpack helper of the HPACK differential check (fuzz/go-hpack)
# against Debian's golang.org/x/net (golang-golang-x-net-dev), offline, and
# prints its path. Usage: bash scripts/build-go-hpack.sh [OUTPUT]
# (default: $CARGO_TARGET_DIR or target, then go-hpack/go-hpack).
set -euo pipefail
cd "$(dirname "$0")/.."
out="${1:-${CARGO_TARGET_DIR:-$PWD/target}/go-hpack/go-hpack}"
gocode=/usr/share/gocode
command -v go >/dev/null || { echo "build-go-hpack.sh: go is required (golang-go)" >&2; exit 1; }
[ -d "$gocode/src/golang.org/x/net/http2/hpack" ] || {
  echo "build-go-hpack.sh: $gocode lacks golang.org/x/net (golang-golang-x-net-dev)" >&2
  exit 1
}
mkdir -p "$(dirname "$out")"
# GOPATH mode over Debian's source tree: no module download, no network.
GO111MODULE=off GOPATH="$gocode" GOFLAGS= GOPROXY=off GOTOOLCHAIN=local \
  GOCACHE="${GOCACHE:-$(dirname "$out")/go-build}" \
  go build -o "$out" ./fuzz/go-hpack
echo "$out"
