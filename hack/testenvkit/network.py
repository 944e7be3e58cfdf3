"""The node's network: the host's test address, the pods' CNI network, kube-proxy, and the
undoing of all of it.

- The loopback interface carries HOST_IP (label ``lo:er-testenv``): the API server and vcsim
  listen there, so the host and the pods reach them at one address, and tests start servers
  there.
- Pods get addresses from POD_CIDR through Debian's CNI plugins: ``ptp`` (one veth per pod,
  routed by the host, so no bridge netfilter is needed), ``portmap`` and ``firewall`` (pod
  traffic is accepted whatever the FORWARD policy is).
- kube-proxy (iptables mode) makes ClusterIP Services work for pods and the host.

What ``up`` changes, ``down`` undoes: sysctls get their recorded values back, iptables rules
and chains that kube-proxy, the kubelet and the CNI plugins made are removed (only those), pod
veths and network namespaces go, and the address on lo goes.
"""

from __future__ import annotations

import contextlib
import ipaddress
import json
import os
import subprocess
from pathlib import Path
from typing import Any

from .base import (
    BIN,
    HOST_IFACE,
    HOST_IP,
    KUBECONFIG,
    NODE_NAME,
    POD_CIDR,
    _get,
    free_port,
    say,
    spawn,
    start_with_port_retry,
    wait_ready,
)

# Sysctls the node's components change (the kubelet, kube-proxy, pod routing): recorded at
# `up`, restored at `down`.
SYSCTLS = (
    "net.ipv4.ip_forward",
    "net.ipv4.conf.all.route_localnet",
    "vm.overcommit_memory",
    "vm.panic_on_oom",
    "kernel.panic",
    "kernel.panic_on_oops",
    "kernel.keys.root_maxkeys",
    "kernel.keys.root_maxbytes",
)
CNI_NETNS_DIR = Path("/var/run/netns")
# iptables lines that belong to the node (chains of kube-proxy, the kubelet, the CNI plugins)
IPTABLES_MARKERS = ("KUBE-", "CNI-", HOST_IFACE)


