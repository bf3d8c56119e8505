#!/usr/bin/env bash
# Build conformance/cnitool offline against Debian's libcni (golang-github-appc-cni-dev)
# in GOPATH mode. Usage: build-cnitool.sh OUTDIR   -> OUTDIR/cnitool
set -euo pipefail

if [[ $# -ne 1 ]]; then
    echo "usage: $0 OUTDIR" >&2
    exit 2
fi
outdir=$1
here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
src="$here/cnitool/main.go"
sysgopath=/usr/share/gocode
libcni="$sysgopath/src/github.com/containernetworking/cni/libcni"

command -v go >/dev/null 2>&1 || { echo "build-cnitool: 'go' not found (apt-get install golang-go)" >&2; exit 1; }
[[ -d $libcni ]] || { echo "build-cnitool: $libcni missing (apt-get install golang-github-appc-cni-dev)" >&2; exit 1; }
[[ -f $src ]] || { echo "build-cnitool: $src missing" >&2; exit 1; }

mkdir -p "$outdir"
outdir=$(cd "$outdir" && pwd)
tmp=$(mktemp -d /tmp/build-cnitool.XXXXXX)
trap 'chmod -R u+w "$tmp" 2>/dev/null; rm -rf "$tmp"' EXIT

# GOPATH mode needs the package inside a GOPATH src tree.
pkgdir="$tmp/gopath/src/cnitool"
mkdir -p "$pkgdir"
cp "$src" "$pkgdir/"

if ! (cd "$pkgdir" && env GO111MODULE=off GOFLAGS= GOPROXY=off GOTOOLCHAIN=local \
        GOPATH="$tmp/gopath:$sysgopath" GOCACHE="$tmp/cache" CGO_ENABLED=0 \
        go build -o "$outdir/cnitool" .); then
    echo "build-cnitool: go build failed (GOPATH mode against $sysgopath)" >&2
    exit 1
fi
echo "built $outdir/cnitool"
