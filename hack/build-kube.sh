#!/usr/bin/env bash
# Builds a real Kubernetes command (kube-apiserver, the default, or kubectl) from the
# k8s.io/kubernetes Go module, once, and caches it: hack/build-kube.sh [kube-apiserver|kubectl].
#
# The k8s.io/kubernetes module replaces its staging modules (k8s.io/api, k8s.io/client-go,
# ...) with ./staging/src/... paths that are not part of the published module zip. We build
# from a throwaway module that replaces each of them with its published v0.X.Y instead,
# reading the list of staging modules from that version's own go.mod.
#
# Prints the path of the binary on stdout. Everything else goes to stderr.
set -euo pipefail

cmd="${1:-kube-apiserver}"
case "$cmd" in
  kube-apiserver|kubectl) ;;
  *) echo "usage: $0 [kube-apiserver|kubectl] (got $cmd)" >&2; exit 2 ;;
esac
KUBE_VERSION="${KUBE_VERSION:-v1.37.2}"
CACHE_ROOT="${SWITCHYARD_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/switchyard}"
out_dir="$CACHE_ROOT/$cmd-$KUBE_VERSION"
bin="$out_dir/$cmd"

if [ -x "$bin" ]; then
  echo "$bin"
  exit 0
fi

command -v go >/dev/null || { echo "go is required to build $cmd" >&2; exit 1; }

# v1.37.2 -> v0.37.2
staging_version="v0.${KUBE_VERSION#v1.}"
work=$(mktemp -d)
caches=$(mktemp -d)
trap 'rm -rf "$work" "$caches"' EXIT
# The build's caches live in the throwaway directory: only the binary is kept, so a
# cold CI machine does not carry gigabytes of Go objects and module sources into the
# cargo build that follows (a full disk failed a CI run).
export GOCACHE="$caches/build" GOMODCACHE="$caches/mod" GOFLAGS="-modcacherw"
cd "$work"

echo "building $cmd $KUBE_VERSION (staging modules at $staging_version) in $work" >&2
start=$(date +%s)

go mod init "switchyard.dev/$cmd-build" >&2
go mod download -json "k8s.io/kubernetes@$KUBE_VERSION" > download.json
kmod=$(sed -n 's/^\s*"GoMod": "\(.*\)",$/\1/p' download.json)
[ -f "$kmod" ] || { echo "could not find go.mod of k8s.io/kubernetes@$KUBE_VERSION" >&2; exit 1; }

# Staging modules are the ones the kubernetes go.mod replaces with ./staging/src paths.
staging=$(grep -E '=>\s+\./staging/src/' "$kmod" | awk '{print $1}')
required=$(grep -E '^\s+k8s\.io/[A-Za-z0-9._-]+ v0\.0\.0$' "$kmod" | awk '{print $1}')
go_directive=$(awk '/^go /{print $2; exit}' "$kmod")

{
  echo "module switchyard.dev/$cmd-build"
  echo
  echo "go $go_directive"
  echo
  echo "require k8s.io/kubernetes $KUBE_VERSION"
  echo
  echo "replace ("
  for m in $staging; do
    if echo "$required" | grep -qx "$m"; then
      echo "	$m => $m $staging_version"
    fi
  done
  echo ")"
} > go.mod
cat > tools.go <<GO
//go:build tools

package tools

import _ "k8s.io/kubernetes/cmd/$cmd"
GO

GOFLAGS="$GOFLAGS -mod=mod" go mod tidy >&2
mkdir -p "$out_dir"
CGO_ENABLED=0 GOFLAGS="$GOFLAGS -mod=mod" go build -trimpath -ldflags "-s -w \
  -X k8s.io/component-base/version.gitVersion=$KUBE_VERSION \
  -X k8s.io/component-base/version.gitMajor=1 \
  -X k8s.io/component-base/version.gitMinor=$(echo "$KUBE_VERSION" | cut -d. -f2)" \
  -o "$bin.tmp" "k8s.io/kubernetes/cmd/$cmd" >&2
mv "$bin.tmp" "$bin"
echo "built $bin in $(( $(date +%s) - start ))s" >&2
echo "$bin"
