#!/usr/bin/env bash
# Builds Helm from the helm.sh/helm/v3 Go module, once, and caches it; the chart's tests
# (tests/helm.rs) run `helm lint` and `helm template` with it.
#
# Helm's release binaries are not reachable from here, but its module is, and it builds
# with `go install pkg@version` (its go.mod has no replace directives). The ldflags are the
# ones Helm's own Makefile sets, so `helm version` and the default Kubernetes version that
# `helm template`/`helm lint` assume are right.
#
# Prints the path of the binary on stdout. Everything else goes to stderr.
# HELM=/path/to/helm skips the build and prints that path.
set -euo pipefail

if [ -n "${HELM:-}" ]; then
  [ -x "$HELM" ] || { echo "HELM=$HELM is not an executable file" >&2; exit 1; }
  echo "$HELM"
  exit 0
fi

HELM_VERSION="${HELM_VERSION:-v3.22.0}"
CACHE_ROOT="${SWITCHYARD_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/switchyard}"
out_dir="$CACHE_ROOT/helm-$HELM_VERSION"
bin="$out_dir/helm"

if [ -x "$bin" ]; then
  echo "$bin"
  exit 0
fi

command -v go >/dev/null || { echo "go is required to build helm" >&2; exit 1; }

work=$(mktemp -d)
caches=$(mktemp -d)
trap 'rm -rf "$work" "$caches"' EXIT
# Only the binary is kept: the build's caches go with the throwaway directory.
export GOCACHE="$caches/build" GOMODCACHE="$caches/mod" GOFLAGS="-modcacherw"

echo "building helm $HELM_VERSION into $bin" >&2
start=$(date +%s)

# The Kubernetes version Helm assumes when no cluster is asked (Capabilities.KubeVersion),
# derived as Helm's Makefile does: client-go v0.X.Y -> 1.X.
client_go=$(cd "$work" && go mod download -json "helm.sh/helm/v3@$HELM_VERSION" \
  | sed -n 's/^\s*"GoMod": "\(.*\)",$/\1/p' | xargs awk '$1 == "k8s.io/client-go" {print $2; exit}')
[ -n "$client_go" ] || { echo "could not read k8s.io/client-go's version from helm's go.mod" >&2; exit 1; }
k8s_minor=$(echo "$client_go" | cut -d. -f2)

ldflags="-s -w -X helm.sh/helm/v3/internal/version.version=$HELM_VERSION \
  -X helm.sh/helm/v3/internal/version.gitTreeState=clean \
  -X helm.sh/helm/v3/pkg/lint/rules.k8sVersionMajor=1 \
  -X helm.sh/helm/v3/pkg/lint/rules.k8sVersionMinor=$k8s_minor \
  -X helm.sh/helm/v3/pkg/chartutil.k8sVersionMajor=1 \
  -X helm.sh/helm/v3/pkg/chartutil.k8sVersionMinor=$k8s_minor"

# Two cores are shared with cargo: keep the Go compiler to two jobs.
(
  cd "$work"
  GOBIN="$work/bin" GOMAXPROCS="${GOMAXPROCS:-2}" CGO_ENABLED=0 GOFLAGS="$GOFLAGS -mod=mod" \
    go install -p 2 -trimpath -ldflags "$ldflags" "helm.sh/helm/v3/cmd/helm@$HELM_VERSION" >&2
)
mkdir -p "$out_dir"
mv "$work/bin/helm" "$bin.tmp"
mv "$bin.tmp" "$bin"
echo "built $bin in $(( $(date +%s) - start ))s" >&2
echo "$bin"
