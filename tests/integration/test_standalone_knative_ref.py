"""The original's config with ``destination.ref`` works standalone: the router resolves the
Knative Broker itself from the real API server (KUBECONFIG), follows an address change, and
names the field when the Broker is missing."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml
from cloudevents.conversion import to_binary
from cloudevents.http import CloudEvent
from kubernetes import client

from event_router.config.models import RouterConfig
from event_router.core import RouterContext
from event_router.operator.devtools import BROKER_CRD, apply, install_crd_object
from event_router.operator.kube import request
from event_router.processors import knative
from event_router.router import Router
from tests.support.net import free_port
from tests.support.sink import CloudEventSink

pytestmark = pytest.mark.integration


def config(namespace: str, port: int, broker: str = "default") -> dict[str, Any]:
    return {
        "apiVersion": "event-router.vmware.com/v1alpha1",
        "kind": "RouterConfig",
        "metadata": {"name": "standalone-ref"},
        "eventProvider": {
            "type": "webhook",
            "name": "hook",
            "webhook": {"bindAddress": f"127.0.0.1:{port}", "path": "/webhook"},
        },
        "eventProcessor": {
            "type": "knative",
            "name": "broker",
            "knative": {
                "encoding": "binary",
                "destination": {
                    "ref": {
                        "apiVersion": "eventing.knative.dev/v1",
                        "kind": "Broker",
                        "name": broker,
                        "namespace": namespace,
                    }
                },
            },
        },
    }


def set_broker_url(api: client.ApiClient, namespace: str, url: str) -> None:
    request(
        api,
        "PATCH",
        f"/apis/eventing.knative.dev/v1/namespaces/{namespace}/brokers/default/status",
        body={"status": {"address": {"url": url}}},
        content_type="application/merge-patch+json",
    )


async def post(port: int, event_id: str) -> None:
    event = CloudEvent(
        {"type": "com.example.test", "source": "test", "id": event_id}, {"n": event_id}
    )
    headers, body = to_binary(event)
    async with httpx.AsyncClient() as http:
        r = await http.post(f"http://127.0.0.1:{port}/webhook", headers=headers, content=body)
    assert r.status_code == 202, r.text


@pytest.fixture
def broker(k8s_client: client.ApiClient, namespace: str) -> str:
    install_crd_object(k8s_client, BROKER_CRD)
    apply(
        k8s_client,
        {
            "apiVersion": "eventing.knative.dev/v1",
            "kind": "Broker",
            "metadata": {"name": "default"},
        },
        namespace,
    )
    return namespace


async def test_ref_to_a_broker_is_resolved_and_followed(
    k8s_client: client.ApiClient, broker: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    namespace = broker
    monkeypatch.setattr(knative, "REF_REFRESH_SECONDS", 0.2)
    async with CloudEventSink() as first, CloudEventSink() as second:
        set_broker_url(k8s_client, namespace, first.url)
        port = free_port()
        router = Router(RouterContext(config=RouterConfig.model_validate(config(namespace, port))))
        await router.start()
        try:
            await router.wait_ready(10)
            await post(port, "one")
            [got] = await first.wait_for(1, 10)
            assert got["id"] == "one"

            # the Broker's address changes: the router follows it without a restart
            set_broker_url(k8s_client, namespace, second.url)
            deadline = asyncio.get_running_loop().time() + 10
            sent = 0
            while not second.events:
                assert asyncio.get_running_loop().time() < deadline, "address change not followed"
                sent += 1
                await post(port, f"probe-{sent}")
                await asyncio.sleep(0.1)
            assert second.events[0]["id"].startswith("probe-")
            # every event went to exactly one of the two addresses
            ids = [e["id"] for e in first.events + second.events]
            assert sorted(ids) == sorted(["one", *(f"probe-{i}" for i in range(1, sent + 1))])
        finally:
            await router.stop()


def test_cli_with_a_missing_broker_names_the_field(
    broker: str, tmp_path: Path, testenv: Any
) -> None:
    path = tmp_path / "config.yaml"
    path.write_text(yaml.safe_dump(config(broker, free_port(), broker="nope")))
    env = {**os.environ, "KUBECONFIG": testenv.kubeconfig}
    done = subprocess.run(
        [str(Path(sys.executable).parent / "event-router"), "-config", str(path)],
        capture_output=True,
        text=True,
        timeout=60,
        env=env,
    )
    assert done.returncode == 1, done.stdout + done.stderr
    out = done.stdout + done.stderr
    assert "eventProcessor.knative.destination.ref" in out
    assert f"Broker {broker}/nope" in out and "not found" in out
