"""`make demo`'s scenario (hack/demo.py, what hack/demo.sh runs once the venv and
hack/testenv are up) on the real test environment, as a person runs it: the CloudEvent of
the powered-on VM arrives, `kubectl get routerconfigs` shows Ready=True, and Ctrl-C tears
everything down (RouterConfig, operator, namespace) with exit status 0."""

from __future__ import annotations

import contextlib
import os
import secrets
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from kubernetes import client

from event_router.operator.devtools import wait_for
from event_router.operator.kube import request

pytestmark = [pytest.mark.integration, pytest.mark.timeout(180)]

REPO = Path(__file__).resolve().parents[2]


def operators_for(namespace: str) -> list[int]:
    """PIDs of event-router-operator processes watching ``namespace``."""
    pids = []
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        try:
            args = (proc / "cmdline").read_bytes().split(b"\0")
        except OSError:
            continue
        if any(a.endswith(b"event-router-operator") for a in args) and namespace.encode() in args:
            pids.append(int(proc.name))
    return pids


def test_demo_shows_the_event_and_ready_then_ctrl_c_tears_down(
    k8s_client: client.ApiClient, testenv: Any, tmp_path: Path
) -> None:
    ns = f"t-demo-{secrets.token_hex(3)}"
    out_path = tmp_path / "demo.out"
    env = {**os.environ, "DEMO_NAMESPACE": ns, "TMPDIR": str(tmp_path)}
    env.pop("DEMO_SECONDS", None)
    with out_path.open("wb") as out:
        demo = subprocess.Popen(
            [sys.executable, str(REPO / "hack" / "demo.py")],
            stdout=out,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            env=env,
        )
    try:

        def output() -> str:
            return out_path.read_text(errors="replace")

        def running() -> bool:
            if demo.poll() is not None:
                raise AssertionError(f"demo exited with {demo.returncode}:\n{output()}")
            return "Ctrl-C to stop" in output()

        wait_for(running, 120, "the demo running")
        text = output()
        assert "VmPoweredOnEvent" in text and "arrived as a CloudEvent" in text, text
        # the table printed after the event: the RouterConfig Ready, its router running
        row = [ln for ln in text.splitlines() if ln.startswith("vcsim-to-display")][-1]
        assert " True " in f"{row} " and "RouterRunning" in row, text

        assert len(operators_for(ns)) == 1  # what the teardown must stop
        demo.send_signal(signal.SIGINT)  # Ctrl-C
        assert demo.wait(60) == 0, output()
        assert "tearing down" in output()
        # torn down: no RouterConfig (the namespace goes, or is going)
        ns_obj = request(k8s_client, "GET", "/api/v1/namespaces")["items"]
        mine = [n for n in ns_obj if n["metadata"]["name"] == ns]
        assert not mine or mine[0]["metadata"].get("deletionTimestamp"), mine
        # the operator it started is gone, and it stopped cleanly
        assert operators_for(ns) == []
        (log_dir,) = tmp_path.glob("event-router-demo-*")
        log = (log_dir / "operator.log").read_text(errors="replace")
        assert "Traceback" not in log, log[-4000:]
    finally:
        if demo.poll() is None:
            demo.kill()
            demo.wait(10)
        sys.stderr.write(out_path.read_text(errors="replace")[-4000:])
        with contextlib.suppress(client.ApiException):
            request(k8s_client, "DELETE", f"/api/v1/namespaces/{ns}")


def test_demo_ctrl_c_while_starting_tears_down_at_once(
    k8s_client: client.ApiClient, testenv: Any, tmp_path: Path
) -> None:
    """Ctrl-C before the RouterConfig is Ready: no waiting out a timeout, nothing left."""
    ns = f"t-demo-{secrets.token_hex(3)}"
    out_path = tmp_path / "demo.out"
    env = {**os.environ, "DEMO_NAMESPACE": ns, "TMPDIR": str(tmp_path)}
    with out_path.open("wb") as out:
        demo = subprocess.Popen(
            [sys.executable, str(REPO / "hack" / "demo.py")],
            stdout=out,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            env=env,
        )
    try:
        wait_for(
            lambda: "applying a Secret and the RouterConfig" in out_path.read_text(),
            60,
            "the demo applying its RouterConfig",
            0.05,
        )
        demo.send_signal(signal.SIGINT)
        assert demo.wait(25) == 0, out_path.read_text()
        assert "tearing down" in out_path.read_text()
        assert operators_for(ns) == []
    finally:
        if demo.poll() is None:
            demo.kill()
            demo.wait(10)
        with contextlib.suppress(client.ApiException):
            request(k8s_client, "DELETE", f"/api/v1/namespaces/{ns}")


def test_make_demo_runs_the_scenario_and_stops_by_itself(
    k8s_client: client.ApiClient, testenv: Any, tmp_path: Path
) -> None:
    """The README's first command as typed (`make demo`), with DEMO_SECONDS so it stops by
    itself: venv step, `hack/testenv up` joining the running environment, the event and
    Ready=True, teardown, exit 0, and no operator left behind."""
    ns = f"t-demo-{secrets.token_hex(3)}"
    env = {
        **os.environ,
        "DEMO_NAMESPACE": ns,
        "DEMO_SECONDS": "2",
        "DEMO_NO_BUILD": "1",
        "TMPDIR": str(tmp_path),
    }
    env.pop("MAKEFLAGS", None)
    env.pop("MAKELEVEL", None)
    try:
        done = subprocess.run(
            ["make", "--no-print-directory", "demo"],
            cwd=REPO,
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            timeout=150,
        )
        text = done.stdout.decode(errors="replace")
        assert done.returncode == 0, text[-4000:]
        assert "python venv (.venv" in text and "test environment up" in text, text[-4000:]
        assert "VmPoweredOnEvent of" in text and "arrived as a CloudEvent" in text, text[-4000:]
        row = [ln for ln in text.splitlines() if ln.startswith("vcsim-to-display")][-1]
        assert " True " in f"{row} " and "RouterRunning" in row, text[-4000:]
        assert "tearing down" in text
        assert operators_for(ns) == []
        # the environment the test session holds is still up (the demo only released its own
        # lease)
        assert request(k8s_client, "GET", "/api/v1/namespaces/default")["metadata"]["name"]
    finally:
        with contextlib.suppress(client.ApiException):
            request(k8s_client, "DELETE", f"/api/v1/namespaces/{ns}")
