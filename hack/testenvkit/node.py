"""The node: containerd (Debian's, with its CRI plugin) and a kubelet that runs real pods.

containerd gets its own root, state and socket in the env's temp directory (never the host's
/run/containerd), Debian's runc, and the CNI network of network.py. The sandbox ("pause")
image is made here from hack/tools/pause; every image tarball under
$ER_IMAGE_CACHE/current (``make image``) is imported at start, so pods with
``imagePullPolicy: IfNotPresent`` start without a registry.

The kubelet: cgroupfs driver (cgroup v1 here), node IP HOST_IP, the admin kubeconfig, DNS
from dns.py. `down` kills every container, unmounts what the kubelet and containerd mounted
and removes the cgroups the kubelet made.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import json
import os
import signal
import subprocess
import tarfile
import time
from pathlib import Path
from typing import Any

from .base import (
    BIN,
    HOST_IP,
    IMAGE_CACHE,
    KUBECONFIG,
    LOGS,
    NODE_NAME,
    PKI,
    ComponentError,
    _get,
    admin_ssl,
    free_port,
    say,
    spawn,
    wait_ready,
)
from .network import set_sysctl

PAUSE_IMAGE = "registry.k8s.io/pause:3.10"
K8S_NAMESPACE = "k8s.io"  # containerd namespace of the CRI plugin


def containerd_socket(tmp: Path) -> Path:
    return tmp / "containerd.sock"


def ctr(state: dict[str, Any], *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    sock = state["containerd_socket"]
    r = subprocess.run(
        ["ctr", "-a", sock, "-n", K8S_NAMESPACE, *args],
        capture_output=True,
        text=True,
        stdin=subprocess.DEVNULL,
    )
    if check and r.returncode != 0:
        raise ComponentError("containerd", f"ctr {' '.join(args)}: {r.stderr.strip()}")
    return r


def start_containerd(state: dict[str, Any], tmp: Path, cni_conf_dir: Path) -> None:
    sock = containerd_socket(tmp)
    root, run_state = tmp / "containerd" / "root", tmp / "containerd" / "state"
    cfg = tmp / "containerd.toml"
    cfg.write_text(
        f"""version = 2
root = "{root}"
state = "{run_state}"
disabled_plugins = ["io.containerd.snapshotter.v1.btrfs", "io.containerd.snapshotter.v1.zfs",
  "io.containerd.snapshotter.v1.devmapper", "io.containerd.snapshotter.v1.aufs",
  "io.containerd.tracing.processor.v1.otlp", "io.containerd.internal.v1.tracing"]
[grpc]
  address = "{sock}"
[ttrpc]
  address = "{sock}.ttrpc"
[debug]
  level = "warn"
[plugins."io.containerd.internal.v1.opt"]
  path = "{tmp / "containerd" / "opt"}"
[plugins."io.containerd.grpc.v1.cri"]
  sandbox_image = "{PAUSE_IMAGE}"
  # processes here lack CAP_SYS_RESOURCE: they may raise oom_score_adj, never lower it
  restrict_oom_score_adj = true
  enable_selinux = false
  [plugins."io.containerd.grpc.v1.cri".containerd]
    snapshotter = "overlayfs"
    default_runtime_name = "runc"
    [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc]
      runtime_type = "io.containerd.runc.v2"
      [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc.options]
        SystemdCgroup = false
  [plugins."io.containerd.grpc.v1.cri".cni]
    bin_dir = "/usr/lib/cni"
    conf_dir = "{cni_conf_dir}"
  [plugins."io.containerd.grpc.v1.cri".registry]
    config_path = ""
"""
    )
    argv = ["containerd", "--config", str(cfg)]
    say(f"starting containerd (socket {sock})")
    proc = spawn(state, "containerd", argv, tmp)
    state["containerd_socket"] = str(sock)

    def probe() -> bool:
        return sock.exists() and ctr(state, "version", check=False).returncode == 0

    wait_ready("containerd", proc, probe)


def pause_image_tar(dest: Path) -> Path:
    """A docker-archive tarball of PAUSE_IMAGE holding the static hack/tools/pause binary."""
    layer = io.BytesIO()
    with tarfile.open(fileobj=layer, mode="w") as t:
        info = tarfile.TarInfo("pause")
        data = (BIN / "pause").read_bytes()
        info.size, info.mode, info.mtime = len(data), 0o755, 0
        t.addfile(info, io.BytesIO(data))
    layer_bytes = layer.getvalue()
    diff_id = "sha256:" + hashlib.sha256(layer_bytes).hexdigest()
    config = {
        "architecture": "amd64" if os.uname().machine == "x86_64" else "arm64",
        "os": "linux",
        "config": {"Entrypoint": ["/pause"], "User": "65535:65535"},
        "rootfs": {"type": "layers", "diff_ids": [diff_id]},
    }
    config_bytes = json.dumps(config).encode()
    manifest = [{"Config": "config.json", "RepoTags": [PAUSE_IMAGE], "Layers": ["layer.tar"]}]
    with tarfile.open(dest, "w") as t:
        for name, blob in (
            ("layer.tar", layer_bytes),
            ("config.json", config_bytes),
            ("manifest.json", json.dumps(manifest).encode()),
        ):
            info = tarfile.TarInfo(name)
            info.size = len(blob)
            t.addfile(info, io.BytesIO(blob))
    return dest


def import_images(state: dict[str, Any], tmp: Path) -> None:
    t = time.monotonic()
    tars = [pause_image_tar(tmp / "pause-image.tar")]
    current = IMAGE_CACHE / "current"
    tars += sorted(p for p in current.glob("*.tar") if p.exists()) if current.is_dir() else []
    for tar in tars:
        ctr(state, "images", "import", str(tar))
    names = [ln.split()[0] for ln in ctr(state, "images", "ls").stdout.splitlines()[1:] if ln]
    say(f"images in the node ({time.monotonic() - t:.1f}s): {', '.join(sorted(set(names)))}")
    if len(tars) == 1:
        say("  (no event-router image: `make image` builds it and loads it into a running node)")


def start_kubelet(state: dict[str, Any], tmp: Path) -> None:
    # what the kubelet would set itself (it checks these at start); restored at `down`
    for name, value in (
        ("vm.overcommit_memory", "1"),
        ("vm.panic_on_oom", "0"),
        ("kernel.panic", "10"),
        ("kernel.panic_on_oops", "1"),
    ):
        with contextlib.suppress(OSError):
            set_sysctl(name, value)
    port, healthz = free_port(HOST_IP), free_port()
    root = tmp / "kubelet"
    root.mkdir(parents=True, exist_ok=True)
    cfg = tmp / "kubelet.yaml"
    cfg.write_text(
        f"""apiVersion: kubelet.config.k8s.io/v1beta1