def run(*argv: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    r = subprocess.run(list(argv), capture_output=True, text=True, stdin=subprocess.DEVNULL)
    if check and r.returncode != 0:
        raise RuntimeError(f"{' '.join(argv)}: {r.stderr.strip() or r.stdout.strip()}")
    return r


def _sysctl_path(name: str) -> Path:
    return Path("/proc/sys") / name.replace(".", "/")


def record_sysctls(state: dict[str, Any]) -> None:
    saved = {}
    for name in SYSCTLS:
        with contextlib.suppress(OSError):
            saved[name] = _sysctl_path(name).read_text().strip()
    state["sysctls"] = saved


def set_sysctl(name: str, value: str) -> None:
    _sysctl_path(name).write_text(value)


def restore_sysctls(state: dict[str, Any]) -> None:
    for name, value in (state.get("sysctls") or {}).items():
        try:
            if _sysctl_path(name).read_text().strip() != value:
                _sysctl_path(name).write_text(value)
                say(f"restored {name} = {value}")
        except OSError as e:
            say(f"could not restore {name} = {value}: {e}")


def add_host_address(state: dict[str, Any]) -> None:
    """HOST_IP/32 on the loopback interface, labelled ``lo:er-testenv`` (a local address
    that pods reach through their veth; this kernel has no dummy interfaces)."""
    existing = run("ip", "-4", "-o", "addr", "show", "dev", "lo").stdout
    if f" {HOST_IP}/" not in existing:
        run("ip", "addr", "add", f"{HOST_IP}/32", "dev", "lo", "label", HOST_IFACE)
        state["host_address_added"] = True
    say(f"test address {HOST_IP} on lo ({HOST_IFACE})")


def remove_host_address() -> None:
    if f" {HOST_IP}/" in run("ip", "-4", "-o", "addr", "show", "dev", "lo").stdout:
        run("ip", "addr", "del", f"{HOST_IP}/32", "dev", "lo", check=False)
        say(f"removed {HOST_IP} from lo")


def write_cni_config(tmp: Path) -> Path:
    conf_dir = tmp / "cni" / "net.d"
    conf_dir.mkdir(parents=True, exist_ok=True)
    conf = {
        "cniVersion": "1.0.0",
        "name": "er-testenv",
        "plugins": [
            {
                "type": "ptp",
                "ipMasq": False,
                "mtu": 1500,
                "ipam": {
                    "type": "host-local",
                    "ranges": [[{"subnet": POD_CIDR}]],
                    "routes": [{"dst": "0.0.0.0/0"}],
                    "dataDir": str(tmp / "cni" / "ipam"),
                },
            },
            {"type": "portmap", "capabilities": {"portMappings": True}},
            {"type": "firewall"},
        ],
    }
    (conf_dir / "10-er-testenv.conflist").write_text(json.dumps(conf, indent=2))
    return conf_dir


def existing_netns() -> list[str]:
    try:
        return sorted(p.name for p in CNI_NETNS_DIR.iterdir())
    except OSError:
        return []


def start_kube_proxy(state: dict[str, Any], tmp: Path) -> None:
    def attempt() -> None:
        healthz, metrics = free_port(), free_port()
        cfg = tmp / "kube-proxy.yaml"
        cfg.write_text(
            f"""apiVersion: kubeproxy.config.k8s.io/v1alpha1
kind: KubeProxyConfiguration
clientConnection:
  kubeconfig: {KUBECONFIG}
mode: iptables
clusterCIDR: {POD_CIDR}
hostnameOverride: {NODE_NAME}
bindAddress: 127.0.0.1
healthzBindAddress: 127.0.0.1:{healthz}
metricsBindAddress: 127.0.0.1:{metrics}
nodePortAddresses: ["{HOST_IP}/32"]
conntrack:
  maxPerCore: 0
  min: 0
  tcpEstablishedTimeout: 0s
  tcpCloseWaitTimeout: 0s
"""
        )
        argv = [str(BIN / "kube-proxy"), f"--config={cfg}", "--v=1"]
        say("starting kube-proxy (iptables mode)")
        proc = spawn(state, "kube-proxy", argv, tmp)

        def probe() -> bool:
            status, _ = _get(f"http://127.0.0.1:{healthz}/healthz")
            return status == 200

        wait_ready("kube-proxy", proc, probe)

    start_with_port_retry("kube-proxy", attempt)


def _filter_iptables(tool: str) -> None:
    save = run(f"{tool}-save", check=False)
    if save.returncode != 0 or not save.stdout:
        return
    kept: list[str] = []
    dropped = 0
    for line in save.stdout.splitlines():
        if line.startswith(("-A ", ":")) and any(m in line for m in IPTABLES_MARKERS):
            dropped += 1
            continue
        kept.append(line)
    if dropped == 0:
        return
    r = subprocess.run(
        [f"{tool}-restore"], input="\n".join(kept) + "\n", capture_output=True, text=True
    )
    if r.returncode != 0:
        say(f"{tool}-restore failed: {r.stderr.strip()}")
    else:
        say(f"removed {dropped} {tool} rules and chains of the node")


def _in_pod_cidr(addr: str) -> bool:
    with contextlib.suppress(ValueError):
        return ipaddress.ip_address(addr) in ipaddress.ip_network(POD_CIDR)
    return False


def remove_pod_network(state: dict[str, Any]) -> None:
    """Pod veths (host side, addressed in POD_CIDR), CNI netns made since `up`, iptables."""
    out = run("ip", "-j", "addr", "show", check=False).stdout or "[]"
    for link in json.loads(out):
        name = link.get("ifname", "")
        if name == HOST_IFACE:
            continue
        if any(_in_pod_cidr(a.get("local", "")) for a in link.get("addr_info", [])):
            run("ip", "link", "del", name, check=False)
    before = set(state.get("netns_before") or [])
    for ns in existing_netns():
        if ns.startswith("cni-") and ns not in before:
            path = CNI_NETNS_DIR / ns
            subprocess.run(["umount", "-l", str(path)], capture_output=True)
            with contextlib.suppress(OSError):
                os.unlink(path)
    for tool in ("iptables", "ip6tables"):
        _filter_iptables(tool)
