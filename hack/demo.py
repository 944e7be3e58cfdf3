"""The `make demo` scenario (run by hack/demo.sh once the venv and hack/testenv are up).

vcsim -> RouterConfig (operator, --runtime inprocess) -> a local CloudEvents display:
installs the CRD, starts the display and the operator, applies a sample RouterConfig,
powers a VM off and on, prints the CloudEvents as they arrive and the RouterConfig list as
`kubectl get routerconfigs` shows it. Ctrl-C (or DEMO_SECONDS) tears it all down.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import ssl
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from aiohttp import web
from cloudevents.http import from_http
from kubernetes import config
from kubernetes.client.exceptions import ApiException

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from event_router.operator.devtools import (  # noqa: E402
    OperatorProcess,
    apply,
    condition,
    format_table,
    get_rc,
    install_crd,
    table,
)
from event_router.operator.kube import request  # noqa: E402

NS = os.environ.get("DEMO_NAMESPACE", "event-router-demo")
BOLD, DIM, GREEN, CYAN, RESET = "\033[1m", "\033[2m", "\033[32m", "\033[36m", "\033[0m"
if not sys.stdout.isatty():
    BOLD = DIM = GREEN = CYAN = RESET = ""


def say(msg: str) -> None:
    print(f"{BOLD}==> {msg}{RESET}", flush=True)


class Display:
    """A tiny CloudEvents display (like Knative's event_display) on 127.0.0.1."""

    def __init__(self, host: str = "127.0.0.1") -> None:
        self.host = host
        self.count = 0
        self.subjects: list[str] = []
        self.powered_on = asyncio.Event()
        self.url = ""
        self.port = 0
        self._runner: web.AppRunner | None = None

    async def handle(self, request: web.Request) -> web.Response:
        body = await request.read()
        event = from_http(dict(request.headers), body)
        self.count += 1
        self.subjects.append(str(event.get("subject")))
        if event.get("subject") == "VmPoweredOnEvent":
            self.powered_on.set()
        data = event.data if isinstance(event.data, dict) else {}
        message = data.get("FullFormattedMessage") or data.get("Message") or ""
        print(
            f"{GREEN}[display] CloudEvent #{self.count}{RESET} type={event['type']} "
            f"subject={CYAN}{event.get('subject')}{RESET} id={event['id']}\n"
            f"          source={event['source']} time={event.get('time')}\n"
            f"          {DIM}{json.dumps(message)[:160]}{RESET}",
            flush=True,
        )
        return web.Response(status=202)

    async def start(self) -> None:
        app = web.Application()
        app.router.add_post("/", self.handle)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, self.host, 0)
        await site.start()
        port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
        self.port = port
        self.url = f"http://{self.host}:{port}/"

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()


def routerconfig(display_port: int) -> dict[str, Any]:
    return {
        "apiVersion": "event-router.vmware.com/v1alpha1",
        "kind": "RouterConfig",
        "metadata": {"name": "vcsim-to-display"},
        "spec": {
            "eventProvider": {
                "type": "vcenter",
                "name": "vcsim",
                "vcenter": {
                    "address": os.environ["VCSIM_URL"],
                    "insecureSSL": True,
                    "auth": {"type": "basic_auth", "secretRef": {"name": "vcsim-creds"}},
                },
            },
            "eventProcessor": {
                "type": "knative",
                "name": "display",
                "knative": {
                    "encoding": "structured",
                    "destination": {
                        "uri": {"scheme": "http", "host": "127.0.0.1", "port": display_port}
                    },
                },
            },
            "checkpoint": {"periodSeconds": 1},
        },
    }


def power_cycle_vm() -> str:
    """Power the first VM off (if on) and on again with pyVmomi; returns its name."""
    from pyVim import connect
    from pyVmomi import vim

    url = os.environ["VCSIM_URL"]
    host_port = url.split("://", 1)[1].split("/", 1)[0]
    host, _, port = host_port.partition(":")
    si = connect.SmartConnect(
        host=host,
        port=int(port or 443),
        user=os.environ["VCSIM_USERNAME"],
        pwd=os.environ["VCSIM_PASSWORD"],
        sslContext=ssl._create_unverified_context(),
        disableSslCertValidation=True,
    )
    try:
        view = si.content.viewManager.CreateContainerView(
            si.content.rootFolder, [vim.VirtualMachine], True
        )
        vm = sorted(view.view, key=lambda v: v.name)[0]
        view.Destroy()

        def run(task: Any) -> None:
            while task.info.state not in ("success", "error"):
                time.sleep(0.1)

        if vm.runtime.powerState == "poweredOn":
            print(f"    powering {vm.name} off", flush=True)
            run(vm.PowerOffVM_Task())
        print(f"    powering {vm.name} on", flush=True)
        run(vm.PowerOnVM_Task())
        return str(vm.name)
    finally:
        connect.Disconnect(si)


