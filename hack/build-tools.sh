#!/usr/bin/env bash
# Build the test environment's binaries from Go modules, once, into a cache outside the repo.
#   etcd, kube-apiserver, kube-controller-manager, vcsim  ->  $ER_TESTENV_CACHE/bin  (target: control)
#   kubelet, kube-scheduler, kube-proxy, coredns, pause    ->  the same           (target: node)
#   helm (v3, charts/event-router's tests), kubectl        ->  the same           (targets: helm, kubectl)
# Each tool gets its own wrapper module so dependency graphs never fight: hack/tools/<tool>/go.mod
# and go.sum pin the whole graph (reviewable, reproducible). A version other than the pinned one
# (ETCD_VERSION=..., K8S_VERSION=...) gets a wrapper generated from that tag; `pin` copies the
# wrappers of the versions above into hack/tools/ after a build.
set -euo pipefail
HERE="$(cd "$(dirname "$0")" && pwd)"
PINS="$HERE/tools"

ETCD_VERSION="${ETCD_VERSION:-v3.6.16}"
K8S_VERSION="${K8S_VERSION:-v1.34.4}"
GOVMOMI_VERSION="${GOVMOMI_VERSION:-v0.46.3}"
COREDNS_VERSION="${COREDNS_VERSION:-v1.12.4}"
HELM_VERSION="${HELM_VERSION:-v3.22.0}"

CACHE="${ER_TESTENV_CACHE:-$HOME/.cache/event-router/testenv}"
BIN="$CACHE/bin"
WORK="$CACHE/work"
LOGS="$CACHE/logs"
mkdir -p "$BIN" "$WORK" "$LOGS"
export GOFLAGS="${GOFLAGS:-} -mod=mod"
export GOTOOLCHAIN="${GOTOOLCHAIN:-local}"
export CGO_ENABLED=0

start=$(date +%s)
say() { printf '[build %4ss] %s\n' "$(( $(date +%s) - start ))" "$*" >&2; }

# One build at a time per cache: a second caller (make test, the pytest fixture, another
# engineer) waits here for the first instead of wiping its work directory.
exec 9>"$CACHE/build.lock"
if ! flock -n 9; then
  say "another build-tools.sh holds $CACHE/build.lock; waiting for it (logs: $LOGS)"
  flock 9
fi
# A build started by an older copy of this script does not take the lock: before building
# anything, wait for its compiler to finish writing into $BIN rather than racing it.
legacy_build() { pgrep -f "go build .*-o $BIN/" >/dev/null 2>&1; }
wait_legacy() {
  while legacy_build || { sleep 3; legacy_build; }; do
    say "a go build writing into $BIN is running (pid $(pgrep -f "go build .*-o $BIN/" | head -1)); waiting"
    sleep 30
  done
}

# stamp file: a binary is rebuilt only when its pinned version changes
have() { [ -x "$BIN/$1" ] && [ "$(cat "$BIN/$1.version" 2>/dev/null)" = "$2" ]; }
done_() { echo "$2" >"$BIN/$1.version"; }

# pinned NAME MODULE VERSION: hack/tools/NAME pins MODULE at VERSION -> copy it into the cwd
pinned() {
  local mod="$PINS/$1/go.mod"
  [ -f "$mod" ] && [ -f "$PINS/$1/go.sum" ] && grep -qE "^[[:space:]]*(require[[:space:]]+)?$2 $3( |$)" "$mod" || return 1
  cp "$mod" "$PINS/$1/go.sum" .
}

run_logged() { # name cmd...   (prints a heartbeat every minute while a step runs)
  local name=$1; shift
  local t0; t0=$(date +%s)
  ( while sleep 60; do say "  still building $name ($(( $(date +%s) - t0 ))s in this step)"; done ) &
  local beat=$!
  if ! "$@" >>"$LOGS/build-$name.log" 2>&1; then
    kill "$beat" 2>/dev/null || true; wait "$beat" 2>/dev/null || true
    say "FAILED building $name: $*"
    say "last lines of $LOGS/build-$name.log:"
    tail -n 30 "$LOGS/build-$name.log" >&2
    exit 1
  fi
  kill "$beat" 2>/dev/null || true; wait "$beat" 2>/dev/null || true
}

build_etcd() {
  have etcd "$ETCD_VERSION" && { say "etcd $ETCD_VERSION cached"; return; }
  wait_legacy; have etcd "$ETCD_VERSION" && { say "etcd $ETCD_VERSION built meanwhile"; return; }
  say "building etcd $ETCD_VERSION (log: $LOGS/build-etcd.log)"
  local d="$WORK/etcd"; rm -rf "$d"; mkdir -p "$d"; cd "$d"
  : >"$LOGS/build-etcd.log"
  if pinned etcd go.etcd.io/etcd/server/v3 "$ETCD_VERSION"; then
    say "  wrapper module: hack/tools/etcd (pinned)"
  else
    say "  wrapper module: generated for $ETCD_VERSION (hack/tools/etcd pins another version)"
    run_logged etcd go mod init er-testenv/etcd
    run_logged etcd go get -tool "go.etcd.io/etcd/server/v3@$ETCD_VERSION"
  fi
  run_logged etcd go build -trimpath -o "$BIN/etcd" go.etcd.io/etcd/server/v3
  done_ etcd "$ETCD_VERSION"; say "etcd done"
}

