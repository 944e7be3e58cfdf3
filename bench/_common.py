"""Helpers every benchmark needs: progress on stderr, free ports, a process's memory."""

from __future__ import annotations

import sys
from pathlib import Path

from tests.support.net import free_port, free_ports

__all__ = ["free_port", "free_ports", "log", "rss_mib"]


def log(msg: str, *, tag: str = "bench") -> None:
    """Progress: ``[bench] msg`` on stderr (the last stdout line is the JSON figures)."""
    print(f"[{tag}] {msg}", file=sys.stderr, flush=True)


def rss_mib(pid: int) -> tuple[float, float]:
    """VmRSS and VmHWM (peak) of process ``pid`` in MiB, from /proc/<pid>/status."""
    fields: dict[str, float] = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        name, _, value = line.partition(":")
        if name in ("VmRSS", "VmHWM"):
            fields[name] = int(value.split()[0]) / 1024
    return fields.get("VmRSS", 0.0), fields.get("VmHWM", 0.0)