async def main() -> int:
    kubeconfig = os.environ["KUBECONFIG"]
    api = config.new_client_from_config(config_file=kubeconfig)
    seconds = float(os.environ.get("DEMO_SECONDS") or 0)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    display = Display()
    operator: OperatorProcess | None = None
    logdir = Path(tempfile.mkdtemp(prefix="event-router-demo-"))
    try:
        say("installing the RouterConfig CRD (crds/routerconfigs.event-router.vmware.com.yaml)")
        await asyncio.to_thread(install_crd, api)
        with contextlib.suppress(ApiException):
            request(api, "POST", "/api/v1/namespaces", body={"metadata": {"name": NS}})
        await display.start()
        say(f"CloudEvents display listening on {display.url}")

        say(f"starting event-router-operator --runtime inprocess --namespace {NS}")
        operator = OperatorProcess(
            ["--runtime", "inprocess", "--namespace", NS, "--standalone", "--resync-seconds", "5"],
            logdir / "operator.log",
            kubeconfig=kubeconfig,
        ).start()
        print(f"    operator log: {operator.log_path}", flush=True)

        say("applying a Secret and the RouterConfig vcsim-to-display (vcenter -> display)")
        secret = {
            "apiVersion": "v1",
            "kind": "Secret",
            "metadata": {
                "name": "vcsim-creds",
                # the Secret's consent (docs/operator.md, Security)
                "annotations": {"event-router.vmware.com/routerconfigs": "vcsim-to-display"},
            },
            "type": "kubernetes.io/basic-auth",
            "stringData": {
                "username": os.environ["VCSIM_USERNAME"],
                "password": os.environ["VCSIM_PASSWORD"],
            },
        }
        await asyncio.to_thread(apply, api, secret, NS)
        port = int(display.url.rsplit(":", 1)[1].strip("/"))
        await asyncio.to_thread(apply, api, routerconfig(port), NS)

        def is_ready() -> bool:
            return condition(get_rc(api, NS, "vcsim-to-display"), "Ready").get("status") == "True"

        # poll here, not in one long thread: Ctrl-C must not wait for a 60 s timeout
        deadline = loop.time() + 60
        while not await asyncio.to_thread(is_ready):
            if stop.is_set():
                return 0
            if loop.time() > deadline:
                say(f"RouterConfig not Ready within 60 s; see {operator.log_path}")
                return 1
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), 0.5)
        say("kubectl get routerconfigs")
        print(format_table(await asyncio.to_thread(table, api, NS)), flush=True)

        say("powering a VM on in vcsim (pyVmomi)")
        vm = await asyncio.to_thread(power_cycle_vm)
        arrived = asyncio.ensure_future(display.powered_on.wait())
        stopped = asyncio.ensure_future(stop.wait())
        await asyncio.wait({arrived, stopped}, timeout=30, return_when=asyncio.FIRST_COMPLETED)
        arrived.cancel()
        stopped.cancel()
        if stop.is_set():
            return 0
        if not display.powered_on.is_set():
            say(f"no VmPoweredOnEvent for {vm} within 30 s; see {operator.log_path}")
            return 1
        say(f"VmPoweredOnEvent of {vm} arrived as a CloudEvent")
        say("kubectl get routerconfigs")
        print(format_table(await asyncio.to_thread(table, api, NS)), flush=True)

        if seconds:
            say(f"running for {seconds:.0f} s more (DEMO_SECONDS), Ctrl-C to stop earlier")
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), seconds)
        else:
            say("running; power VMs on and off in vcsim to see more events. Ctrl-C to stop")
            await stop.wait()
        return 0
    finally:
        say("tearing down")
        with contextlib.suppress(Exception):
            request(
                api,
                "DELETE",
                f"/apis/event-router.vmware.com/v1alpha1/namespaces/{NS}/routerconfigs/vcsim-to-display",
            )
        if operator is not None:
            await asyncio.to_thread(operator.stop)
        await display.stop()
        with contextlib.suppress(Exception):
            request(api, "DELETE", f"/api/v1/namespaces/{NS}")
        api.close()


if __name__ == "__main__":
    sys.exit(asyncio.run(main()))
