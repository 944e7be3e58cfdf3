#!/usr/bin/env bash
# The Debian packages that `make test`, `make demo` and `make image` need (the test node, the
# image build, promtool), installed when missing: a no-op on a machine that has them all.
# Run by the Makefile's `deps` target; root (or sudo) is needed only when something is missing.
set -euo pipefail
export DEBIAN_FRONTEND=noninteractive
start=$(date +%s)
say() { printf '[deps %4ss] %s\n' "$(( $(date +%s) - start ))" "$*" >&2; }

SUDO=""
if [ "$(id -u)" -ne 0 ]; then SUDO="sudo"; fi
as_root() {
  if [ -n "$SUDO" ] && ! command -v sudo >/dev/null 2>&1; then
    say "need root for: $* (run .ci/run as root, or install sudo)"; exit 1
  fi
  $SUDO "$@"
}

# --- apt packages, only the missing ones -------------------------------------------------
pkgs=()
have_cmd() { command -v "$1" >/dev/null 2>&1; }
have_cmd python3 || pkgs+=(python3)
have_cmd python3 && python3 -c 'import venv, ensurepip' 2>/dev/null || pkgs+=(python3-venv)
have_cmd openssl || pkgs+=(openssl)
have_cmd curl    || pkgs+=(curl)
have_cmd make    || pkgs+=(make)
have_cmd git     || pkgs+=(git)
have_cmd flock   || pkgs+=(util-linux)
have_cmd pgrep   || pkgs+=(procps)
[ -e /etc/ssl/certs/ca-certificates.crt ] || pkgs+=(ca-certificates)
# the test node and the image build (hack/testenv up --node, hack/image.sh)
have_cmd dockerd     || pkgs+=(docker.io)
have_cmd containerd  || pkgs+=(containerd)
have_cmd runc        || pkgs+=(runc)
have_cmd debootstrap || pkgs+=(debootstrap)
have_cmd iptables    || pkgs+=(iptables)
have_cmd ip          || pkgs+=(iproute2)
have_cmd promtool    || pkgs+=(prometheus)
[ -x /usr/lib/cni/ptp ] || pkgs+=(containernetworking-plugins)
if [ ${#pkgs[@]} -gt 0 ]; then
  say "apt-get install ${pkgs[*]}"
  as_root apt-get update -qq
  as_root apt-get install -y -qq --no-install-recommends "${pkgs[@]}"
else
  say "apt packages: all present"
fi

