#!/usr/bin/env bash
# Build the event-router image from the Dockerfile on a Debian base bootstrapped here (no
# registry is pulled), cached by the hash of everything that goes into it.
#   hack/image.sh            build (or reuse) and save to $ER_IMAGE_CACHE/event-router-<hash>.tar
#   hack/image.sh --print    print the tarball's path only (after a build)
# The node of hack/testenv imports every tarball of $ER_IMAGE_CACHE/current into its
# containerd at start, and this script imports a fresh build into a running node.
# Behind a TLS-intercepting proxy: the build host's CA bundle is given to pip as a BuildKit
# secret (never a layer of the final image).
set -euo pipefail
REPO="$(cd "$(dirname "$0")/.." && pwd)"
IMAGE="${ER_IMAGE:-ghcr.io/vmware-samples/event-router:0.1.0}"
BASE_TAG="event-router-base:bookworm"
CACHE="${ER_IMAGE_CACHE:-$HOME/.cache/event-router/images}"
DOCKER_ROOT="${ER_DOCKER_ROOT:-$HOME/.cache/event-router/docker}"
SOCK="/run/er-docker.sock"
CA_BUNDLE="${ER_BUILD_CA_BUNDLE:-/etc/ssl/certs/ca-certificates.crt}"
SUITE=bookworm
MIRROR="${ER_DEBIAN_MIRROR:-http://deb.debian.org/debian}"
BASE_PKGS="python3,python3-venv,ca-certificates,tzdata"
mkdir -p "$CACHE/current"
start=$(date +%s)
say() { printf '[image %4ss] %s\n' "$(( $(date +%s) - start ))" "$*" >&2; }

# The hash of what goes into the image: base recipe, Dockerfile, package sources.
inputs_hash() {
  ( cd "$REPO"
    echo "$SUITE $MIRROR $BASE_PKGS"
    find Dockerfile .dockerignore pyproject.toml README.md event_router -type f \
         ! -path '*/__pycache__/*' ! -name '*.pyc' -print0 | sort -z | xargs -0 sha256sum
  ) | sha256sum | cut -c1-16
}
base_hash() { echo "$SUITE $MIRROR $BASE_PKGS" | sha256sum | cut -c1-16; }

HASH=$(inputs_hash)
TAR="$CACHE/event-router-$HASH.tar"
if [ "${1:-}" = "--print" ]; then echo "$TAR"; exit 0; fi

import_into_node() {
  # a running test node (hack/testenv up --node) gets the image at once
  local state="${ER_TESTENV_DIR:-$REPO/.testenv}/state.json" sock=""
  [ -s "$state" ] && sock=$(python3 -c 'import json,sys; print(json.load(open(sys.argv[1])).get("containerd_socket") or "")' "$state" 2>/dev/null || true)
  if [ -n "$sock" ] && [ -S "$sock" ]; then
    say "importing into the test node's containerd ($sock)"
    ctr -a "$sock" -n k8s.io images import --no-unpack=false "$TAR" >/dev/null
  fi
}

link_current() { rm -f "$CACHE/current"/event-router-*.tar; ln -sf "$TAR" "$CACHE/current/$(basename "$TAR")"; }

if [ -s "$TAR" ]; then
  say "image $IMAGE cached ($TAR)"; link_current; import_into_node; exit 0
fi

for c in dockerd debootstrap ctr; do
  command -v "$c" >/dev/null || { say "missing $c: apt-get install docker.io debootstrap containerd (make image does)"; exit 1; }
done

# One build at a time.
exec 9>"$CACHE/build.lock"; flock 9

