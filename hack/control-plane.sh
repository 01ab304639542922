#!/usr/bin/env bash
# hack/control-plane.sh [--print-dir]
#
# Builds the binaries the tests and the dev mode need from source, through the Go module proxy only:
# kube-apiserver and etcd (for controller-runtime's envtest), controller-gen and helm. Each pinned
# version set has its own folder under ${XDG_CACHE_HOME:-$HOME/.cache}/tokenwarden/, so a rerun is a
# no-op and a version bump builds beside the old one. Prints the folder (KUBEBUILDER_ASSETS) on stdout;
# progress goes to stderr.
#
# Cold on 2 cores this takes about 7 minutes (kube-apiserver is most of it); warm, well under a second.
set -euo pipefail

K8S_VERSION=v1.37.2
ETCD_VERSION=v3.7.3
CONTROLLER_TOOLS_VERSION=v0.23.0
HELM_VERSION=v3.22.0

CACHE_ROOT=${TOKENWARDEN_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/tokenwarden}
OUT=$CACHE_ROOT/bin/k8s-$K8S_VERSION-etcd-$ETCD_VERSION-cg-$CONTROLLER_TOOLS_VERSION-helm-$HELM_VERSION

if [[ ${1:-} == --print-dir ]]; then
  echo "$OUT"
  exit 0
fi

mkdir -p "$OUT"
export CGO_ENABLED=0 GOFLAGS=-mod=mod
WORK=$(mktemp -d)
trap 'rm -rf "$WORK"' EXIT

log() { printf '[control-plane %s] %s\n' "$(date +%T)" "$*" >&2; }

# fresh BIN PATTERN ARGS...: OUT/BIN exists and reports the pinned version.
fresh() {
  local bin=$1 pattern=$2 out
  shift 2
  [[ -x $OUT/$bin ]] && out=$("$OUT/$bin" "$@" 2>/dev/null) && [[ $out == *"$pattern"* ]]
}

# build NAME FUNC: runs FUNC with a heartbeat so a first-time user sees it is alive.
build() {
  local name=$1 fn=$2 start=$SECONDS hb
  log "building $name (first run only; cached in $OUT)"
  ( while sleep 30; do log "  still building $name ($((SECONDS - start))s)"; done ) &
  hb=$!
  if ! "$fn" >"$WORK/$name.log" 2>&1; then
    kill "$hb" 2>/dev/null || true
    cat "$WORK/$name.log" >&2
    log "building $name failed"
    return 1
  fi
  kill "$hb" 2>/dev/null || true
  wait "$hb" 2>/dev/null || true
  log "built $name in $((SECONDS - start))s"
}

# kube-apiserver: k8s.io/kubernetes replaces its staging modules with local paths, so `go install` refuses
# it. A throwaway module pins each staging module (listed at v0.0.0 in kubernetes' go.mod) to its tag.
kube_apiserver() (
  mkdir -p "$WORK/apiserver" && cd "$WORK/apiserver"
  local gomod minor staging pkg=k8s.io/component-base/version
  gomod=$(go mod download -json "k8s.io/kubernetes@$K8S_VERSION" | sed -n 's/.*"GoMod": "\(.*\)".*/\1/p')
  staging=v0.${K8S_VERSION#v1.}
  {
    printf 'module tokenwarden.local/kube-apiserver\n\ngo 1.26.0\n\nreplace (\n'
    awk '/^require \(/,/^\)/' "$gomod" | awk -v v="$staging" '$1 ~ /^k8s\.io\// && $2 == "v0.0.0" { print "\t" $1 " => " $1 " " v }'
    printf ')\n'
  } >go.mod
  go get -tool "k8s.io/kubernetes/cmd/kube-apiserver@$K8S_VERSION"
  minor=${K8S_VERSION#v1.}
  minor=${minor%%.*}
  go build -trimpath -o "$OUT/kube-apiserver" -ldflags "-s -w \
    -X $pkg.gitVersion=$K8S_VERSION -X $pkg.gitMajor=1 -X $pkg.gitMinor=$minor \
    -X $pkg.gitTreeState=clean -X $pkg.buildDate=1970-01-01T00:00:00Z" \
    k8s.io/kubernetes/cmd/kube-apiserver
)

# etcd: the root package of go.etcd.io/etcd/server/v3 is etcd's main; it too has relative replaces.
etcd() (
  mkdir -p "$WORK/etcd" && cd "$WORK/etcd"
  printf 'module tokenwarden.local/etcd\n\ngo 1.26.0\n' >go.mod
  go get -tool "go.etcd.io/etcd/server/v3@$ETCD_VERSION"
  go build -trimpath -o "$OUT/etcd" -ldflags "-s -w" go.etcd.io/etcd/server/v3
)

controller_gen() {
  GOBIN=$OUT go install -trimpath -ldflags "-s -w" "sigs.k8s.io/controller-tools/cmd/controller-gen@$CONTROLLER_TOOLS_VERSION"
}

# helm needs its version stamps, or it reports Kubernetes v1.20 as the cluster version.
helm() {
  local h=helm.sh/helm/v3 minor=${K8S_VERSION#v1.}
  minor=${minor%%.*}
  GOBIN=$OUT go install -trimpath -ldflags "-s -w \
    -X $h/internal/version.version=$HELM_VERSION -X $h/internal/version.gitTreeState=clean \
    -X $h/pkg/lint/rules.k8sVersionMajor=1 -X $h/pkg/lint/rules.k8sVersionMinor=$minor \
    -X $h/pkg/chartutil.k8sVersionMajor=1 -X $h/pkg/chartutil.k8sVersionMinor=$minor" \
    "$h/cmd/helm@$HELM_VERSION"
}

fresh kube-apiserver "Kubernetes $K8S_VERSION" --version || build kube-apiserver kube_apiserver
fresh etcd "etcd Version: ${ETCD_VERSION#v}" --version || build etcd etcd
fresh controller-gen "Version: $CONTROLLER_TOOLS_VERSION" --version || build controller-gen controller_gen
fresh helm "Version:\"$HELM_VERSION\"" version || build helm helm

# envtest looks for kubectl beside the other assets; link the one on PATH when there is one.
if [[ ! -e $OUT/kubectl ]] && k=${KUBECTL:-$(command -v kubectl)}; then
  ln -sf "$k" "$OUT/kubectl"
fi

echo "$OUT"
