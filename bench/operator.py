"""Benchmark: 100 RouterConfigs applied at once -> seconds until all are Ready; operator RSS.

On the real test control plane (hack/testenv: kube-apiserver + etcd +
kube-controller-manager), the operator as a subprocess (``event-router-operator``):

1. runtime ``inprocess`` (the headline figures): 100 RouterConfigs (webhook provider on its
   own 127.0.0.1 port -> knative URI) created concurrently; ``seconds_to_ready_100`` is the
   time from the first create until every RouterConfig's ``Ready`` condition is True (each
   router really started inside the operator); ``rss_mib`` is the operator's VmRSS then
   (all 100 routers running), ``rss_peak_mib`` its VmHWM.
2. runtime ``deployment``: 100 vCenter RouterConfigs (Secret references, URI sink) ->
   seconds until every one is ``Deployed`` (config Secret, ServiceAccount, Role,
   RoleBinding, Deployment applied and status written). Ready would need a kubelet, which
   the test control plane does not have.

Progress goes to stderr; the last stdout line is one JSON object of figures.

    .venv/bin/python -m bench.operator [--count 100]
"""

from __future__ import annotations

import argparse
import json
import os
import secrets
import shlex
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from kubernetes import config

from bench._common import free_ports, log, rss_mib
from event_router.operator.devtools import (
    OperatorProcess,
    create_rc,
    install_crd,
    rc_path,
    webhook_knative_spec,
)
from event_router.operator.kube import request

REPO = Path(__file__).resolve().parent.parent


def testenv_up() -> dict[str, str]:
    testenv = REPO / "hack" / "testenv"
    lease = str(os.getpid())
    log("hack/testenv up (reused when already running)")
    r = subprocess.run(
        [sys.executable, str(testenv), "up", "--lease", lease, "--no-build"],
        capture_output=True,
        text=True,
    )
    if r.returncode != 0:
        raise SystemExit(f"hack/testenv up failed:\n{r.stderr[-3000:]}")
    env: dict[str, str] = {}
    for line in (REPO / ".testenv" / "env").read_text().splitlines():
        if line.startswith("export "):
            k, _, v = line[7:].partition("=")
            env[k] = shlex.split(v)[0]
    return env


def testenv_release() -> None:
    subprocess.run(
        [sys.executable, str(REPO / "hack" / "testenv"), "release", str(os.getpid())],
        capture_output=True,
    )


def wait_all(api: Any, ns: str, count: int, cond: str, timeout: float) -> float:
    start = time.monotonic()
    last = -1
    while True:
        items = request(api, "GET", rc_path(ns))["items"]
        done = sum(
            1
            for it in items
            if any(
                c.get("type") == cond and c.get("status") == "True"
                for c in (it.get("status") or {}).get("conditions") or []
            )
        )
        if done != last:
            log(f"  {done}/{count} {cond} after {time.monotonic() - start:.1f} s")
            last = done
        if done >= count:
            return time.monotonic()
        if time.monotonic() - start > timeout:
            raise SystemExit(f"only {done}/{count} {cond} after {timeout:.0f} s")
        time.sleep(0.25)


def webhook_rc(i: int, port: int) -> dict[str, Any]:
    return {
        "apiVersion": "event-router.vmware.com/v1alpha1",
        "kind": "RouterConfig",
        "metadata": {"name": f"hook-{i:03d}"},
        "spec": webhook_knative_spec(port, "127.0.0.1", 9),
    }


def vcenter_rc(i: int) -> dict[str, Any]:
    return {
        "apiVersion": "event-router.vmware.com/v1alpha1",
        "kind": "RouterConfig",
        "metadata": {"name": f"vc-{i:03d}"},
        "spec": {
            "eventProvider": {
                "type": "vcenter",
                "name": "vc",
                "vcenter": {
                    "address": f"https://vc-{i:03d}.example.com/sdk",
                    "auth": {"type": "basic_auth", "secretRef": {"name": "vc-creds"}},
                },
            },
            "eventProcessor": {
                "type": "knative",
                "name": "sink",
                "knative": {
                    "destination": {"uri": {"scheme": "http", "host": "display.example.com"}}
                },
            },
        },
    }


