"""charts/event-router against the real test control plane (no node: no pod runs here; the
node test is tests/integration/test_helm_node.py).

* ``helm lint`` (default values and every optional object on), the schema rejecting bad values;
* the default ``helm template`` equals ``kubectl kustomize manifests/`` (one source of truth);
* ``helm template | kubectl apply --dry-run=server`` passes the API server's validation;
* ``helm install`` creates the objects, ``helm upgrade`` with a changed value changes the
  Deployment (a new ReplicaSet from kube-controller-manager), ``helm uninstall`` leaves only
  the CRDs.
"""

from __future__ import annotations

import copy
import json
import os
import secrets
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.integration.conftest import TestEnv
from tests.support.cluster import kubectl, kubectl_json, wait_for

pytestmark = [pytest.mark.integration, pytest.mark.timeout(240)]

REPO = Path(__file__).resolve().parents[2]
CHART = REPO / "charts" / "event-router"
#: labels the chart adds to what manifests/ has (Helm's recommended ones)
HELM_LABELS = (
    "helm.sh/chart",
    "app.kubernetes.io/managed-by",
    "app.kubernetes.io/instance",
    "app.kubernetes.io/version",
)
#: every optional object of the chart on
ALL_ON = [
    "metrics.enabled=true",
    "serviceMonitor.enabled=true",
    "podMonitor.enabled=true",
    "prometheusRule.enabled=true",
    "grafanaDashboard.enabled=true",
]
CRDS = (
    "routerconfigs.event-router.vmware.com",
    "clusterkopfpeerings.kopf.dev",
    "kopfpeerings.kopf.dev",
)


def helm_binary(env: TestEnv) -> str:
    path = env.bin_dir / "helm"
    if not path.exists():
        pytest.fail(f"helm not found at {path}: run `bash hack/build-tools.sh helm`", pytrace=False)
    return str(path)