gen_kube_module() { # dir: a wrapper module for K8S_VERSION, the staging list from its go.mod
  local d=$1
  local minor="v0.${K8S_VERSION#v1.}"   # v1.34.4 -> v0.34.4
  run_logged kube go mod init er-testenv/kube
  # k8s.io/kubernetes requires its staging modules at v0.0.0 with replaces to ./staging;
  # replace each with its published version, taking the list from that tag's go.mod.
  local modfile="$d/kubernetes.mod"
  run_logged kube bash -c "go mod download -json k8s.io/kubernetes@$K8S_VERSION | python3 -c 'import json,sys,shutil; shutil.copy(json.load(sys.stdin)[\"GoMod\"], \"$modfile\")'"
  local staging
  staging=$(awk '/^replace/{r=1} r && $1 ~ /^k8s\.io\// && $2=="=>" && $3 ~ /^\.\/staging/ {print $1}' "$modfile" | sort -u)
  [ -n "$staging" ] || { say "could not read the staging module list from $modfile"; exit 1; }
  for m in $staging; do
    run_logged kube go mod edit -replace "$m=$m@$minor"
  done
  run_logged kube go mod edit -require "k8s.io/kubernetes@$K8S_VERSION"
  run_logged kube go get -tool "k8s.io/kubernetes/cmd/kube-apiserver@$K8S_VERSION" "k8s.io/kubernetes/cmd/kube-controller-manager@$K8S_VERSION"
}

kube_ldflags() {
  echo "-s -w -X k8s.io/component-base/version.gitVersion=$K8S_VERSION -X k8s.io/component-base/version.gitMajor=1 -X k8s.io/component-base/version.gitMinor=$(echo "$K8S_VERSION" | cut -d. -f2) -X k8s.io/client-go/pkg/version.gitVersion=$K8S_VERSION"
}

kube_module() { # the wrapper module in $WORK/kube, set up once per script run
  local d="$WORK/kube"
  [ -n "${KUBE_MODULE_READY:-}" ] && { cd "$d"; return; }
  rm -rf "$d"; mkdir -p "$d"; cd "$d"
  : >"$LOGS/build-kube.log"
  if pinned kube k8s.io/kubernetes "$K8S_VERSION"; then
    say "  wrapper module: hack/tools/kube (pinned)"
  else
    say "  wrapper module: generated for $K8S_VERSION (hack/tools/kube pins another version)"
    gen_kube_module "$d"
  fi
  KUBE_MODULE_READY=1
}

