"""The `make demo-cluster` scenario (run by hack/demo-cluster.sh once the node is up).

`kubectl apply -k manifests/` runs the operator as a pod; a RouterConfig (vcsim -> a
CloudEvents display that this script serves on TESTENV_HOST_IP) becomes a router pod; a VM
is powered off and on; the CloudEvent arrives. Ctrl-C (or DEMO_SECONDS) tears it all down.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "hack"))

from demo import Display, power_cycle_vm, say  # noqa: E402

NS = os.environ.get("DEMO_NAMESPACE", "event-router-demo")


def kubectl(*args: str, input_: str | None = None, check: bool = True) -> str:
    r = subprocess.run(["kubectl", *args], input=input_, capture_output=True, text=True)
    if check and r.returncode != 0:
        raise SystemExit(f"kubectl {' '.join(args)}: {r.stderr.strip()}")
    return r.stdout


def show(*args: str) -> None:
    print(f"$ kubectl {' '.join(args)}\n{kubectl(*args)}", flush=True)


def wait(what: str, probe_args: list[str], timeout: float = 180) -> None:
    t = time.monotonic()
    while subprocess.run(["kubectl", *probe_args], capture_output=True).returncode != 0:
        if time.monotonic() - t > timeout:
            raise SystemExit(f"timed out waiting for {what}")
        time.sleep(1)
    say(f"{what} ({time.monotonic() - t:.0f} s)")


async def main() -> int:
    display = Display(host=os.environ["TESTENV_HOST_IP"])
    await display.start()
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    loop.add_signal_handler(signal.SIGINT, stop.set)
    loop.add_signal_handler(signal.SIGTERM, stop.set)
    try:
        say("kubectl apply -k manifests/  (CRD, RBAC, the operator Deployment)")
        print(kubectl("apply", "-k", str(REPO / "manifests")), end="")
        wait("operator Available", ["wait", "--for=condition=Available", "--timeout=5s",
             "-n", "event-router-system", "deployment/event-router-operator"])  # fmt: skip
        kubectl("create", "namespace", NS, check=False)
        kubectl("create", "secret", "generic", "vcsim-creds", "-n", NS,
                f"--from-literal=username={os.environ['VCSIM_USERNAME']}",
                f"--from-literal=password={os.environ['VCSIM_PASSWORD']}", check=False)  # fmt: skip
        # the Secret's consent: RouterConfig vcsim-to-display may use it (docs/operator.md)
        kubectl("annotate", "--overwrite", "secret", "vcsim-creds", "-n", NS,
                "event-router.vmware.com/routerconfigs=vcsim-to-display")  # fmt: skip
        rc = {
            "apiVersion": "event-router.vmware.com/v1alpha1",
            "kind": "RouterConfig",
            "metadata": {"name": "vcsim-to-display", "namespace": NS},
            "spec": {
                "eventProvider": {"type": "vcenter", "name": "vcsim", "vcenter": {
                    "address": os.environ["VCSIM_URL"], "insecureSSL": True,
                    "auth": {"type": "basic_auth", "secretRef": {"name": "vcsim-creds"}}}},
                "eventProcessor": {"type": "knative", "name": "display", "knative": {
                    "encoding": "structured", "destination": {"uri": {
                        "scheme": "http", "host": display.host, "port": display.port}}}},
                "checkpoint": {"periodSeconds": 1},
            },
        }  # fmt: skip
        say(f"a RouterConfig: vcsim -> {display.url}")
        print(kubectl("apply", "-f", "-", input_=json.dumps(rc)), end="")
        wait("RouterConfig Ready", ["wait", "--for=condition=Ready", "--timeout=5s", "-n", NS,
             "routerconfig/vcsim-to-display"])  # fmt: skip
        show("get", "pods,routerconfigs", "-n", NS, "-o", "wide")
        say("powering a VM off and on in vcsim")
        vm = await asyncio.to_thread(power_cycle_vm)
        await asyncio.wait_for(display.powered_on.wait(), 60)
        say(f"the VmPoweredOnEvent of {vm} arrived from the router pod")
        seconds = os.environ.get("DEMO_SECONDS")
        if seconds is not None:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), float(seconds))
        else:
            say("Ctrl-C to tear down")
            await stop.wait()
        return 0
    finally:
        say("tearing down")
        kubectl("delete", "namespace", NS, "--wait=true", "--timeout=120s", check=False)
        kubectl("delete", "-n", "event-router-system", "deployment", "event-router-operator",
                "--wait=true", "--timeout=120s", check=False)  # fmt: skip
        await display.stop()


if __name__ == "__main__":
    sys.exit(asyncio.run(main()))
