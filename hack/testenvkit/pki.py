"""The test environment's PKI (openssl CLI) and its admin kubeconfig."""

from __future__ import annotations

import base64
import os
import shutil
import subprocess
from pathlib import Path

from .base import HOST_IP, PKI, SERVICE_IP, ComponentError


def openssl(*args: str) -> None:
    r = subprocess.run(["openssl", *args], cwd=PKI, capture_output=True, text=True)
    if r.returncode != 0:
        raise ComponentError("pki", f"openssl {' '.join(args)} failed: {r.stderr.strip()}")


def make_pki() -> None:
    if PKI.exists():
        shutil.rmtree(PKI)
    PKI.mkdir(parents=True)
    os.chmod(PKI, 0o700)
    openssl("ecparam", "-name", "prime256v1", "-genkey", "-noout", "-out", "ca.key")
    (PKI / "ca.ext").write_text(
        "basicConstraints=critical,CA:TRUE\nkeyUsage=critical,keyCertSign,cRLSign,digitalSignature\n"
        "subjectKeyIdentifier=hash\n"
    )
    openssl(
        "req", "-new", "-key", "ca.key", "-subj", "/CN=event-router-testenv-ca", "-out", "ca.csr"
    )
    openssl(
        "x509", "-req", "-in", "ca.csr", "-signkey", "ca.key", "-days", "3650",
        "-extfile", "ca.ext", "-out", "ca.crt",
    )  # fmt: skip

    def leaf(name: str, subj: str, ext: str) -> None:
        openssl("ecparam", "-name", "prime256v1", "-genkey", "-noout", "-out", f"{name}.key")
        openssl("req", "-new", "-key", f"{name}.key", "-subj", subj, "-out", f"{name}.csr")
        (PKI / f"{name}.ext").write_text(ext)
        openssl(
            "x509", "-req", "-in", f"{name}.csr", "-CA", "ca.crt", "-CAkey", "ca.key",
            "-CAcreateserial", "-days", "365", "-extfile", f"{name}.ext", "-out", f"{name}.crt",
        )  # fmt: skip

    leaf(
        "apiserver",
        "/CN=kube-apiserver",
        "basicConstraints=CA:FALSE\nkeyUsage=critical,digitalSignature,keyEncipherment\n"
        "extendedKeyUsage=serverAuth\n"
        f"subjectAltName=IP:127.0.0.1,IP:{HOST_IP},IP:{SERVICE_IP},DNS:localhost,DNS:kubernetes,"
        "DNS:kubernetes.default,DNS:kubernetes.default.svc,DNS:kubernetes.default.svc.cluster.local\n",
    )
    leaf(
        "admin",
        "/O=system:masters/CN=event-router-testenv-admin",
        "basicConstraints=CA:FALSE\nkeyUsage=critical,digitalSignature,keyEncipherment\n"
        "extendedKeyUsage=clientAuth\n",
    )
    openssl("genrsa", "-out", "sa.key", "2048")
    openssl("rsa", "-in", "sa.key", "-pubout", "-out", "sa.pub")
    for p in PKI.glob("*.key"):
        os.chmod(p, 0o600)


def b64(path: Path) -> str:
    return base64.b64encode(path.read_bytes()).decode()


def write_kubeconfig(path: Path, server: str) -> None:
    path.write_text(
        f"""apiVersion: v1
kind: Config
clusters:
- name: event-router-testenv
  cluster:
    server: {server}
    certificate-authority-data: {b64(PKI / "ca.crt")}
users:
- name: event-router-testenv-admin
  user:
    client-certificate-data: {b64(PKI / "admin.crt")}
    client-key-data: {b64(PKI / "admin.key")}
contexts:
- name: event-router-testenv
  context:
    cluster: event-router-testenv
    user: event-router-testenv-admin
    namespace: default
current-context: event-router-testenv
"""
    )
    os.chmod(path, 0o600)
