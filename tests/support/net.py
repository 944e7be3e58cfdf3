"""Free TCP ports on 127.0.0.1 for test servers and routers (also used by bench/)."""

from __future__ import annotations

import socket


def free_port() -> int:
    """A port nothing listens on right now (bound to 127.0.0.1:0, then released)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def free_ports(n: int) -> list[int]:
    """``n`` distinct free ports: all are held open until every one is chosen."""
    socks = []
    try:
        for _ in range(n):
            s = socket.socket()
            s.bind(("127.0.0.1", 0))
            socks.append(s)
        return [int(s.getsockname()[1]) for s in socks]
    finally:
        for s in socks:
            s.close()
