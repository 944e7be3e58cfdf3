"""Helpers shared by the operator's integration tests, its benchmark and ``make demo``:
install the CRD, apply manifests (a small ``kubectl apply``), start/stop the operator as a
subprocess, print RouterConfigs like ``kubectl get routerconfigs``.

Blocking (kubernetes client); call from threads in async code.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any, TypeVar

import kubernetes.client
from kubernetes.client.exceptions import ApiException

from event_router.operator import crd
from event_router.operator.kube import request

T = TypeVar("T")

RC_PATH = f"/apis/{crd.GROUP}/{crd.VERSION}/namespaces/{{ns}}/{crd.PLURAL}"


def wait_for(probe: Callable[[], T | None], timeout: float, what: str, interval: float = 0.2) -> T:
    """Call ``probe`` until it returns something truthy; AssertionError after ``timeout``."""
    deadline = time.monotonic() + timeout
    last: Any = None
    while True:
        try:
            last = probe()
        except ApiException as e:
            last = f"ApiException {e.status}: {e.reason}"
        if last:
            return last
        if time.monotonic() > deadline:
            raise AssertionError(
                f"timed out after {timeout:.0f} s waiting for {what} (last: {last!r})"
            )
        time.sleep(interval)


def install_crd(api: kubernetes.client.ApiClient, timeout: float = 30.0) -> None:
    """Create or update the RouterConfig CRD and wait until it is Established."""
    install_crd_object(api, crd.crd(), timeout)


def install_crd_object(
    api: kubernetes.client.ApiClient, obj: dict[str, Any], timeout: float = 30.0
) -> None:
    name = obj["metadata"]["name"]
    path = "/apis/apiextensions.k8s.io/v1/customresourcedefinitions"
    request(
        api,
        "PATCH",
        f"{path}/{name}",
        body=obj,
        query=[("fieldManager", "event-router-devtools"), ("force", "true")],
        content_type="application/apply-patch+yaml",
    )

    def established() -> bool:
        got = request(api, "GET", f"{path}/{name}")
        conds = (got.get("status") or {}).get("conditions") or []
        return any(c["type"] == "Established" and c["status"] == "True" for c in conds)

    wait_for(established, timeout, f"CRD {name} Established")
    # the API server serves the new schema a moment after Established
    time.sleep(0.5)


def webhook_knative_spec(port: int, sink_host: str, sink_port: int) -> dict[str, Any]:
    """A RouterConfig ``spec``: a webhook on 127.0.0.1:``port`` to a Knative ``uri`` sink."""
    return {
        "eventProvider": {
            "type": "webhook",
            "name": "hook",
            "webhook": {"bindAddress": f"127.0.0.1:{port}", "path": "/webhook"},
        },
        "eventProcessor": {
            "type": "knative",
            "name": "sink",
            "knative": {
                "destination": {"uri": {"scheme": "http", "host": sink_host, "port": sink_port}}
            },
        },
    }


def rc_path(namespace: str, name: str | None = None) -> str:
    base = RC_PATH.format(ns=namespace)
    return f"{base}/{name}" if name else base


def create_rc(api: kubernetes.client.ApiClient, namespace: str, body: dict[str, Any]) -> Any:
    """POST a RouterConfig with strict field validation (as ``kubectl apply`` does)."""
    return request(
        api,
        "POST",
        rc_path(namespace),
        body=body,
        query=[("fieldValidation", "Strict"), ("fieldManager", "kubectl")],
    )


def get_rc(api: kubernetes.client.ApiClient, namespace: str, name: str) -> dict[str, Any] | None:
    try:
        obj: dict[str, Any] = request(api, "GET", rc_path(namespace, name))
    except ApiException as e:
        if e.status == 404:
            return None
        raise
    return obj


def condition(rc: dict[str, Any] | None, type_: str) -> dict[str, Any]:
    for c in ((rc or {}).get("status") or {}).get("conditions") or []:
        if c.get("type") == type_:
            return dict(c)
    return {}


_PLURALS = {
    "Secret": "secrets",
    "ConfigMap": "configmaps",
    "Service": "services",
    "ServiceAccount": "serviceaccounts",
    "Namespace": "namespaces",
    "Deployment": "deployments",
    "ClusterRole": "clusterroles",
    "ClusterRoleBinding": "clusterrolebindings",
    "Role": "roles",
    "RoleBinding": "rolebindings",
    "CustomResourceDefinition": "customresourcedefinitions",
    "RouterConfig": crd.PLURAL,
    "Broker": "brokers",
}
_CLUSTER_SCOPED = {"Namespace", "ClusterRole", "ClusterRoleBinding", "CustomResourceDefinition"}


def apply(
    api: kubernetes.client.ApiClient, obj: dict[str, Any], namespace: str | None = None
) -> Any:
    """Server-side apply of one manifest (``kubectl apply --server-side`` with strict field
    validation)."""
    api_version, kind = obj["apiVersion"], obj["kind"]
    prefix = "/api/v1" if api_version == "v1" else f"/apis/{api_version}"
    name = obj["metadata"]["name"]
    if kind in _CLUSTER_SCOPED:
        path = f"{prefix}/{_PLURALS[kind]}/{name}"
    else:
        ns = obj["metadata"].get("namespace") or namespace or "default"
        obj = {**obj, "metadata": {**obj["metadata"], "namespace": ns}}
        path = f"{prefix}/namespaces/{ns}/{_PLURALS[kind]}/{name}"
    return request(
        api,
        "PATCH",
        path,
        body=obj,
        query=[("fieldManager", "kubectl"), ("force", "true"), ("fieldValidation", "Strict")],
        content_type="application/apply-patch+yaml",
    )


def table(api: kubernetes.client.ApiClient, namespace: str) -> list[dict[str, str]]:
    """The rows ``kubectl get routerconfigs`` shows (the server-side Table with the CRD's
    printer columns)."""
    params = api.param_serialize(
        "GET",
        rc_path(namespace),
        header_params={"Accept": "application/json;as=Table;v=v1;g=meta.k8s.io"},
        auth_settings=["BearerToken"],
    )
    resp = api.call_api(*params)
    resp.read()
    if resp.status >= 400:
        raise ApiException(http_resp=resp)
    import json

    data = json.loads(resp.data or b"{}")
    names = [c["name"] for c in data["columnDefinitions"]]
    return [
        {n: ("" if v is None else str(v)) for n, v in zip(names, row["cells"], strict=False)}
        for row in data.get("rows") or []
    ]


def format_table(rows: Iterable[dict[str, str]]) -> str:
    rows = list(rows)
    if not rows:
        return "No resources found."
    cols = [c.upper() for c in rows[0]]
    keys = list(rows[0])
    widths = [max(len(c), *(len(r[k]) for r in rows)) for c, k in zip(cols, keys, strict=True)]
    lines = ["   ".join(c.ljust(w) for c, w in zip(cols, widths, strict=True)).rstrip()]
    for r in rows:
        lines.append("   ".join(r[k].ljust(w) for k, w in zip(keys, widths, strict=True)).rstrip())
    return "\n".join(lines)


class OperatorProcess:
    """``event-router-operator`` as a subprocess (logs to ``log_path``)."""

    def __init__(
        self,
        args: list[str],
        log_path: Path,
        kubeconfig: str | None = None,
        env: dict[str, str] | None = None,
    ) -> None:
        self.args = args
        self.log_path = log_path
        self.kubeconfig = kubeconfig
        self.env = env or {}
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> OperatorProcess:
        exe = Path(sys.executable).parent / "event-router-operator"
        env = {**os.environ, **self.env}
        if self.kubeconfig:
            env["KUBECONFIG"] = self.kubeconfig
        with self.log_path.open("ab") as out:
            self.proc = subprocess.Popen(
                [str(exe), *self.args],
                stdout=out,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                env=env,
            )
        return self

    def stop(self, timeout: float = 20.0) -> int | None:
        proc, self.proc = self.proc, None
        if proc is None:
            return None
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(timeout)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(5)
        return proc.returncode

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    def log(self, tail: int = 4000) -> str:
        try:
            return self.log_path.read_text(errors="replace")[-tail:]
        except OSError:
            return ""

    def __enter__(self) -> OperatorProcess:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


BROKER_CRD: dict[str, Any] = {
    "apiVersion": "apiextensions.k8s.io/v1",
    "kind": "CustomResourceDefinition",
    "metadata": {"name": "brokers.eventing.knative.dev"},
    "spec": {
        "group": "eventing.knative.dev",
        "scope": "Namespaced",
        "names": {
            "kind": "Broker",
            "plural": "brokers",
            "singular": "broker",
            "listKind": "BrokerList",
        },
        "versions": [
            {
                "name": "v1",
                "served": True,
                "storage": True,
                "subresources": {"status": {}},
                "schema": {
                    "openAPIV3Schema": {
                        "type": "object",
                        "x-kubernetes-preserve-unknown-fields": True,
                    }
                },
            }
        ],
    },
}
"""The Knative Broker CRD reduced to what addressable resolution reads (tests, demo)."""
