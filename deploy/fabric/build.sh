#!/usr/bin/env bash
# Build Hyperledger Fabric's peer, orderer, osnadmin and configtxgen from Fabric's Go module, pinned, once.
#
# The pin is deploy/fabric/gomodule/go.mod (+ go.sum, which fixes every module's hash): Fabric v2.5.9, commit
# 7c3876255bf0, as the pseudo-version v1.4.0-rc1.0.20240618194258-7c3876255bf0 (Fabric's module path has no
# /v2 suffix, so its v2.x tags are not valid Go versions). v2.5.16 was the first choice; the Go module proxy
# here refuses it (403 "This module version is not available") and serves v2.5.9: see README "Fabric".
#
# Binaries and Fabric's sample configuration land in $PARKRELAY_FABRIC_HOME (default
# ~/.cache/parkrelay/fabric-2.5.9), outside the repository. A stamp of the pin's hash makes a second run instant.
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
version="2.5.9"
home="${PARKRELAY_FABRIC_HOME:-$HOME/.cache/parkrelay/fabric-$version}"
bins=(peer orderer osnadmin configtxgen)
pin="$(cat "$here/gomodule/go.mod" "$here/gomodule/go.sum" "$here/gomodule/tools.go" "$here/build.sh" | sha256sum | cut -c1-16)"

if [[ -f "$home/.pin" && "$(cat "$home/.pin")" == "$pin" ]]; then
    all=1
    for b in "${bins[@]}"; do [[ -x "$home/bin/$b" ]] || all=0; done
    if [[ $all == 1 && -f "$home/config/core.yaml" ]]; then
        echo "fabric $version: cached in $home"
        exit 0
    fi
fi

command -v go >/dev/null || { echo "error: go not found on PATH (Fabric's binaries are built from its Go module; Go >= 1.22)" >&2; exit 1; }
work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT
cp "$here/gomodule/go.mod" "$here/gomodule/go.sum" "$here/gomodule/tools.go" "$work/"
cd "$work"
export CGO_ENABLED=0 GOFLAGS=-mod=readonly
mkdir -p "$home/bin" "$home/config"
rm -f "$home/.pin"

echo "fabric $version: [1/$(( ${#bins[@]} + 2 ))] downloading Fabric's Go module and its dependencies (pinned by go.sum)"
go mod download -x 2>&1 | grep --line-buffered -E '^# get .*200 OK' | sed -u -E 's/^# get (.*): 200 OK.*/    \1/' | grep --line-buffered -E '\.zip$' || true
go mod verify >/dev/null
step=2
for b in "${bins[@]}"; do
    echo "fabric $version: [$step/$(( ${#bins[@]} + 2 ))] building $b"
    GOBIN="$home/bin" go install -trimpath \
        -ldflags "-X github.com/hyperledger/fabric/common/metadata.Version=$version" \
        "github.com/hyperledger/fabric/cmd/$b"
    step=$(( step + 1 ))
done
echo "fabric $version: [$step/$(( ${#bins[@]} + 2 ))] copying Fabric's sample configuration (core.yaml, orderer.yaml, configtx.yaml)"
src="$(go list -m -f '{{.Dir}}' github.com/hyperledger/fabric)"
cp "$src/sampleconfig/core.yaml" "$src/sampleconfig/orderer.yaml" "$src/sampleconfig/configtx.yaml" "$home/config/"
chmod u+w "$home/config/"*.yaml
"$home/bin/peer" version | grep -q "Version: $version" || { echo "error: built peer does not report version $version" >&2; exit 1; }
echo "$pin" > "$home/.pin"
echo "fabric $version: built in $home/bin"
