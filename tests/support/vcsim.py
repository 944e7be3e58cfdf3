"""A private vcsim (govmomi's vCenter simulator) for one test: 127.0.0.1, a port it picks, TLS.

    with VCSim() as sim:            # started; stopped (and reaped) on exit
        si = sim.connect()          # a pyVmomi ServiceInstance to drive it
        sim.restart()               # same port, fresh inventory (vcsim forgets its events)

The binary comes from ``$ER_TESTENV_CACHE/bin/vcsim`` (default
``~/.cache/event-router/testenv/bin/vcsim``), built by ``hack/build-tools.sh``.
pyVmomi calls block: call these helpers from a thread (``asyncio.to_thread``) in async tests.
"""

from __future__ import annotations

import contextlib
import os
import re
import ssl
import subprocess
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from pyVim import connect
from pyVmomi import vim

# vcsim prints this to stdout once it listens (govmomi vcsim/main.go)
_LISTENING = re.compile(r"GOVC_URL=https://\S*?127\.0\.0\.1:(\d+)/sdk")


def vcsim_binary() -> Path:
    cache = Path(os.environ.get("ER_TESTENV_CACHE", Path.home() / ".cache/event-router/testenv"))
    path = cache / "bin" / "vcsim"
    if not path.exists():
        raise RuntimeError(f"vcsim not found at {path}; build it with hack/build-tools.sh")
    return path


class VCSim:
    def __init__(
        self,
        *,
        username: str = "vcuser",
        password: str = "vcpass",
        port: int | None = None,
        args: tuple[str, ...] = (),
    ) -> None:
        self.username = username
        self.password = password
        self.port = port or 0  # 0: vcsim picks a free port on the first start
        self.args = args
        self.proc: subprocess.Popen[bytes] | None = None
        self._log = tempfile.NamedTemporaryFile(prefix="vcsim-", suffix=".log", delete=False)
        self._out = tempfile.NamedTemporaryFile(prefix="vcsim-", suffix=".out", delete=False)

    @property
    def url(self) -> str:
        return f"https://127.0.0.1:{self.port}/sdk"

    def vcenter_spec(self, **extra: Any) -> dict[str, Any]:
        """The ``vcenter`` section of a RouterConfig's eventProvider for this vcsim (its
        self-signed certificate not verified, basic auth); ``extra`` adds or sets fields."""
        return {
            "address": self.url,
            "insecureSSL": True,
            "auth": {
                "type": "basic_auth",
                "basicAuth": {"username": self.username, "password": self.password},
            },
            **extra,
        }

    def start(self, timeout: float = 30.0) -> None:
        """Start vcsim and wait until it listens.

        The first start lets vcsim bind port 0 itself and reads the port from the
        ``export GOVC_URL=https://user:pass@127.0.0.1:<port>/sdk ...`` line it prints to
        stdout once it listens (choosing a free port first and passing it on would race
        with other processes taking it). Later starts (``restart``) reuse that port; while
        another process holds it, vcsim exits at once and the start is tried again until
        ``timeout``.
        """
        assert self.proc is None, "already running"
        deadline = time.monotonic() + timeout
        while True:
            failure = self._start_once(deadline)
            if failure is None:
                return
            if self.port == 0 or time.monotonic() > deadline:
                raise RuntimeError(failure)
            time.sleep(0.2)  # the port is taken: wait for it to be released, then retry

    def _start_once(self, deadline: float) -> str | None:
        """One vcsim process: None once it listens, else why it did not (it is reaped)."""
        self._out.seek(0)
        self._out.truncate()
        cmd = [
            str(vcsim_binary()),
            "-l",
            f"127.0.0.1:{self.port}",
            "-username",
            self.username,
            "-password",
            self.password,
            *self.args,
        ]
        self.proc = subprocess.Popen(
            cmd, stdout=self._out, stderr=self._log, stdin=subprocess.DEVNULL
        )
        while time.monotonic() < deadline:
            match = _LISTENING.search(Path(self._out.name).read_text(errors="replace"))
            if match:
                self.port = int(match.group(1))
                return None
            if self.proc.poll() is not None:
                code, self.proc = self.proc.returncode, None
                return f"vcsim on 127.0.0.1:{self.port} exited with {code}: {self.log_tail()}"
            time.sleep(0.05)
        self.stop()
        return f"vcsim did not listen on 127.0.0.1:{self.port or '<any port>'} in time"

    def stop(self) -> None:
        proc, self.proc = self.proc, None
        if proc is None:
            return
        proc.terminate()
        try:
            proc.wait(5)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(5)

    def restart(self) -> None:
        self.stop()
        self.start()

    def log_tail(self, n: int = 2000) -> str:
        with contextlib.suppress(OSError):
            return Path(self._log.name).read_text(errors="replace")[-n:]
        return ""

    def __enter__(self) -> VCSim:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()
        for f in (self._log, self._out):
            f.close()
            Path(f.name).unlink(missing_ok=True)

    # --- driving it ----------------------------------------------------------------------

    def connect(self) -> Any:
        ctx = ssl._create_unverified_context()
        return connect.SmartConnect(
            host="127.0.0.1",
            port=self.port,
            user=self.username,
            pwd=self.password,
            sslContext=ctx,
            disableSslCertValidation=True,
        )