def helm(env: TestEnv, *args: str, check: bool = True, timeout: float = 120) -> str:
    home = env.bin_dir.parent / "helm-home"  # helm's caches and config, not the user's
    r = subprocess.run(
        [helm_binary(env), *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        stdin=subprocess.DEVNULL,
        env={
            **os.environ,
            "HELM_CACHE_HOME": str(home / "cache"),
            "HELM_CONFIG_HOME": str(home / "config"),
            "HELM_DATA_HOME": str(home / "data"),
            "KUBECONFIG": env.kubeconfig,
        },
    )
    if check and r.returncode != 0:
        raise AssertionError(
            f"helm {' '.join(args)} failed ({r.returncode}):\n{r.stdout}{r.stderr}"
        )
    return r.stdout + (r.stderr if not check else "")


def docs(text: str) -> list[dict[str, Any]]:
    return [d for d in yaml.safe_load_all(text) if d]


def key(obj: dict[str, Any]) -> tuple[str, str, str]:
    meta = obj["metadata"]
    return (obj["kind"], meta.get("namespace", ""), meta["name"])


def without_helm_labels(obj: dict[str, Any]) -> dict[str, Any]:
    obj = copy.deepcopy(obj)
    metas = [obj["metadata"]]
    template = (obj.get("spec") or {}).get("template")
    if isinstance(template, dict) and "metadata" in template:
        metas.append(template["metadata"])
    for meta in metas:
        labels = meta.get("labels") or {}
        for name in HELM_LABELS:
            labels.pop(name, None)
        if labels:
            meta["labels"] = labels
        else:
            meta.pop("labels", None)
    return obj


def without_nel(obj: Any) -> Any:
    """``obj`` without U+0085 (NEL) in its strings: kustomize's YAML writer drops that
    character (from the CRD's patterns, written ``\\N``), the file and Helm keep it."""
    if isinstance(obj, str):
        return obj.replace("\x85", "")
    if isinstance(obj, list):
        return [without_nel(v) for v in obj]
    if isinstance(obj, dict):
        return {k: without_nel(v) for k, v in obj.items()}
    return obj


def kustomize() -> dict[tuple[str, str, str], dict[str, Any]]:
    return {key(o): o for o in docs(kubectl("kustomize", str(REPO / "manifests")))}


def template(env: TestEnv, *args: str, release: str = "event-router") -> list[dict[str, Any]]:
    out = helm(env, "template", release, str(CHART), "-n", "event-router-system", *args)
    return docs(out)


def test_helm_lint_with_defaults_and_every_option(testenv: TestEnv) -> None:
    helm(testenv, "lint", "--strict", str(CHART))
    helm(testenv, "lint", "--strict", str(CHART), "--set", ",".join(ALL_ON))
    helm(
        testenv,
        "lint",
        "--strict",
        str(CHART),
        "--set",
        "watchNamespaces={a,b},runtime=inprocess,peering.priority=10,logLevel=debug",
    )


@pytest.mark.parametrize(
    ("setting", "message"),
    [
        ("runtime=pods", "runtime"),
        ("image.pullPolicy=Sometimes", "pullPolicy"),
        ("watchNamespaces={Not_A_Namespace}", "watchNamespaces"),
        ("unknownValue=1", "unknownValue"),
        ("metrics.port=70000", "port"),
    ],
)
def test_the_values_schema_rejects_bad_values(testenv: TestEnv, setting: str, message: str) -> None:
    out = helm(testenv, "template", "x", str(CHART), "--set", setting, check=False)
    assert "values don't meet the specifications of the schema" in out, out
    assert message in out


def test_template_refuses_a_service_monitor_without_metrics(testenv: TestEnv) -> None:
    out = helm(
        testenv, "template", "x", str(CHART), "--set", "serviceMonitor.enabled=true", check=False
    )
    assert "serviceMonitor.enabled needs metrics.enabled" in out, out


def test_default_render_is_kubectl_kustomize_manifests(testenv: TestEnv) -> None:
    """The same objects, field by field, except what Helm does its own way: its labels, the
    Namespace (created before `helm install`, docs/helm.md) and the peering object the
    chart owns (the operator creates the same one when installed with kustomize)."""
    rendered = template(testenv, "--include-crds")
    # the chart's CRDs are manifests/' files as they are
    for source in ("crd.yaml", "peering.yaml"):
        for crd in docs((REPO / "manifests" / source).read_text()):
            assert next(o for o in rendered if key(o) == key(crd)) == crd
    ours = {key(o): without_nel(without_helm_labels(o)) for o in rendered}
    theirs = {k: without_nel(o) for k, o in kustomize().items()}
    namespace = ("Namespace", "", "event-router-system")
    peering = ("ClusterKopfPeering", "", "event-router")
    assert set(theirs) - set(ours) == {namespace}
    assert set(ours) - set(theirs) == {peering}
    for k in sorted(set(ours) & set(theirs)):
        assert ours[k] == theirs[k], f"{k} differs:\nchart: {ours[k]}\nmanifests: {theirs[k]}"
    assert ours[peering] == {
        "apiVersion": "kopf.dev/v1",
        "kind": "ClusterKopfPeering",
        "metadata": {
            "name": "event-router",
            "labels": {
                "app.kubernetes.io/name": "event-router-operator",
                "app.kubernetes.io/part-of": "event-router",
            },
        },
    }


def test_the_prometheus_rule_is_monitoring_alerts_yaml(testenv: TestEnv, tmp_path: Path) -> None:
    objs = template(testenv, "--set", ",".join(ALL_ON))
    rule = next(o for o in objs if o["kind"] == "PrometheusRule")
    alerts = yaml.safe_load((REPO / "monitoring" / "alerts.yaml").read_text())
    assert rule["spec"]["groups"] == alerts["groups"]
    path = tmp_path / "rendered-rules.yaml"
    path.write_text(yaml.safe_dump({"groups": rule["spec"]["groups"]}))
    r = subprocess.run(["promtool", "check", "rules", str(path)], capture_output=True, text=True)
    assert r.returncode == 0, r.stdout + r.stderr
    dashboard = next(o for o in objs if o["kind"] == "ConfigMap")
    assert json.loads(dashboard["data"]["event-router.json"]) == json.loads(
        (REPO / "monitoring" / "dashboard.json").read_text()
    )
    kinds = {o["kind"] for o in objs}
    assert {"ServiceMonitor", "PodMonitor", "PrometheusRule", "Service"} <= kinds


def served_crds_and_namespace(namespace: str) -> None:
    kubectl("apply", "--server-side", "--force-conflicts", "-f", str(CHART / "crds"))
    for crd in CRDS:
        kubectl("wait", "--for=condition=Established", f"crd/{crd}", "--timeout=60s")
    if not kubectl("get", "namespace", namespace, "--ignore-not-found", "-o", "name").strip():
        kubectl("create", "namespace", namespace)


@pytest.mark.parametrize(
    "values",
    [
        [],
        ["--set", "metrics.enabled=true,runtime=inprocess,logLevel=debug,peering.priority=5"],
        ["--set", "peering.standalone=true,replicas=1"],
    ],
    ids=["defaults", "metrics-inprocess", "standalone"],
)
def test_template_applies_with_dry_run_server(testenv: TestEnv, values: list[str]) -> None:
    """kube-apiserver validates every rendered object (schemas, RBAC rules, field names)."""
    ns = f"t-helm-dry-{secrets.token_hex(3)}"
    served_crds_and_namespace(ns)
    try:
        out = helm(testenv, "template", "er", str(CHART), "-n", ns, *values)
        applied = kubectl("apply", "--dry-run=server", "-f", "-", "-o", "name", input_=out)
        names = applied.split()
        assert any(n.startswith("deployment.apps/") for n in names), names
        assert any(n.startswith("clusterrole.rbac.authorization.k8s.io/") for n in names), names
    finally:
        kubectl("delete", "namespace", ns, "--wait=false", check=False)


@pytest.fixture
def release(testenv: TestEnv) -> Iterator[tuple[str, str]]:
    """A release name and namespace of its own; everything it may leave is removed after."""
    name = f"er-{secrets.token_hex(3)}"
    ns = f"t-helm-{secrets.token_hex(3)}"
    kubectl("create", "namespace", ns)
    try:
        yield name, ns
    finally:
        helm(testenv, "uninstall", name, "-n", ns, "--wait", check=False)
        kubectl("delete", "namespace", ns, "--wait=false", check=False)


def release_objects(name: str, ns: str) -> list[str]:
    """Every object of the release still in the API server (by its names and labels)."""
    out = kubectl(
        "get",
        "deployments,serviceaccounts,services,configmaps,kopfpeerings",
        "-n",
        ns,
        "-l",
        f"app.kubernetes.io/instance={name}",
        "-o",
        "name",
    ).split()
    out += kubectl(
        "get",
        "clusterroles,clusterrolebindings,clusterkopfpeerings",
        "-l",
        f"app.kubernetes.io/instance={name}",
        "-o",
        "name",
    ).split()
    return sorted(out)


def test_install_upgrade_uninstall_on_the_control_plane(
    testenv: TestEnv, release: tuple[str, str]
) -> None:
    name, ns = release
    # names of its own, so that it never meets the manifests/ objects of other tests, and
    # only its namespace watched (with a node its operator pod runs: it must not act on the
    # RouterConfigs of other tests)
    unique = [
        "--set",
        f"fullnameOverride={name}-operator,peering.name={name},watchNamespaces={{{ns}}}",
    ]
    helm(testenv, "install", name, str(CHART), "-n", ns, *unique)
    want = sorted(
        [
            f"deployment.apps/{name}-operator",
            f"serviceaccount/{name}-operator",
            f"clusterrole.rbac.authorization.k8s.io/{name}-operator",
            f"clusterrolebinding.rbac.authorization.k8s.io/{name}-operator",
            f"kopfpeering.kopf.dev/{name}",
        ]
    )
    assert release_objects(name, ns) == want
    for crd in CRDS:
        kubectl("get", "crd", crd)
    binding = kubectl_json("get", "clusterrolebinding", f"{name}-operator")
    assert binding["subjects"] == [
        {"kind": "ServiceAccount", "name": f"{name}-operator", "namespace": ns}
    ]
    status = json.loads(helm(testenv, "status", name, "-n", ns, "-o", "json"))
    assert status["info"]["status"] == "deployed" and status["version"] == 1

    dep = f"{name}-operator"

    def replicasets() -> list[dict[str, Any]]:
        items: list[dict[str, Any]] = kubectl_json(
            "get", "replicasets", "-n", ns, "-l", f"app.kubernetes.io/name={dep}"
        )["items"]
        return items

    first = wait_for(replicasets, 60, "the first ReplicaSet")
    before = kubectl_json("get", "deployment", "-n", ns, dep)

    # upgrade with a changed value: a new pod template, a new ReplicaSet (the operator rolls)
    helm(testenv, "upgrade", name, str(CHART), "-n", ns, *unique, "--set", "logLevel=debug")
    after = kubectl_json("get", "deployment", "-n", ns, dep)
    assert after["metadata"]["generation"] == before["metadata"]["generation"] + 1
    command = after["spec"]["template"]["spec"]["containers"][0]["command"]
    assert "--log-level=debug" in command
    assert "--log-level=debug" not in before["spec"]["template"]["spec"]["containers"][0]["command"]
    old_hashes = {rs["metadata"]["labels"]["pod-template-hash"] for rs in first}
    wait_for(
        lambda: (
            {rs["metadata"]["labels"]["pod-template-hash"] for rs in replicasets()} - old_hashes
        ),
        60,
        "a new ReplicaSet for the upgraded pod template",
    )
    status = json.loads(helm(testenv, "status", name, "-n", ns, "-o", "json"))
    assert status["version"] == 2

    # uninstall: nothing of the release is left but the CRDs (Helm never deletes crds/)
    helm(testenv, "uninstall", name, "-n", ns, "--wait", "--timeout", "90s")
    wait_for(lambda: not release_objects(name, ns), 60, "the release's objects to be gone")

    def leftovers() -> list[str]:
        out = kubectl("get", "all,serviceaccounts,secrets,configmaps", "-n", ns, "-o", "name")
        return [
            n
            for n in out.split()
            if n not in ("configmap/kube-root-ca.crt", "serviceaccount/default")
        ]

    # the ReplicaSets go with the garbage collector; the release record (a Secret) too
    wait_for(lambda: not leftovers(), 60, "an empty namespace")
    for crd in CRDS:
        kubectl("get", "crd", crd)
    assert helm(testenv, "list", "-n", ns, "-q").strip() == ""
