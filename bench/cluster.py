"""Router pods on the test node: from `kubectl apply` of a RouterConfig to its router pod
Ready, for one and for 20 at once; the router pod's memory; the image's size.

    python -m bench.cluster        (needs root: it brings up hack/testenv up --node)

The operator runs as a pod from `kubectl apply -k manifests/` (the deployment runtime);
the RouterConfigs are webhook -> Knative URI routers (no vCenter load: this measures the
operator, the scheduler, the kubelet and the router's start). Targets: one in <= 10 s,
20 in <= 60 s on 2 cores. Prints one JSON object of figures last.
"""

from __future__ import annotations

import json
import os
import shlex
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from bench._common import log
from tests.support.cluster import kubectl, ready_pods, wait_for

REPO = Path(__file__).resolve().parent.parent
STATE_DIR = REPO / ".testenv"
OPERATOR_NS = "event-router-system"
LABEL = "event-router.vmware.com/routerconfig"


def testenv_up() -> None:
    lease = str(os.getpid())
    log("hack/testenv up --node (reused when already running)")
    r = subprocess.run(
        [sys.executable, str(REPO / "hack" / "testenv"), "up", "--node", "--lease", lease],
        capture_output=True,
        text=True,
    )
    if r.returncode != 0:
        raise SystemExit(f"hack/testenv up --node failed:\n{r.stderr[-3000:]}")
    for line in (STATE_DIR / "env").read_text().splitlines():
        if line.startswith("export "):
            k, _, v = line[7:].partition("=")
            os.environ[k] = shlex.split(v)[0]


def rc(name: str) -> dict[str, Any]:
    return {
        "apiVersion": "event-router.vmware.com/v1alpha1",
        "kind": "RouterConfig",
        "metadata": {"name": name},
        "spec": {
            "eventProvider": {
                "type": "webhook",
                "name": "hook",
                "webhook": {"bindAddress": "0.0.0.0:8080", "path": "/webhook"},
            },
            "eventProcessor": {
                "type": "knative",
                "name": "sink",
                "knative": {
                    "destination": {
                        "uri": {"scheme": "http", "host": os.environ["TESTENV_HOST_IP"], "port": 9}
                    }
                },
            },
        },
    }


def apply_and_wait(ns: str, names: list[str], timeout: float) -> float:
    items = {"apiVersion": "v1", "kind": "List", "items": [rc(n) for n in names]}
    t0 = time.monotonic()
    kubectl("apply", "-n", ns, "-f", "-", input_=json.dumps(items))
    last = -1
    while True:
        ready = {p["metadata"]["labels"].get(LABEL) for p in ready_pods(ns, LABEL)}
        done = sum(1 for n in names if n in ready)
        if done != last:
            log(f"  {done}/{len(names)} router pods Ready after {time.monotonic() - t0:.1f} s")
            last = done
        if done == len(names):
            return time.monotonic() - t0
        if time.monotonic() - t0 > timeout:
            raise SystemExit(f"only {done}/{len(names)} router pods Ready after {timeout:.0f} s")
        time.sleep(0.25)


def pod_rss_mib(ns: str, pod: dict[str, Any]) -> float:
    """Peak RSS of the router's container process (VmHWM of its PID on the host)."""
    state = json.loads((STATE_DIR / "state.json").read_text())
    cid = pod["status"]["containerStatuses"][0]["containerID"].split("://", 1)[1]
    out = subprocess.run(
        ["ctr", "-a", state["containerd_socket"], "-n", "k8s.io", "tasks", "ls"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    pid = next(int(line.split()[1]) for line in out.splitlines() if line.startswith(cid))
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    raise SystemExit(f"no VmHWM for pid {pid}")


def main() -> int:
    testenv_up()
    try:
        subprocess.run(["bash", str(REPO / "hack" / "image.sh")], check=True)
        mib_file = Path(
            subprocess.run(
                ["bash", str(REPO / "hack" / "image.sh"), "--print"],
                capture_output=True,
                text=True,
                check=True,
            ).stdout.strip()
            + ".mib"
        )
        image_mib = int(mib_file.read_text()) if mib_file.exists() else None
        log("kubectl apply -k manifests/")
        kubectl("apply", "-k", str(REPO / "manifests"))
        wait_for(
            lambda: ready_pods(OPERATOR_NS, "app.kubernetes.io/name=event-router-operator"),
            180,
            "the operator pod",
        )
        ns = f"bench-cluster-{os.getpid()}"
        kubectl("create", "namespace", ns)
        try:
            log("one RouterConfig")
            one = apply_and_wait(ns, ["one"], 120)
            rss = pod_rss_mib(ns, ready_pods(ns, f"{LABEL}=one")[0])
            log("20 RouterConfigs at once")
            twenty = apply_and_wait(ns, [f"r{i:02d}" for i in range(20)], 300)
        finally:
            kubectl("delete", "namespace", ns, "--wait=true", "--timeout=180s", check=False)
    finally:
        kubectl("delete", "-k", str(REPO / "manifests"), "--wait=true", "--timeout=120s",
                check=False)  # fmt: skip
        subprocess.run(
            [sys.executable, str(REPO / "hack" / "testenv"), "release", str(os.getpid())],
            capture_output=True,
        )
    figures = {
        "seconds_to_pod_ready": round(one, 1),
        "seconds_to_ready_20": round(twenty, 1),
        "router_pod_rss_mib": round(rss, 1),
        "image_mib": image_mib,
        "targets": {"seconds_to_pod_ready": 10, "seconds_to_ready_20": 60},
    }
    print(json.dumps(figures))
    return 0


if __name__ == "__main__":
    sys.exit(main())
