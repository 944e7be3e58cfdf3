"""A newcomer's first run on the real API server: only the RouterConfig CRD installed, no
kopf.dev peering CRDs.

* ``event-router-operator --runtime inprocess --all-namespaces`` (no ``--peering``): kopf's
  rule, standalone with a WARNING; the RouterConfig gets its status and delivers.
* ``--peering NAME`` given explicitly: an error at start naming the missing object and the
  fix, exit code 2.
"""

from __future__ import annotations

import asyncio
import sys
import time
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml
from kubernetes.client.exceptions import ApiException

from event_router.operator.devtools import (
    OperatorProcess,
    create_rc,
    install_crd_object,
    wait_for,
)
from event_router.operator.kube import request
from tests.integration.test_operator import api, rc, ready  # noqa: F401 - api is a fixture
from tests.integration.test_operator_metrics import post_events, webhook_spec
from tests.support.net import free_port
from tests.support.sink import CloudEventSink

pytestmark = [pytest.mark.integration, pytest.mark.timeout(150)]

PEERING_MANIFEST = (Path(__file__).resolve().parents[2] / "manifests" / "peering.yaml").read_text()
PEERING_CRDS = ("clusterkopfpeerings.kopf.dev", "kopfpeerings.kopf.dev")
CRDS = "/apis/apiextensions.k8s.io/v1/customresourcedefinitions"


def _without_peering_crds(api: Any) -> None:  # noqa: F811
    """Only the RouterConfig CRD: remove kopf's peering CRDs if an earlier test installed
    them in this test environment, and wait until kopf.dev/v1 is no longer served."""
    for name in PEERING_CRDS:
        try:
            request(api, "DELETE", f"{CRDS}/{name}")
        except ApiException as e:
            if e.status != 404:
                raise
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        try:
            request(api, "GET", "/apis/kopf.dev/v1")
        except ApiException as e:
            if e.status == 404:
                return
            raise
        time.sleep(0.5)
    raise AssertionError("kopf.dev/v1 is still served")


async def test_first_run_without_peering_crds_runs_standalone(
    api: Any,  # noqa: F811
    namespace: str,
    testenv: Any,
    tmp_path: Path,
) -> None:
    _without_peering_crds(api)
    metrics_port, hook_port = free_port(), free_port()
    async with CloudEventSink() as sink:
        op = OperatorProcess(
            [
                "--runtime",
                "inprocess",
                "--all-namespaces",
                "--resync-seconds",
                "2",
                "--metrics-bind-address",
                f"127.0.0.1:{metrics_port}",
            ],
            tmp_path / "operator.log",
            kubeconfig=testenv.kubeconfig,
        ).start()
        try:
            create_rc(api, namespace, rc("first", webhook_spec(hook_port, sink.url)))
            await asyncio.to_thread(
                wait_for, ready(api, namespace, "first"), 60, "RouterConfig first Ready"
            )
            log = op.log(20000)
            assert "WARNING" in log and "running standalone (kopf's rule)" in log, log
            assert "manifests/peering.yaml" in log
            async with httpx.AsyncClient(timeout=5) as http:
                r = await http.get(f"http://127.0.0.1:{metrics_port}/readyz")
                assert r.status_code == 200, r.text
                await post_events(http, hook_port, 1, "first.run")
            events = await sink.wait_for(1, timeout=15)
            assert events[0]["type"] == "first.run"
            assert op.proc is not None and op.proc.poll() is None
        finally:
            op.stop()


@pytest.mark.parametrize("scope", ["--all-namespaces", "--namespace"])
def test_explicit_peering_without_crds_is_an_error_at_start(
    api: Any,  # noqa: F811
    namespace: str,
    testenv: Any,
    tmp_path: Path,
    scope: str,
) -> None:
    _without_peering_crds(api)
    args = ["--runtime", "inprocess", scope, *([namespace] if scope == "--namespace" else [])]
    op = OperatorProcess(
        [*args, "--peering", "team-a"], tmp_path / "operator.log", kubeconfig=testenv.kubeconfig
    ).start()
    try:
        assert op.proc is not None
        code = op.proc.wait(60)
    finally:
        op.stop()
    log = op.log(20000)
    assert code == 2, log
    assert "ERROR" in log and "--peering team-a" in log
    if scope == "--namespace":
        assert f"KopfPeering 'team-a' in namespace {namespace}" in log
    else:
        assert "ClusterKopfPeering 'team-a'" in log
    assert "kopf.dev peering CRDs are not installed" in log
    assert "manifests/peering.yaml" in log and "--standalone" in log


async def test_no_replica_acting_shows_on_readyz_and_at_error(
    api: Any,  # noqa: F811
    namespace: str,
    testenv: Any,
    tmp_path: Path,
) -> None:
    """Two replicas of the same priority (a Deployment scaled to 2 without --priority): kopf
    pauses both, so nobody acts and RouterConfigs would wait for status silently. Each says
    why at ERROR and on /readyz (503); once one leaves, the other acts and is ready."""
    for doc in yaml.safe_load_all(PEERING_MANIFEST):
        if doc and doc.get("kind") == "CustomResourceDefinition":
            install_crd_object(api, doc)
    ports = [free_port(), free_port()]
    ops = [
        OperatorProcess(
            [
                "--runtime",
                "inprocess",
                "--namespace",
                namespace,
                "--peering",
                "event-router",
                "--peering-lifetime",
                "10",
                "--metrics-bind-address",
                f"127.0.0.1:{port}",
            ],
            tmp_path / f"operator-{n}.log",
            kubeconfig=testenv.kubeconfig,
        ).start()
        for n, port in enumerate(ports)
    ]

    def readyz(port: int, status: int) -> Any:
        def probe() -> httpx.Response | None:
            try:
                r = httpx.get(f"http://127.0.0.1:{port}/readyz", timeout=2)
            except httpx.HTTPError:
                return None
            return r if r.status_code == status else None

        return probe

    try:
        for port in ports:
            r = await asyncio.to_thread(wait_for, readyz(port, 503), 60, "/readyz 503")
            assert "peering: this replica cannot act" in r.text, r.text
            assert "same priority" in r.text and "--priority" in r.text
        for op in ops:
            await asyncio.to_thread(
                wait_for,
                lambda op=op: (
                    "ERROR   event_router.operator.peering" in op.log(40000)
                    and "RouterConfigs get no status while no replica acts" in op.log(40000)
                ),
                30,
                "the ERROR line",
            )
        ops[1].stop()
        await asyncio.to_thread(wait_for, readyz(ports[0], 200), 60, "/readyz 200")
    finally:
        for op in ops:
            op.stop()
            sys.stderr.write(f"--- {op.log_path} ---\n{op.log(6000)}\n")
        _without_peering_crds(api)