kind: KubeletConfiguration
address: {HOST_IP}
port: {port}
readOnlyPort: 0
healthzBindAddress: 127.0.0.1
healthzPort: {healthz}
authentication:
  anonymous: {{enabled: false}}
  webhook: {{enabled: true}}
  x509: {{clientCAFile: {PKI / "ca.crt"}}}
authorization:
  mode: Webhook
cgroupDriver: cgroupfs
failCgroupV1: false
failSwapOn: false
containerRuntimeEndpoint: unix://{state["containerd_socket"]}
clusterDNS: ["{HOST_IP}"]
clusterDomain: cluster.local
resolvConf: /etc/resolv.conf
rotateCertificates: false
serverTLSBootstrap: false
protectKernelDefaults: false
imageGCHighThresholdPercent: 100
imageGCLowThresholdPercent: 99
evictionHard:
  memory.available: "50Mi"
  nodefs.available: "1%"
  nodefs.inodesFree: "1%"
  imagefs.available: "1%"
maxPods: 110
serializeImagePulls: false
syncFrequency: 10s
fileCheckFrequency: 10s
nodeStatusUpdateFrequency: 5s
"""
    )
    argv = [
        str(BIN / "kubelet"),
        f"--config={cfg}",
        f"--kubeconfig={KUBECONFIG}",
        f"--root-dir={root}",
        f"--cert-dir={tmp / 'kubelet-pki'}",
        f"--hostname-override={NODE_NAME}",
        f"--node-ip={HOST_IP}",
        "--v=1",
    ]
    say(f"starting the kubelet (node {NODE_NAME}, {HOST_IP}:{port})")
    proc = spawn(state, "kubelet", argv, tmp)
    url = f"{state['server']}/api/v1/nodes/{NODE_NAME}"
    ctx = admin_ssl()

    def probe() -> bool:
        status, body = _get(url, ctx)
        if status != 200:
            return False
        conds = json.loads(body).get("status", {}).get("conditions", [])
        return any(c["type"] == "Ready" and c["status"] == "True" for c in conds)

    wait_ready("kubelet", proc, probe)


def kill_containers(state: dict[str, Any]) -> None:
    """Every task of our containerd, killed (a stopped kubelet leaves them running)."""
    if not state.get("containerd_socket") or not Path(state["containerd_socket"]).exists():
        return
    tasks = ctr(state, "tasks", "ls", "-q", check=False).stdout.split()
    for task in tasks:
        ctr(state, "tasks", "kill", "-a", "-s", "SIGKILL", task, check=False)
    deadline = time.monotonic() + 10
    for task in tasks:
        while time.monotonic() < deadline:
            if ctr(state, "tasks", "delete", task, check=False).returncode == 0:
                break
            time.sleep(0.2)
    if tasks:
        say(f"killed {len(tasks)} containers")


def kill_shims(tmp: str) -> None:
    """containerd-shim processes of our containerd (they outlive it by design)."""
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        with contextlib.suppress(OSError):
            cmd = (proc / "cmdline").read_bytes().split(b"\0")
            if cmd and b"containerd-shim" in cmd[0] and tmp.encode() in b" ".join(cmd):
                os.kill(int(proc.name), signal.SIGKILL)


def unmount_under(tmp: str) -> None:
    mounts = []
    with contextlib.suppress(OSError):
        for line in Path("/proc/self/mountinfo").read_text().splitlines():
            point = line.split()[4].replace("\\040", " ")
            if point == tmp or point.startswith(tmp + "/"):
                mounts.append(point)
    for point in sorted(mounts, key=len, reverse=True):
        subprocess.run(["umount", "-l", point], capture_output=True)
    if mounts:
        say(f"unmounted {len(mounts)} mounts under {tmp}")


def remove_pod_cgroups() -> None:
    """The kubelet's cgroup tree (cgroupfs driver): /sys/fs/cgroup/<controller>/kubepods."""
    removed = 0
    for ctl in Path("/sys/fs/cgroup").iterdir():
        top = ctl / "kubepods"
        if not top.is_dir():
            continue
        for d in sorted((p for p in top.rglob("*") if p.is_dir()), key=lambda p: -len(p.parts)):
            with contextlib.suppress(OSError):
                d.rmdir()
        with contextlib.suppress(OSError):
            top.rmdir()
            removed += 1
    if removed:
        say(f"removed the kubepods cgroups of {removed} controllers")


def node_log_hint() -> str:
    return f"{LOGS}/kubelet.log, {LOGS}/containerd.log"
