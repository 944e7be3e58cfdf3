"""Shared pieces of hack/testenv: paths, state, processes, probes, logging."""

import contextlib
import fcntl
import json
import os
import shlex
import signal
import socket
import ssl
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent.parent
STATE_DIR = Path(os.environ.get("ER_TESTENV_DIR") or REPO / ".testenv").resolve()
CACHE = Path(
    os.environ.get("ER_TESTENV_CACHE") or Path.home() / ".cache" / "event-router" / "testenv"
)
BIN = CACHE / "bin"
BUILD_SCRIPT = REPO / "hack" / "build-tools.sh"
IMAGE_CACHE = Path(
    os.environ.get("ER_IMAGE_CACHE") or Path.home() / ".cache" / "event-router" / "images"
)
TOOLS = ("etcd", "kube-apiserver", "kube-controller-manager", "vcsim")
NODE_TOOLS = ("kube-scheduler", "kubelet", "kube-proxy", "kubectl", "coredns", "pause")

VCSIM_USERNAME = os.environ.get("ER_TESTENV_VCSIM_USERNAME", "testenv-user")
VCSIM_PASSWORD = os.environ.get("ER_TESTENV_VCSIM_PASSWORD", "testenv-password")
# Test addresses (RFC 2544's 198.18.0.0/15, outside every private range a user may route):
# the host's own test address (on lo), the pods' range and the Services' range.
HOST_IP = os.environ.get("ER_TESTENV_HOST_IP", "198.18.0.1")
HOST_IFACE = "lo:er-testenv"  # the label of HOST_IP on lo
POD_CIDR = os.environ.get("ER_TESTENV_POD_CIDR", "198.18.128.0/24")
SERVICE_CIDR = os.environ.get("ER_TESTENV_SERVICE_CIDR", "198.19.0.0/24")
SERVICE_IP = SERVICE_CIDR.rsplit(".", 1)[0] + ".1"  # the `kubernetes` Service
NODE_NAME = "er-testenv-node"
START_TIMEOUT = float(os.environ.get("ER_TESTENV_START_TIMEOUT", "120"))

PKI = STATE_DIR / "pki"
LOGS = STATE_DIR / "logs"
LEASES = STATE_DIR / "leases"
STATE_FILE = STATE_DIR / "state.json"
KUBECONFIG = STATE_DIR / "kubeconfig"
ENV_FILE = STATE_DIR / "env"
PINNED = STATE_DIR / "pinned"

T0 = time.monotonic()


def say(msg: str) -> None:
    print(f"[testenv {time.monotonic() - T0:6.1f}s] {msg}", file=sys.stderr, flush=True)


class ComponentError(Exception):
    def __init__(self, component: str, message: str, log: Path | None = None) -> None:
        super().__init__(f"{component}: {message}")
        self.component = component
        self.message = message
        self.log = log


# ---------------------------------------------------------------- processes and state


def proc_start_time(pid: int) -> str | None:
    """Start time of pid (clock ticks since boot), so a recycled pid is never mistaken for ours."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    fields = stat[stat.rindex(")") + 2 :].split()
    if fields[0] in ("Z", "X"):  # zombie or dead: not running
        return None
    return fields[19]


def alive(pid: int, start_time: str | None) -> bool:
    return start_time is not None and proc_start_time(pid) == start_time


def load_state() -> dict[str, Any] | None:
    try:
        data: dict[str, Any] = json.loads(STATE_FILE.read_text())
        return data
    except (OSError, ValueError):
        return None


def save_state(state: dict[str, Any]) -> None:
    tmp = STATE_FILE.with_suffix(".tmp")
    tmp.write_text(json.dumps(state, indent=2))
    tmp.replace(STATE_FILE)


@contextlib.contextmanager
def locked() -> Iterator[None]:
    """Serialise up/down/release across processes (several engineers, several pytest runs)."""
    STATE_DIR.mkdir(parents=True, exist_ok=True)
    with open(STATE_DIR / "lock", "w") as f:
        try:
            fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            say(f"waiting for another hack/testenv holding {STATE_DIR / 'lock'}")
            fcntl.flock(f, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((host, 0))
        return int(s.getsockname()[1])


def spawn(state: dict[str, Any], name: str, argv: list[str], cwd: Path) -> subprocess.Popen[bytes]:
    log = LOGS / f"{name}.log"
    with open(log, "ab") as out:
        out.write(f"\n=== {time.strftime('%H:%M:%S')} {shlex.join(argv)}\n".encode())
        out.flush()
        proc = subprocess.Popen(
            argv,
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=subprocess.STDOUT,
            cwd=cwd,
            start_new_session=True,  # survives `up`; stopped by `down` via its pid
        )
    state["components"][name] = {
        "pid": proc.pid,
        "start_time": proc_start_time(proc.pid),
        "log": str(log),
    }
    save_state(state)
    return proc


def stop_pid(name: str, pid: int, start_time: str | None, timeout: float = 10.0) -> None:
    if not alive(pid, start_time):
        return
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if not alive(pid, start_time):
            say(f"stopped {name} (pid {pid})")
            return
        time.sleep(0.1)
    say(f"{name} (pid {pid}) ignored SIGTERM for {timeout:.0f}s; sending SIGKILL")
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signal.SIGKILL)


def tail(path: Path | None, lines: int = 25) -> str:
    if path is None:
        return ""
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return ""


# ---------------------------------------------------------------- HTTP probes


def _get(url: str, ctx: ssl.SSLContext | None = None, timeout: float = 2.0) -> tuple[int, str]:
    try:
        with urllib.request.urlopen(url, context=ctx, timeout=timeout) as r:
            return r.status, r.read().decode(errors="replace")
    except urllib.error.HTTPError as e:
        return e.code, e.read().decode(errors="replace")


def admin_ssl() -> ssl.SSLContext:
    ctx = ssl.create_default_context(cafile=str(PKI / "ca.crt"))
    ctx.load_cert_chain(str(PKI / "admin.crt"), str(PKI / "admin.key"))
    return ctx


def insecure_ssl() -> ssl.SSLContext:
    ctx = ssl.create_default_context()
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    return ctx


def wait_ready(
    name: str,
    proc: subprocess.Popen[bytes],
    probe: Callable[[], bool],
    timeout: float = START_TIMEOUT,
) -> None:
    log = LOGS / f"{name}.log"
    t = time.monotonic()
    last_note = t
    while True:
        code = proc.poll()
        if code is not None:
            raise ComponentError(name, f"exited with code {code} while starting", log)
        try:
            if probe():
                say(f"{name} ready in {time.monotonic() - t:.1f}s")
                return
        except (OSError, ValueError):
            pass
        now = time.monotonic()
        if now - t > timeout:
            raise ComponentError(name, f"not ready after {timeout:.0f}s", log)
        if now - last_note > 10:
            say(f"  waiting for {name} ({now - t:.0f}s)")
            last_note = now
        time.sleep(0.2)


def start_with_port_retry(name: str, start: Callable[[], None], attempts: int = 3) -> None:
    """Free ports are picked then bound by the child: on a lost race, pick new ones and retry."""
    for attempt in range(1, attempts + 1):
        try:
            start()
            return
        except ComponentError as e:
            if attempt < attempts and "address already in use" in tail(e.log, 40).lower():
                say(f"{name}: port taken meanwhile, retrying with new ports")
                continue
            raise
