#!/usr/bin/env bash
# Build CometBFT's `cometbft` binary from its Go module, pinned, once (issue 17: the relay chain on CometBFT).
#
# v0.38.25 is the supported line and speaks ABCI 2.0 (PrepareProposal, ProcessProposal, ExtendVote,
# VerifyVoteExtension, FinalizeBlock). It is pinned by version, never @latest: @latest resolves to v1.0.x, a line its
# maintainers abandoned. `go install module@version` builds with the module's own go.mod and go.sum, so every
# dependency is fixed by CometBFT's release and checked against the Go checksum database.
#
# The binary lands in $PARKRELAY_COMETBFT_HOME/bin (default ~/.cache/parkrelay/cometbft-0.38.25), outside the
# repository. A stamp of this script's hash makes a second run instant.
set -euo pipefail

version="0.38.25"
home="${PARKRELAY_COMETBFT_HOME:-$HOME/.cache/parkrelay/cometbft-$version}"
pin="$(sha256sum "${BASH_SOURCE[0]}" | cut -c1-16)"

if [[ -f "$home/.pin" && "$(cat "$home/.pin")" == "$pin" && -x "$home/bin/cometbft" ]]; then
    echo "cometbft $version: cached in $home"
    exit 0
fi

command -v go >/dev/null || { echo "error: go not found on PATH (cometbft is built from its Go module; Go >= 1.22.11)" >&2; exit 1; }
mkdir -p "$home/bin"
rm -f "$home/.pin"
echo "cometbft $version: downloading github.com/cometbft/cometbft@v$version with its dependencies and building" \
     "cmd/cometbft (about a minute on two cores; go names each module it downloads)"
CGO_ENABLED=0 GOBIN="$home/bin" go install -trimpath "github.com/cometbft/cometbft/cmd/cometbft@v$version"
got="$("$home/bin/cometbft" version)"
[[ "$got" == "$version" ]] || { echo "error: built cometbft reports version '$got', not $version" >&2; exit 1; }
echo "$pin" > "$home/.pin"
echo "cometbft $version: built in $home/bin"
