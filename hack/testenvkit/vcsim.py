"""vcsim, the vCenter simulator (govmomi)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from .base import (
    BIN,
    VCSIM_PASSWORD,
    VCSIM_USERNAME,
    _get,
    free_port,
    insecure_ssl,
    say,
    spawn,
    start_with_port_retry,
    wait_ready,
)


def start_vcsim(state: dict[str, Any], tmp: Path) -> None:
    def attempt() -> None:
        host = state["listen"]
        port = free_port(host)
        argv = [
            str(BIN / "vcsim"),
            "-l",
            f"{host}:{port}",
            "-username",
            VCSIM_USERNAME,
            "-password",
            VCSIM_PASSWORD,
        ]
        say(f"starting vcsim on {host}:{port}")
        proc = spawn(state, "vcsim", argv, tmp)
        state["vcsim_url"] = f"https://{host}:{port}/sdk"
        ctx = insecure_ssl()

        def probe() -> bool:
            status, _ = _get(f"https://{host}:{port}/about", ctx)
            return status == 200

        wait_ready("vcsim", proc, probe)

    start_with_port_retry("vcsim", attempt)