build_kube_bins() { # the k8s.io/kubernetes commands named, each unless cached
  local todo=()
  for c in "$@"; do have "$c" "$K8S_VERSION" || todo+=("$c"); done
  [ ${#todo[@]} -eq 0 ] && { say "$* $K8S_VERSION cached"; return; }
  wait_legacy
  local left=()
  for c in "${todo[@]}"; do have "$c" "$K8S_VERSION" || left+=("$c"); done
  [ ${#left[@]} -eq 0 ] && { say "${todo[*]} $K8S_VERSION built meanwhile"; return; }
  say "building ${left[*]} $K8S_VERSION (log: $LOGS/build-kube.log)"
  kube_module
  local ld; ld=$(kube_ldflags)
  for c in "${left[@]}"; do
    say "compiling $c"
    run_logged kube go build -trimpath -ldflags "$ld" -o "$BIN/$c" "k8s.io/kubernetes/cmd/$c"
    done_ "$c" "$K8S_VERSION"; say "$c done"
  done
}

build_kube() { build_kube_bins kube-apiserver kube-controller-manager; }

build_kube_node() { build_kube_bins kubelet kube-scheduler kube-proxy kubectl; }

build_coredns() { # a CoreDNS with the few plugins the node's DNS uses (hack/tools/coredns)
  local v="$COREDNS_VERSION+$(sha256sum "$PINS/coredns/main.go" | cut -c1-12)"
  have coredns "$v" && { say "coredns $COREDNS_VERSION cached"; return; }
  wait_legacy
  say "building coredns $COREDNS_VERSION (log: $LOGS/build-coredns.log)"
  local d="$WORK/coredns"; rm -rf "$d"; mkdir -p "$d"; cd "$d"
  : >"$LOGS/build-coredns.log"
  cp "$PINS/coredns/go.mod" "$PINS/coredns/go.sum" "$PINS/coredns/main.go" .
  if ! grep -q "github.com/coredns/coredns $COREDNS_VERSION" go.mod; then
    run_logged coredns go get "github.com/coredns/coredns@$COREDNS_VERSION"
    run_logged coredns go mod tidy
  fi
  run_logged coredns go build -trimpath -ldflags "-s -w" -o "$BIN/coredns" .
  done_ coredns "$v"; say "coredns done"
}

build_pause() { # the pod sandbox's process (hack/tools/pause), static
  local v; v="$(sha256sum "$PINS/pause/main.go" | cut -c1-12)"
  have pause "$v" && { say "pause cached"; return; }
  say "building pause"
  local d="$WORK/pause"; rm -rf "$d"; mkdir -p "$d"; cd "$d"
  : >"$LOGS/build-pause.log"
  cp "$PINS/pause/go.mod" "$PINS/pause/main.go" .
  run_logged pause go build -trimpath -ldflags "-s -w" -o "$BIN/pause" .
  done_ pause "$v"; say "pause done"
}

build_helm() { # helm v3 from helm.sh/helm/v3 (hack/tools/helm pins the whole graph)
  local v="$HELM_VERSION+k8s"  # +k8s: built with the Kubernetes version flags below
  have helm "$v" && { say "helm $HELM_VERSION cached"; return; }
  wait_legacy; have helm "$v" && { say "helm $HELM_VERSION built meanwhile"; return; }
  say "building helm $HELM_VERSION (log: $LOGS/build-helm.log)"
  local d="$WORK/helm"; rm -rf "$d"; mkdir -p "$d"; cd "$d"
  : >"$LOGS/build-helm.log"
  if pinned helm helm.sh/helm/v3 "$HELM_VERSION"; then
    say "  wrapper module: hack/tools/helm (pinned)"
  else
    say "  wrapper module: generated for $HELM_VERSION (hack/tools/helm pins another version)"
    run_logged helm go mod init er-testenv/helm
    run_logged helm go get -tool "helm.sh/helm/v3/cmd/helm@$HELM_VERSION"
  fi
  # as helm's own Makefile: its version, and the Kubernetes version `helm template` and
  # `helm lint` assume (that of its client-go, v0.X.Y -> 1.X; unset they assume 1.20)
  local kminor; kminor=$(awk '$1=="k8s.io/client-go" {print $2}' go.mod | cut -d. -f2)
  [ -n "$kminor" ] || { say "no k8s.io/client-go in the helm wrapper module"; exit 1; }
  local ld="-s -w -X helm.sh/helm/v3/internal/version.version=$HELM_VERSION"
  for p in helm.sh/helm/v3/pkg/chartutil helm.sh/helm/v3/pkg/lint/rules; do
    ld="$ld -X $p.k8sVersionMajor=1 -X $p.k8sVersionMinor=$kminor"
  done
  run_logged helm go build -trimpath -ldflags "$ld" -o "$BIN/helm" helm.sh/helm/v3/cmd/helm
  done_ helm "$v"; say "helm done"
}

build_vcsim() {
  have vcsim "$GOVMOMI_VERSION" && { say "vcsim $GOVMOMI_VERSION cached"; return; }
  wait_legacy; have vcsim "$GOVMOMI_VERSION" && { say "vcsim $GOVMOMI_VERSION built meanwhile"; return; }
  say "building vcsim $GOVMOMI_VERSION (log: $LOGS/build-vcsim.log)"
  : >"$LOGS/build-vcsim.log"
  run_logged vcsim env GOBIN="$BIN" go install "github.com/vmware/govmomi/vcsim@$GOVMOMI_VERSION"
  done_ vcsim "$GOVMOMI_VERSION"; say "vcsim done"
}

pin() { # copy the wrapper modules of the versions built into hack/tools (after a build)
  for t in etcd kube helm; do
    if [ ! -f "$WORK/$t/go.mod" ]; then
      [ "$t" = helm ] && { say "no wrapper module in $WORK/helm (helm not built): skipped"; continue; }
      say "no wrapper module in $WORK/$t: build first"; exit 1
    fi
    mkdir -p "$PINS/$t"
    cp "$WORK/$t/go.mod" "$WORK/$t/go.sum" "$PINS/$t/"
    (cd "$PINS/$t" && GOFLAGS= go mod edit -go=1.26.0)
    say "pinned $PINS/$t"
  done
}

what="${1:-all}"
case "$what" in
  pin) pin ;;
  etcd) build_etcd ;;
  kube) build_kube ;;
  vcsim) build_vcsim ;;
  coredns) build_coredns ;;
  pause) build_pause ;;
  helm) build_helm ;;
  kubectl) build_kube_bins kubectl ;;
  control) build_vcsim; build_etcd; build_kube ;;
  node) build_pause; build_coredns; build_kube_node ;;
  all) build_vcsim; build_etcd; build_kube; build_pause; build_coredns; build_kube_node; build_helm ;;
  *) echo "usage: $0 [all|control|node|etcd|kube|vcsim|coredns|pause|helm|kubectl|pin]" >&2; exit 2 ;;
esac
say "all requested binaries in $BIN (total $(( $(date +%s) - start ))s)"
