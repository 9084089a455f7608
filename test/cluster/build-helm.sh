#!/usr/bin/env bash
# Builds helm (the version pinned below) from the Go module proxy, the only source of helm
# binaries here, into ${XDG_CACHE_HOME:-$HOME/.cache}/edgemesh/helm/<version>/helm.
# A binary already there is kept (a warm run builds nothing). Prints the binary's path on
# stdout's last line; progress goes to stderr. Used by scripts/setup and manifests/helm.test.ts.
#   build-helm.sh
set -euo pipefail
# CI may run without HOME; Go's caches and ours live under it.
export HOME="${HOME:-$(getent passwd "$(id -u)" | cut -d: -f6)}"

version=v4.3.2
dir="${XDG_CACHE_HOME:-$HOME/.cache}/edgemesh/helm/$version"
log() { echo "build-helm: $*" >&2; }
up_to_date() {
  log "up to date: $dir/helm"
  echo "$dir/helm"
  exit 0
}

# The binary is moved into place whole, so a present one is complete: no lock needed to see that.
[ ! -x "$dir/helm" ] || up_to_date
mkdir -p "$dir"
# One build at a time, so parallel test runs wait instead of racing.
exec 9>"$dir/.lock"
if ! flock -n 9; then
  log "another build is running; waiting for it"
  flock 9
fi
[ ! -x "$dir/helm" ] || up_to_date

# The usual install location, for environments whose PATH lacks it.
command -v go >/dev/null || [ ! -x /usr/local/go/bin/go ] || export PATH="$PATH:/usr/local/go/bin"
command -v go >/dev/null || { log "go is not on PATH (needed to build helm $version)"; exit 1; }
work=$(mktemp -d "$dir/.build.XXXXXX")
trap 'rm -rf "$work"' EXIT
log "building helm $version into $dir (~6 min cold on 2 cores)"
started=$(date +%s)
# go install pkg@version: outside any module, with helm's own go.mod and go.sum.
if ! nice -n 10 env GOBIN="$work" GOFLAGS="-buildvcs=false -mod=mod" CGO_ENABLED=0 \
  go install -trimpath -ldflags="-s -w -X helm.sh/helm/v4/internal/version.version=$version" \
  "helm.sh/helm/v4/cmd/helm@$version" >"$work/build.log" 2>&1; then
  log "go install failed; last lines:"
  tail -n 40 "$work/build.log" >&2
  exit 1
fi
mv "$work/helm" "$dir/helm"
log "built helm $version in $(( $(date +%s) - started ))s"
echo "$dir/helm"
