#!/usr/bin/env bash
# Builds the Kubernetes control-plane binaries pinned in k8s/go.mod from the Go
# module proxy into ${XDG_CACHE_HOME:-$HOME/.cache}/edgemesh/k8s/<version>/bin.
# Binaries already there are kept (a warm run builds nothing). Prints the bin dir
# on stdout's last line; progress goes to stderr.
#   build-k8s.sh [binary...]   default: kube-apiserver kube-controller-manager kube-scheduler kubectl kubelet kube-proxy
# Binaries: kube-apiserver kube-controller-manager kube-scheduler kubectl kubelet kube-proxy etcd
set -euo pipefail
# CI may run without HOME; Go's caches and ours live under it.
export HOME="${HOME:-$(getent passwd "$(id -u)" | cut -d: -f6)}"

here=$(cd "$(dirname "$0")" && pwd)
mod="$here/k8s"
version=$(awk '$1 == "k8s.io/kubernetes" { print $2 }' "$mod/go.mod")
bin="${XDG_CACHE_HOME:-$HOME/.cache}/edgemesh/k8s/$version/bin"
log() { echo "build-k8s: $*" >&2; }

package_of() {
  case "$1" in
    kube-apiserver | kube-controller-manager | kube-scheduler | kubectl | kubelet | kube-proxy) echo "k8s.io/kubernetes/cmd/$1" ;;
    etcd) echo "./etcd" ;;
    *) log "unknown binary '$1' (known: kube-apiserver kube-controller-manager kube-scheduler kubectl kubelet kube-proxy etcd)"; exit 2 ;;
  esac
}

wanted=("$@")
[ ${#wanted[@]} -gt 0 ] || wanted=(kube-apiserver kube-controller-manager kube-scheduler kubectl kubelet kube-proxy)

find_missing() {
  missing=()
  packages=()
  for name in "${wanted[@]}"; do
    pkg=$(package_of "$name")
    if [ -x "$bin/$name" ]; then continue; fi
    missing+=("$name")
    packages+=("$pkg")
  done
}
up_to_date() {
  log "up to date: ${wanted[*]} ($version)"
  echo "$bin"
  exit 0
}

# Binaries are moved into place whole, so a present one is complete: no lock needed to see that.
find_missing
[ ${#missing[@]} -gt 0 ] || up_to_date
mkdir -p "$bin"
# One build at a time per version, so parallel test runs wait instead of racing.
exec 9>"$bin/.lock"
if ! flock -n 9; then
  log "another build is running; waiting for it"
  flock 9
fi
find_missing
[ ${#missing[@]} -gt 0 ] || up_to_date

major=${version#v}; major=${major%%.*}
minor=${version#v*.}; minor=${minor%%.*}
ldflags="-s -w"
for pkg in k8s.io/component-base/version k8s.io/client-go/pkg/version; do
  ldflags+=" -X $pkg.gitVersion=$version -X $pkg.gitMajor=$major -X $pkg.gitMinor=$minor"
  ldflags+=" -X $pkg.gitTreeState=clean -X $pkg.buildDate=1970-01-01T00:00:00Z"
done

# The usual install location, for environments whose PATH lacks it.
command -v go >/dev/null || [ ! -x /usr/local/go/bin/go ] || export PATH="$PATH:/usr/local/go/bin"
command -v go >/dev/null || { log "go is not on PATH (needs Go >= $(awk '$1 == "go" { print $2 }' "$mod/go.mod"))"; exit 1; }
work=$(mktemp -d "$bin/.build.XXXXXX")
trap 'rm -rf "$work"' EXIT
log "building ${missing[*]} ($version) into $bin; all six took ~8-10 min cold on 2 idle cores, etcd 30 s"
started=$(date +%s)
# -v lists each package as it is compiled: shown as a running count.
(
  cd "$mod"
  nice -n 10 env GOFLAGS="-buildvcs=false -mod=readonly" CGO_ENABLED=0 \
    go build -v -trimpath -ldflags="$ldflags" -o "$work/" "${packages[@]}"
) >"$work/build.log" 2>&1 &
builder=$!
ticks=0
while kill -0 "$builder" 2>/dev/null; do
  sleep 1
  ticks=$((ticks + 1))
  if [ $((ticks % 30)) -eq 0 ]; then
    log "  $(( $(date +%s) - started ))s, $(grep -c . "$work/build.log" || true) packages compiled"
  fi
done
if ! wait "$builder"; then
  log "go build failed; last lines:"
  tail -n 40 "$work/build.log" >&2
  exit 1
fi
for name in "${missing[@]}"; do
  base=$(basename "$(package_of "$name")")
  mv "$work/$base" "$bin/$name"
done
log "built ${missing[*]} in $(( $(date +%s) - started ))s"
echo "$bin"