def wait_task(task: Any, timeout: float = 30.0) -> Any:
    deadline = time.monotonic() + timeout
    while task.info.state not in (vim.TaskInfo.State.success, vim.TaskInfo.State.error):
        if time.monotonic() > deadline:
            raise TimeoutError(f"task {task} still {task.info.state}")
        time.sleep(0.02)
    if task.info.state == vim.TaskInfo.State.error:
        raise task.info.error
    return task.info.result


def find_vm(si: Any, name: str | None = None) -> Any:
    view = si.content.viewManager.CreateContainerView(
        si.content.rootFolder, [vim.VirtualMachine], True
    )
    try:
        for vm in view.view:
            if name is None or vm.name == name:
                return vm
    finally:
        view.Destroy()
    raise LookupError(f"no VM {name!r}")


def post_event_ex(si: Any, type_id: str, message: str = "", severity: str = "info") -> None:
    """PostEvent of an EventEx on the root folder (vcsim fills in key, time, user)."""
    event = vim.event.EventEx(
        eventTypeId=type_id,
        severity=severity,
        message=message,
        createdTime=time_now(si),
        key=0,
        chainId=0,
        userName="",
        objectType=vim.Folder,
        objectId=si.content.rootFolder._moId,
    )
    si.content.eventManager.PostEvent(eventToPost=event)


def post_general_events(si: Any, count: int, prefix: str = "bench") -> None:
    """``count`` GeneralUserEvents (cheap, distinct messages ``<prefix>-<i>``)."""
    mgr = si.content.eventManager
    now = time_now(si)
    for i in range(count):
        mgr.PostEvent(
            eventToPost=vim.event.GeneralUserEvent(
                key=0, chainId=0, createdTime=now, userName="", message=f"{prefix}-{i}"
            )
        )


def post_paced(
    si: Any,
    prefix: str,
    count: int,
    rate: float | None,
    *,
    first: int = 0,
    posted: list[float] | None = None,
) -> None:
    """GeneralUserEvents ``<prefix><i>`` for i in ``first..count-1``, each with vCenter's
    current time, at ``rate``/s (None: as fast as vcsim takes them); the monotonic time of
    each post is appended to ``posted`` (progress for a caller in another thread)."""
    mgr = si.content.eventManager
    start = time.monotonic()
    for i in range(first, count):
        if rate:
            delay = start + (i - first) / rate - time.monotonic()
            if delay > 0:
                time.sleep(delay)
        mgr.PostEvent(
            eventToPost=vim.event.GeneralUserEvent(
                key=0, chainId=0, createdTime=si.CurrentTime(), userName="", message=f"{prefix}{i}"
            )
        )
        if posted is not None:
            posted.append(time.monotonic())


def post_burst(sim: VCSim, prefix: str, count: int, sessions: int = 4) -> float:
    """``count`` GeneralUserEvents ``<prefix><i>`` posted at once by ``sessions`` sessions
    (connected first, then released together); the seconds the posting took."""
    clients = [sim.connect() for _ in range(sessions)]
    go = threading.Barrier(sessions)
    share = -(-count // sessions)

    def one(n: int) -> None:
        go.wait()
        post_paced(clients[n], prefix, min(count, (n + 1) * share), None, first=n * share)

    start = time.monotonic()
    with ThreadPoolExecutor(sessions) as pool:
        list(pool.map(one, range(sessions)))
    return time.monotonic() - start


def time_now(si: Any) -> Any:
    return si.CurrentTime()
