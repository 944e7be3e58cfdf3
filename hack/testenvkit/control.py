"""The control plane: etcd, kube-apiserver, kube-controller-manager, kube-scheduler."""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

from .base import (
    BIN,
    KUBECONFIG,
    PKI,
    SERVICE_CIDR,
    _get,
    admin_ssl,
    free_port,
    insecure_ssl,
    say,
    spawn,
    start_with_port_retry,
    wait_ready,
)
from .pki import write_kubeconfig


def start_etcd(state: dict[str, Any], tmp: Path) -> None:
    def attempt() -> None:
        client, peer = free_port(), free_port()
        data = tmp / "etcd"
        shutil.rmtree(data, ignore_errors=True)
        argv = [
            str(BIN / "etcd"),
            "--name=testenv",
            f"--data-dir={data}",
            f"--listen-client-urls=http://127.0.0.1:{client}",
            f"--advertise-client-urls=http://127.0.0.1:{client}",
            f"--listen-peer-urls=http://127.0.0.1:{peer}",
            f"--initial-advertise-peer-urls=http://127.0.0.1:{peer}",
            f"--initial-cluster=testenv=http://127.0.0.1:{peer}",
            "--unsafe-no-fsync",
            "--log-level=warn",
        ]
        say(f"starting etcd on 127.0.0.1:{client}")
        proc = spawn(state, "etcd", argv, tmp)
        state["etcd_url"] = f"http://127.0.0.1:{client}"

        def probe() -> bool:
            status, body = _get(f"http://127.0.0.1:{client}/health")
            return status == 200 and json.loads(body).get("health") == "true"

        wait_ready("etcd", proc, probe)

    start_with_port_retry("etcd", attempt)


def start_apiserver(state: dict[str, Any], tmp: Path) -> None:
    def attempt() -> None:
        host = state["listen"]  # 127.0.0.1, or the test address when pods must reach it
        port = free_port(host)
        server = f"https://{host}:{port}"
        argv = [
            str(BIN / "kube-apiserver"),
            f"--advertise-address={host}",
            f"--bind-address={host}",
            "--kubelet-preferred-address-types=InternalIP",
            # the kubelet accepts clients of our CA only (anonymous off): logs, exec, port-forward
            f"--kubelet-client-certificate={PKI / 'admin.crt'}",
            f"--kubelet-client-key={PKI / 'admin.key'}",
            f"--secure-port={port}",
            f"--etcd-servers={state['etcd_url']}",
            f"--cert-dir={tmp / 'apiserver-certs'}",
            f"--tls-cert-file={PKI / 'apiserver.crt'}",
            f"--tls-private-key-file={PKI / 'apiserver.key'}",
            f"--client-ca-file={PKI / 'ca.crt'}",
            f"--service-account-issuer={server}",
            f"--service-account-key-file={PKI / 'sa.pub'}",
            f"--service-account-signing-key-file={PKI / 'sa.key'}",
            f"--service-cluster-ip-range={SERVICE_CIDR}",
            "--authorization-mode=RBAC",
            "--allow-privileged=true",
            "--profiling=false",
            "--v=1",
        ]
        say(f"starting kube-apiserver on {server}")
        proc = spawn(state, "kube-apiserver", argv, tmp)
        state["server"] = server
        write_kubeconfig(KUBECONFIG, server)
        ctx = admin_ssl()

        def probe() -> bool:
            status, _ = _get(f"{server}/readyz", ctx)
            return status == 200

        wait_ready("kube-apiserver", proc, probe)

    start_with_port_retry("kube-apiserver", attempt)


def start_controller_manager(state: dict[str, Any], tmp: Path) -> None:
    def attempt() -> None:
        port = free_port()
        kc = str(KUBECONFIG)
        argv = [
            str(BIN / "kube-controller-manager"),
            f"--kubeconfig={kc}",
            f"--authentication-kubeconfig={kc}",
            f"--authorization-kubeconfig={kc}",
            "--bind-address=127.0.0.1",
            f"--secure-port={port}",
            f"--cert-dir={tmp / 'kcm-certs'}",
            "--leader-elect=false",
            "--controllers=*",
            f"--service-account-private-key-file={PKI / 'sa.key'}",
            f"--root-ca-file={PKI / 'ca.crt'}",
            f"--cluster-signing-cert-file={PKI / 'ca.crt'}",
            f"--cluster-signing-key-file={PKI / 'ca.key'}",
            "--use-service-account-credentials=false",
            "--profiling=false",
            "--v=1",
        ]
        say("starting kube-controller-manager")
        proc = spawn(state, "kube-controller-manager", argv, tmp)
        ctx = admin_ssl()
        # Ready when its serviceaccount controller has made namespace default's ServiceAccount.
        url = f"{state['server']}/api/v1/namespaces/default/serviceaccounts/default"

        def probe() -> bool:
            status, _ = _get(url, ctx)
            return status == 200

        wait_ready("kube-controller-manager", proc, probe)

    start_with_port_retry("kube-controller-manager", attempt)


def start_scheduler(state: dict[str, Any], tmp: Path) -> None:
    def attempt() -> None:
        port = free_port()
        kc = str(KUBECONFIG)
        argv = [
            str(BIN / "kube-scheduler"),
            f"--kubeconfig={kc}",
            f"--authentication-kubeconfig={kc}",
            f"--authorization-kubeconfig={kc}",
            "--bind-address=127.0.0.1",
            f"--secure-port={port}",
            f"--cert-dir={tmp / 'scheduler-certs'}",
            "--leader-elect=false",
            "--profiling=false",
            "--v=1",
        ]
        say("starting kube-scheduler")
        proc = spawn(state, "kube-scheduler", argv, tmp)

        def probe() -> bool:
            status, _ = _get(f"https://127.0.0.1:{port}/healthz", insecure_ssl())
            return status == 200

        wait_ready("kube-scheduler", proc, probe)

    start_with_port_retry("kube-scheduler", attempt)
