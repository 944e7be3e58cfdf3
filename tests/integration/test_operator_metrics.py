"""The operator's ``--metrics-bind-address`` server with the in-process runtime, on the real
test control plane: every RouterConfig's router series in one ``/metrics`` with its namespace
and name, ``/stats`` per RouterConfig, and a deleted RouterConfig's series gone."""

from __future__ import annotations

import asyncio
from typing import Any

import httpx
import pytest
from kubernetes import client
from prometheus_client.parser import text_string_to_metric_families

from event_router.operator.devtools import (
    create_rc,
    get_rc,
    rc_path,
    wait_for,
    webhook_knative_spec,
)
from event_router.operator.kube import request
from tests.integration.test_operator import api, operator, rc, ready  # noqa: F401 - fixtures
from tests.support.net import free_port, free_ports
from tests.support.sink import CloudEventSink

pytestmark = [pytest.mark.integration, pytest.mark.timeout(150)]


def webhook_spec(port: int, sink_url: str) -> dict[str, Any]:
    host, _, sink_port = sink_url.split("://", 1)[1].rstrip("/").partition(":")
    return webhook_knative_spec(port, host, int(sink_port))


async def post_events(http: httpx.AsyncClient, port: int, n: int, type_: str) -> None:
    for i in range(n):
        r = await http.post(
            f"http://127.0.0.1:{port}/webhook",
            headers={
                "ce-specversion": "1.0",
                "ce-id": f"{type_}-{i}",
                "ce-source": "test",
                "ce-type": type_,
                "content-type": "application/json",
            },
            content=b'{"n": %d}' % i,
        )
        assert r.status_code < 300, r.text


def samples(text: str, name: str) -> dict[tuple[tuple[str, str], ...], float]:
    out = {}
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            if s.name == name:
                out[tuple(sorted(s.labels.items()))] = s.value
    return out


def delivered(text: str, namespace: str) -> dict[str, float]:
    """routerconfig -> delivered events (all types) in ``namespace``."""
    out: dict[str, float] = {}
    for labels, value in samples(text, "event_router_events_delivered_total").items():
        d = dict(labels)
        if d.get("namespace") == namespace:
            out[d["routerconfig"]] = out.get(d["routerconfig"], 0) + value
    return out


async def test_metrics_of_every_inprocess_router_with_its_labels_and_gone_on_delete(
    api: client.ApiClient,  # noqa: F811
    namespace: str,
    operator: Any,  # noqa: F811
) -> None:
    ns = namespace
    port_a, port_b = free_ports(2)
    metrics_port = free_port()
    base = f"http://127.0.0.1:{metrics_port}"
    async with CloudEventSink() as sink, httpx.AsyncClient(timeout=10) as http:
        create_rc(api, ns, rc("hook-a", webhook_spec(port_a, sink.url)))
        create_rc(api, ns, rc("hook-b", webhook_spec(port_b, sink.url)))
        operator("inprocess", "--metrics-bind-address", f"127.0.0.1:{metrics_port}")
        for name in ("hook-a", "hook-b"):
            await asyncio.to_thread(wait_for, ready(api, ns, name), 40, f"{name} Ready")

        assert (await http.get(f"{base}/healthz")).status_code == 200
        await post_events(http, port_a, 3, "com.example.a")
        await post_events(http, port_b, 5, "com.example.b")
        await sink.wait_for(8, timeout=20)

        async def scrape() -> str:
            r = await http.get(f"{base}/metrics")
            assert r.status_code == 200
            return r.text

        deadline = asyncio.get_running_loop().time() + 10
        while delivered(text := await scrape(), ns) != {"hook-a": 3, "hook-b": 5}:
            assert asyncio.get_running_loop().time() < deadline, delivered(text, ns)
            await asyncio.sleep(0.1)
        by_type = samples(text, "event_router_events_delivered_total")
        key_a = (
            ("namespace", ns),
            ("processor", "sink"),
            ("routerconfig", "hook-a"),
            ("type", "com.example.a"),
        )
        assert by_type[key_a] == 3
        received = samples(text, "event_router_events_received_total")
        assert received[(*key_a[:1], ("provider", "webhook"), *key_a[2:])] == 3
        # each metric name once in the exposition (several routers' registries merged)
        assert text.count("# TYPE event_router_events_delivered_total counter") == 1
        rcs = samples(text, "event_router_operator_routerconfigs")
        assert rcs[(("ready", "True"),)] == 2

        stats = (await http.get(f"{base}/stats")).json()
        a = stats[f"{ns}/hook-a"]["vmware.event.router.stats"]
        invocations = next(v for k, v in a.items() if "invocations" in v)["invocations"]
        assert sum(v["SuccessCount"] for v in invocations.values()) == 3
        assert f"{ns}/hook-b" in stats

        # delete one: its series go, the other's stay
        request(api, "DELETE", rc_path(ns, "hook-b"))
        await asyncio.to_thread(wait_for, lambda: get_rc(api, ns, "hook-b") is None, 20, "gone")
        deadline = asyncio.get_running_loop().time() + 20
        while "hook-b" in (text := await scrape()):
            assert asyncio.get_running_loop().time() < deadline, "hook-b series still served"
            await asyncio.sleep(0.2)
        assert delivered(text, ns) == {"hook-a": 3}
        assert samples(text, "event_router_operator_routerconfigs")[(("ready", "True"),)] == 1
        assert f"{ns}/hook-b" not in (await http.get(f"{base}/stats")).json()
