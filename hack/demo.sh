#!/usr/bin/env bash
# make demo: vcsim -> RouterConfig (operator, in-process runtime) -> a local CloudEvents display.
#   1. the venv (make install)          2. the test control plane + vcsim (hack/testenv up)
#   3. the CRD, the operator, a RouterConfig, a VM powered on, the CloudEvent, Ready=True
# Ctrl-C tears everything down. DEMO_SECONDS=N stops by itself after N more seconds (CI).
set -euo pipefail
cd "$(dirname "$0")/.."

say() { printf '\033[1m==> %s\033[0m\n' "$*"; }

say "python venv (.venv, pip install -e '.[dev]')"
make --no-print-directory install

say "test control plane and vcsim (hack/testenv up; the first run builds the Go tools, about 6 min on 2 cores)"
lease=$$
build_flag=()
[ "${DEMO_NO_BUILD:-}" = 1 ] && build_flag=(--no-build)
.venv/bin/python hack/testenv up --lease "$lease" "${build_flag[@]}"
release() { .venv/bin/python hack/testenv release "$lease" >/dev/null 2>&1 || true; }
trap release EXIT

set -a
# KUBECONFIG, VCSIM_URL, VCSIM_USERNAME, VCSIM_PASSWORD
. .testenv/env
set +a

# the demo's own Python process handles Ctrl-C (SIGINT) and tears down what it started
.venv/bin/python hack/demo.py