def run_phase(
    api: Any,
    env: dict[str, str],
    runtime: str,
    bodies: list[dict[str, Any]],
    cond: str,
    logdir: Path,
    setup: list[dict[str, Any]] | None = None,
) -> dict[str, float]:
    ns = f"bench-op-{runtime}-{secrets.token_hex(3)}"
    request(api, "POST", "/api/v1/namespaces", body={"metadata": {"name": ns}})
    for obj in setup or []:
        request(api, "POST", f"/api/v1/namespaces/{ns}/{obj['kind'].lower()}s", body=obj)
    op = OperatorProcess(
        ["--runtime", runtime, "--namespace", ns, "--standalone", "--resync-seconds", "30"],
        logdir / f"operator-{runtime}.log",
        kubeconfig=env["KUBECONFIG"],
    ).start()
    try:
        time.sleep(3)  # operator startup (imports, kopf watches); not part of the figure
        base_rss = round(rss_mib(op.pid)[0], 1)
        log(
            f"{runtime}: operator up (RSS {base_rss} MiB); "
            f"creating {len(bodies)} RouterConfigs at once"
        )
        t0 = time.monotonic()
        with ThreadPoolExecutor(16) as pool:
            list(pool.map(lambda b: create_rc(api, ns, b), bodies))
        t1 = wait_all(api, ns, len(bodies), cond, 120)
        rss, peak = (round(v, 1) for v in rss_mib(op.pid))
        log(f"{runtime}: all {cond} in {t1 - t0:.2f} s; operator RSS {rss} MiB (peak {peak})")
        return {
            "seconds": round(t1 - t0, 2),
            "rss_mib": rss,
            "rss_peak_mib": peak,
            "rss_idle_mib": base_rss,
        }
    finally:
        op.stop(30)
        request(api, "DELETE", f"/api/v1/namespaces/{ns}")


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="bench.operator")
    p.add_argument("--count", type=int, default=100)
    args = p.parse_args(argv)
    env = testenv_up()
    logdir = Path(tempfile.mkdtemp(prefix="bench-operator-"))
    log(f"operator logs in {logdir}")
    try:
        api = config.new_client_from_config(config_file=env["KUBECONFIG"])
        install_crd(api)
        ports = free_ports(args.count)
        inproc = run_phase(
            api,
            env,
            "inprocess",
            [webhook_rc(i, ports[i]) for i in range(args.count)],
            "Ready",
            logdir,
        )
        secret = {
            "apiVersion": "v1",
            "kind": "Secret",
            "metadata": {
                "name": "vc-creds",
                "annotations": {"event-router.vmware.com/routerconfigs": "*"},
            },
            "type": "kubernetes.io/basic-auth",
            "stringData": {"username": "u", "password": "p"},
        }
        deploy = run_phase(
            api,
            env,
            "deployment",
            [vcenter_rc(i) for i in range(args.count)],
            "Deployed",
            logdir,
            setup=[secret],
        )
        api.close()
    finally:
        testenv_release()
    figures = {
        "count": args.count,
        f"seconds_to_ready_{args.count}": inproc["seconds"],
        "rss_mib": inproc["rss_mib"],
        "rss_peak_mib": inproc["rss_peak_mib"],
        "rss_idle_mib": inproc["rss_idle_mib"],
        "runtime": "inprocess",
        f"deployment_seconds_to_deployed_{args.count}": deploy["seconds"],
        "deployment_rss_mib": deploy["rss_mib"],
        "targets": {"seconds_to_ready_100": 30, "rss_mib": 200},
    }
    print(json.dumps(figures))
    return 0


if __name__ == "__main__":
    sys.exit(main())
