#!/usr/bin/env bash
# make demo-cluster: the `make demo` story with the deployment runtime on the test node:
#   1. the venv, the Go tools and the image (make install tools image)
#   2. the test control plane + node + vcsim (hack/testenv up --node; root)
#   3. kubectl apply -k manifests/ (the operator as a pod), a RouterConfig, its router pod,
#      `kubectl get pods,routerconfigs`, a VM powered on, the CloudEvent at a display
# Ctrl-C tears everything down. DEMO_SECONDS=N stops by itself after N more seconds (CI).
set -euo pipefail
cd "$(dirname "$0")/.."
say() { printf '\033[1m==> %s\033[0m\n' "$*"; }

say "test control plane, node and vcsim (hack/testenv up --node)"
lease=$$
.venv/bin/python hack/testenv up --node --lease "$lease"
release() { .venv/bin/python hack/testenv release "$lease" >/dev/null 2>&1 || true; }
trap release EXIT
say "the image in the node (hack/image.sh; cached by the hash of its inputs)"
bash hack/image.sh
set -a
. .testenv/env   # KUBECONFIG, VCSIM_URL, TESTENV_HOST_IP, ...
set +a
export PATH="$ER_TESTENV_BIN_DIR:$PATH"   # the kubectl built with the API server
.venv/bin/python hack/demo_cluster.py
