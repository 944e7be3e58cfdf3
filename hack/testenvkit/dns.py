"""Cluster DNS: CoreDNS (hack/tools/coredns, a build with a few plugins) on HOST_IP:53, the
kubelet's clusterDNS, so ``<service>.<namespace>.svc.cluster.local`` resolves in pods.
It watches Services and EndpointSlices with the admin kubeconfig, as a cluster's CoreDNS
does with its ServiceAccount. Other names are forwarded to the host's resolvers."""

from __future__ import annotations

import socket
import struct
from pathlib import Path
from typing import Any

from .base import (
    BIN,
    HOST_IP,
    KUBECONFIG,
    _get,
    free_port,
    say,
    spawn,
    start_with_port_retry,
    wait_ready,
)

CLUSTER_DOMAIN = "cluster.local"


def _query(name: str, server: str, timeout: float = 1.0) -> bytes:
    """One DNS A query over UDP (the standard library has no resolver for a chosen server)."""
    qname = b"".join(bytes([len(p)]) + p.encode() for p in name.rstrip(".").split(".")) + b"\0"
    packet = struct.pack(">HHHHHH", 0x4552, 0x0100, 1, 0, 0, 0) + qname + struct.pack(">HH", 1, 1)
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.settimeout(timeout)
        s.sendto(packet, (server, 53))
        return s.recv(4096)


def resolves(name: str, server: str = HOST_IP) -> bool:
    reply = _query(name, server)
    rcode = reply[3] & 0x0F
    answers = struct.unpack(">H", reply[6:8])[0]
    return rcode == 0 and answers > 0


def start_coredns(state: dict[str, Any], tmp: Path) -> None:
    def attempt() -> None:
        health, ready = free_port(), free_port()
        corefile = tmp / "Corefile"
        corefile.write_text(
            f"""{CLUSTER_DOMAIN}:53 in-addr.arpa:53 {{
    bind {HOST_IP}
    errors
    health 127.0.0.1:{health}
    ready 127.0.0.1:{ready}
    kubernetes {CLUSTER_DOMAIN} in-addr.arpa {{
        kubeconfig {KUBECONFIG} event-router-testenv
        pods insecure
        ttl 5
    }}
    cache 5
}}
.:53 {{
    bind {HOST_IP}
    errors
    forward . /etc/resolv.conf
    cache 30
}}
"""
        )
        argv = [str(BIN / "coredns"), "-conf", str(corefile)]
        say(f"starting CoreDNS on {HOST_IP}:53 (zone {CLUSTER_DOMAIN})")
        proc = spawn(state, "coredns", argv, tmp)

        def probe() -> bool:
            status, _ = _get(f"http://127.0.0.1:{ready}/ready")
            return status == 200 and resolves(f"kubernetes.default.svc.{CLUSTER_DOMAIN}")

        wait_ready("coredns", proc, probe)

    start_with_port_retry("coredns", attempt)