DOCKER=(env DOCKER_HOST="unix://$SOCK" DOCKER_BUILDKIT=1 /usr/bin/docker)
DOCKERD_PID=""
stop_dockerd() {
  if [ -n "$DOCKERD_PID" ]; then
    kill "$DOCKERD_PID" 2>/dev/null || true
    for _ in $(seq 1 100); do kill -0 "$DOCKERD_PID" 2>/dev/null || break; sleep 0.1; done
    say "stopped our dockerd"
  fi
}
trap stop_dockerd EXIT
if ! "${DOCKER[@]}" version >/dev/null 2>&1; then
  mkdir -p "$DOCKER_ROOT"
  say "starting a dockerd for the build (data $DOCKER_ROOT, socket $SOCK; no bridge, no iptables)"
  dockerd --data-root "$DOCKER_ROOT" --exec-root /run/er-docker --pidfile /run/er-docker.pid \
    -H "unix://$SOCK" --iptables=false --ip-forward=false --ip-masq=false --bridge=none \
    >"$CACHE/dockerd.log" 2>&1 &
  DOCKERD_PID=$!
  for _ in $(seq 1 300); do "${DOCKER[@]}" version >/dev/null 2>&1 && break; sleep 0.2; done
  "${DOCKER[@]}" version >/dev/null || { say "dockerd did not start:"; tail -20 "$CACHE/dockerd.log" >&2; exit 1; }
fi

BH=$(base_hash)
if ! "${DOCKER[@]}" image inspect "$BASE_TAG" --format '{{index .Config.Labels "base-hash"}}' 2>/dev/null | grep -qx "$BH"; then
  BASE_TAR="$CACHE/base-$BH.tar.gz"
  if [ ! -s "$BASE_TAR" ]; then
    say "bootstrapping Debian $SUITE minbase + $BASE_PKGS (about 90 s)"
    rootfs=$(mktemp -d /tmp/er-base-XXXXXX)
    debootstrap --variant=minbase --include="$BASE_PKGS" "$SUITE" "$rootfs" "$MIRROR" >"$CACHE/debootstrap.log" 2>&1 \
      || { say "debootstrap failed:"; tail -20 "$CACHE/debootstrap.log" >&2; rm -rf "$rootfs"; exit 1; }
    # no package caches, no apt lists, no docs: a smaller base
    rm -rf "$rootfs"/var/cache/apt/archives/*.deb "$rootfs"/var/lib/apt/lists/* "$rootfs"/usr/share/doc/* \
           "$rootfs"/usr/share/man/* "$rootfs"/usr/share/info/* "$rootfs"/var/log/*
    tar -C "$rootfs" -czf "$BASE_TAR.tmp" . && mv "$BASE_TAR.tmp" "$BASE_TAR"
    rm -rf "$rootfs"
  fi
  say "importing the base as $BASE_TAG"
  "${DOCKER[@]}" import --change "LABEL base-hash=$BH" --change 'CMD ["/bin/bash"]' "$BASE_TAR" "$BASE_TAG" >/dev/null
fi

say "building $IMAGE from the Dockerfile (base $BASE_TAG)"
secret=()
[ -s "$CA_BUNDLE" ] && secret=(--secret "id=build-ca,src=$CA_BUNDLE")
"${DOCKER[@]}" build --network host --progress plain "${secret[@]}" \
  --build-arg "BASE_IMAGE=$BASE_TAG" -t "$IMAGE" "$REPO" >"$CACHE/build.log" 2>&1 \
  || { say "docker build failed:"; tail -30 "$CACHE/build.log" >&2; exit 1; }
"${DOCKER[@]}" save -o "$TAR.tmp" "$IMAGE" && mv "$TAR.tmp" "$TAR"
size=$("${DOCKER[@]}" image inspect "$IMAGE" --format '{{.Size}}')
echo "$(( size / 1048576 ))" >"$TAR.mib"
say "built $IMAGE: $(( size / 1048576 )) MiB uncompressed ($TAR)"
# keep the cache small: older builds go
find "$CACHE" -maxdepth 1 -name 'event-router-*.tar*' ! -name "event-router-$HASH.tar*" -delete
link_current
import_into_node
