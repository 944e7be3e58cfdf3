"""Helpers for tests on the test node (hack/testenv up --node): kubectl, waits, containers."""

from __future__ import annotations

import json
import os
import subprocess
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

REPO = Path(__file__).resolve().parents[2]
IMAGE = "ghcr.io/vmware-samples/event-router:0.1.0"
T = TypeVar("T")


def kubectl_binary() -> str:
    """The kubectl built by hack/build-tools.sh with the other binaries (same version as the
    API server)."""
    bin_dir = os.environ.get("ER_TESTENV_BIN_DIR", "")
    path = Path(bin_dir) / "kubectl"
    if not path.exists():
        raise RuntimeError(f"kubectl not found at {path}: run `bash hack/build-tools.sh node`")
    return str(path)


def kubectl(*args: str, input_: str | None = None, check: bool = True, timeout: float = 120) -> str:
    r = subprocess.run(
        [kubectl_binary(), *args],
        input=input_,
        capture_output=True,
        text=True,
        timeout=timeout,
        env={**os.environ},
    )
    if check and r.returncode != 0:
        raise AssertionError(f"kubectl {' '.join(args)} failed ({r.returncode}):\n{r.stderr}")
    return r.stdout


def kubectl_json(*args: str) -> Any:
    return json.loads(kubectl(*args, "-o", "json"))


def wait_for(probe: Callable[[], T | None], timeout: float, what: str, interval: float = 0.5) -> T:
    deadline = time.monotonic() + timeout
    last: Exception | None = None
    while time.monotonic() < deadline:
        try:
            value = probe()
        except Exception as e:  # a probe may fail while things start: retried until the end
            last, value = e, None
        if value:
            return value
        time.sleep(interval)
    raise AssertionError(
        f"timed out after {timeout:.0f}s waiting for {what}" + (f": {last}" if last else "")
    )


def condition(obj: dict[str, Any], type_: str) -> str | None:
    for c in obj.get("status", {}).get("conditions", []) or []:
        if c.get("type") == type_:
            return str(c.get("status"))
    return None


def ready_pods(namespace: str, selector: str) -> list[dict[str, Any]]:
    pods = kubectl_json("get", "pods", "-n", namespace, "-l", selector)["items"]
    return [
        p
        for p in pods
        if p["status"].get("phase") == "Running"
        and condition(p, "Ready") == "True"
        and not p["metadata"].get("deletionTimestamp")
    ]


def image_in_node(state_dir: Path) -> bool:
    state = json.loads((state_dir / "state.json").read_text())
    sock = state.get("containerd_socket")
    if not sock:
        return False
    r = subprocess.run(
        ["ctr", "-a", sock, "-n", "k8s.io", "images", "ls", "-q"], capture_output=True, text=True
    )
    return IMAGE in r.stdout.split()


def kill_container(
    state_dir: Path, container_id: str, signal: str = "SIGKILL", check: bool = True
) -> None:
    """kill -9 (or another signal) of a pod's container's task (its id as in the pod status,
    ``containerd://<id>``)."""
    state = json.loads((state_dir / "state.json").read_text())
    cid = container_id.split("://", 1)[-1]
    subprocess.run(
        [
            "ctr",
            "-a",
            state["containerd_socket"],
            "-n",
            "k8s.io",
            "tasks",
            "kill",
            "-s",
            signal,
            cid,
        ],
        check=check,
        capture_output=True,
    )
