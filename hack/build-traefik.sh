#!/usr/bin/env bash
# Builds Traefik from the github.com/traefik/traefik/v3 Go module, once, and caches it;
# the data-plane tests and the demo run real requests through it (Gateway API provider).
#
# Traefik's release binaries are not reachable from here, but its module is. Its go.mod
# has `replace` directives (forks of go-http-auth, mux and minheap) that `go install
# pkg@version` refuses, so the build goes through a throwaway module that requires
# Traefik and copies that version's replace lines, read from its own go.mod. v3.7 does
# not build this way (it replaces a nested module by a local path the module zip leaves
# out), hence the pinned v3.6 line. About 8 minutes on two cores, once.
#
# Prints the path of the binary on stdout. Everything else goes to stderr.
# TRAEFIK=/path/to/traefik skips the build and prints that path.
set -euo pipefail

if [ -n "${TRAEFIK:-}" ]; then
  [ -x "$TRAEFIK" ] || { echo "TRAEFIK=$TRAEFIK is not an executable file" >&2; exit 1; }
  echo "$TRAEFIK"
  exit 0
fi

TRAEFIK_VERSION="${TRAEFIK_VERSION:-v3.6.12}"
CACHE_ROOT="${SWITCHYARD_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/switchyard}"
out_dir="$CACHE_ROOT/traefik-$TRAEFIK_VERSION"
bin="$out_dir/traefik"

if [ -x "$bin" ]; then
  echo "$bin"
  exit 0
fi

command -v go >/dev/null || { echo "go is required to build traefik" >&2; exit 1; }

work=$(mktemp -d)
caches=$(mktemp -d)
trap 'rm -rf "$work" "$caches"' EXIT
# Only the binary is kept: Traefik's module sources and build cache (several GB) go with
# the throwaway directory, so they do not fill the disk the cargo build needs.
export GOCACHE="$caches/build" GOMODCACHE="$caches/mod" GOFLAGS="-modcacherw"

echo "building traefik $TRAEFIK_VERSION into $bin (about 8 minutes on two cores, once)" >&2
start=$(date +%s)

module="github.com/traefik/traefik/v3"
gomod=$(cd "$work" && go mod download -json "$module@$TRAEFIK_VERSION" \
  | sed -n 's/^\s*"GoMod": "\(.*\)",$/\1/p')
[ -f "$gomod" ] || { echo "could not download $module@$TRAEFIK_VERSION's go.mod" >&2; exit 1; }
go_version=$(awk '$1 == "go" {print $2; exit}' "$gomod")
# Both forms: a replace block, and single `replace a => b` lines.
replaces=$(awk '
  /^replace \($/ {block = 1; next}
  block && /^\)$/ {block = 0; next}
  block {print "replace " $0; next}
  /^replace / {print}
' "$gomod")
if grep -q '=> \.' <<<"$replaces"; then
  echo "$module@$TRAEFIK_VERSION replaces a module by a local path; it cannot build from the module proxy" >&2
  exit 1
fi

cat >"$work/go.mod" <<EOF
module switchyard.dev/traefik-build

go $go_version

require $module $TRAEFIK_VERSION

$replaces
EOF
cat >"$work/tools.go" <<EOF
//go:build tools

package tools

import _ "$module/cmd/traefik"
EOF

# Two cores are shared with cargo: keep the Go compiler to two jobs.
(
  cd "$work"
  export GOMAXPROCS="${GOMAXPROCS:-2}" CGO_ENABLED=0 GOFLAGS="$GOFLAGS -mod=mod"
  go mod tidy >&2
  go build -p 2 -trimpath -o "$work/traefik" \
    -ldflags "-s -w -X $module/pkg/version.Version=$TRAEFIK_VERSION -X $module/pkg/version.Codename=switchyard" \
    "$module/cmd/traefik" >&2
)
mkdir -p "$out_dir"
mv "$work/traefik" "$bin.tmp"
mv "$bin.tmp" "$bin"
echo "built $bin in $(( $(date +%s) - start ))s" >&2
echo "$bin"
