#!/usr/bin/env bash
# gen.sh writes ../pow.golden: the results of Go's own math.Pow code, not of
# derive's port, for the inputs main.go draws. It builds Go's src/math/pow.go,
# exp.go and log.go, copied unchanged from the installed Go's GOROOT, with
# shim.go, which turns off their assembly (haveArchExp, haveArchLog,
# haveArchPow false) and gives them math's exact helpers (Frexp, Ldexp, Modf,
# Sqrt...), for GOARCH=amd64 GOAMD64=v1, where the compiler fuses no
# multiply-adds. So the goldens are what math.Pow's pure-Go code computes,
# rounding every operation.
#
# Run it from anywhere on an amd64 machine: featurestore/derive/testdata/genpow/gen.sh
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
goroot=$(go env GOROOT)
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
for f in pow.go exp.go log.go; do
	sed 's/^package math$/package main/' "$goroot/src/math/$f" >"$tmp/$f"
done
cp "$here/main.go" "$here/shim.go" "$tmp/"
cat >"$tmp/go.mod" <<MOD
module genpow

go 1.26
MOD
(cd "$tmp" && GOWORK=off GOFLAGS= GOARCH=amd64 GOAMD64=v1 go run .) >"$here/../pow.golden.tmp"
mv "$here/../pow.golden.tmp" "$here/../pow.golden"
