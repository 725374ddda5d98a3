#!/usr/bin/env bash
# generate.sh regenerates the Go code of the featurestore API from the .proto
# files beside it, after checking their format and lint. It is what `make
# proto` runs, and works from any directory.
#
#   protos/generate.sh             format check, lint, generate
#   protos/generate.sh breaking    also check for breaking changes against the
#                                  git ref in $BUF_BREAKING_AGAINST (default main)
#
# No system protoc or buf is used: buf (which compiles .proto files itself) and
# the two Go plugins are built from the Go module proxy at the pinned versions
# below, into a cache directory keyed by those versions, so only the first run
# pays for the build. The output depends only on these versions, so a second run
# changes nothing: the generated headers read "protoc (unknown)" because buf
# does not report a compiler version to plugins.
set -euo pipefail

readonly BUF_VERSION=v1.72.0                 # builds with any Go 1.26; v1.73+ need go >= 1.26.7
readonly PROTOC_GEN_GO_VERSION=v1.36.12      # keep equal to google.golang.org/protobuf in go.mod
readonly PROTOC_GEN_GO_GRPC_VERSION=v1.5.1   # needs google.golang.org/grpc >= v1.64 at run time

mode="${1:-generate}"
case "$mode" in
generate | breaking) ;;
*)
	echo "usage: $0 [breaking]" >&2
	exit 2
	;;
esac

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
cache_root="${FEATURESTORE_TOOLS_DIR:-${XDG_CACHE_HOME:-${HOME:?HOME or FEATURESTORE_TOOLS_DIR must be set}/.cache}/featurestore-tools}"
bin="$cache_root/buf-$BUF_VERSION.go-$PROTOC_GEN_GO_VERSION.go-grpc-$PROTOC_GEN_GO_GRPC_VERSION"
mkdir -p "$bin"

# build_tool NAME PACKAGE@VERSION builds one tool into $bin unless it is there.
# It builds into a private directory and renames, so that concurrent or
# interrupted runs never leave a half-written binary behind.
build_tool() {
	local name="$1" pkg="$2"
	[[ -x "$bin/$name" ]] && return 0
	local tmp
	tmp="$(mktemp -d "$bin/.install.XXXXXX")"
	echo "generate.sh: building $pkg" >&2
	# The user's GOFLAGS (such as -mod=vendor) do not apply to `go install
	# pkg@version`; cgo is not needed by any of the tools.
	if ! GOBIN="$tmp" GOFLAGS= CGO_ENABLED=0 go install "$pkg"; then
		rm -rf "$tmp"
		return 1
	fi
	mv -f "$tmp/$name" "$bin/$name"
	rm -rf "$tmp"
}

build_tool buf "github.com/bufbuild/buf/cmd/buf@$BUF_VERSION"
build_tool protoc-gen-go "google.golang.org/protobuf/cmd/protoc-gen-go@$PROTOC_GEN_GO_VERSION"
build_tool protoc-gen-go-grpc "google.golang.org/grpc/cmd/protoc-gen-go-grpc@$PROTOC_GEN_GO_GRPC_VERSION"

export PATH="$bin:$PATH"
cd "$here"

buf format --diff --exit-code
buf lint

if [[ "$mode" == breaking ]]; then
	against="${BUF_BREAKING_AGAINST:-main}"
	repo="$(git rev-parse --show-toplevel)"
	prefix="$(git rev-parse --show-prefix)" # protos/, wherever the repo is
	if ! git rev-parse --verify --quiet "$against^{commit}" >/dev/null; then
		echo "generate.sh: no commit $against to check breaking changes against" >&2
		exit 1
	fi
	if git ls-tree -r --name-only "$against" -- . | grep -q '\.proto$'; then
		buf breaking --against "$repo/.git#ref=$against,subdir=${prefix%/}"
	else
		echo "generate.sh: $against has no .proto files yet; nothing to break" >&2
	fi
fi

# Generate into a scratch directory, then copy only the files that changed and
# delete generated files whose .proto is gone, so that a failed run leaves the
# tree as it was and an unchanged file keeps its timestamp.
work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT
buf generate --output "$work/out"

(cd "$work/out" && find . -type f -name '*.pb.go' | sort) >"$work/list"
while IFS= read -r f; do
	if ! cmp -s "$work/out/$f" "$here/$f"; then
		mkdir -p "$(dirname "$here/$f")"
		cp "$work/out/$f" "$here/$f"
		echo "generate.sh: wrote protos/${f#./}" >&2
	fi
done <"$work/list"
find . -type f -name '*.pb.go' | sort | while IFS= read -r f; do
	if ! grep -qxF "$f" "$work/list"; then
		rm "$f"
		echo "generate.sh: removed stale protos/${f#./}" >&2
	fi
done
