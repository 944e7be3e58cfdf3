"""metrics.py: bounded label cardinality, bind addresses, basic auth, bind errors."""

from __future__ import annotations

import asyncio
import socket

import httpx
import pytest

from event_router.checkpoints import CheckpointTracker
from event_router.config.models import Auth
from event_router.metrics import (
    MAX_DISTINCT,
    OTHER,
    InvocationStats,
    MetricsServer,
    RouterMetrics,
    basic_auth_checker,
    split_host_port,
)


def test_event_type_labels_are_bounded() -> None:
    m = RouterMetrics()
    for i in range(MAX_DISTINCT + 50):
        m.child(m.received, "webhook", m.type_label(f"type-{i}")).inc()
    assert m.type_label("type-1") == "type-1"  # known types keep their label
    assert m.type_label("brand-new") == OTHER
    text = m.render().decode()
    assert f'type="{OTHER}"}} 50.0' in text
    assert text.count("event_router_events_received_total{") == MAX_DISTINCT + 1


def test_stats_subjects_are_bounded() -> None:
    stats = InvocationStats("knative", "http://x/", 0.0)
    for i in range(MAX_DISTINCT + 10):
        stats.record(f"Subject{i}", ok=i % 2 == 0)
    out = stats.as_json()["invocations"]
    assert len(out) == MAX_DISTINCT + 1
    assert out[OTHER] == {"SuccessCount": 5, "FailureCount": 5}
    assert stats.as_json()["started"] == "1970-01-01T00:00:00.000Z"


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("0.0.0.0:8082", ("0.0.0.0", 8082)),
        ("localhost:80", ("localhost", 80)),
        ("[::1]:9000", ("::1", 9000)),
        (":8080", ("0.0.0.0", 8080)),
    ],
)
def test_split_host_port(value: str, expected: tuple[str, int]) -> None:
    assert split_host_port(value, field="x.bindAddress") == expected


@pytest.mark.parametrize("value", ["8080", "host:", "host:http", "host:70000"])
def test_split_host_port_errors_name_the_field(value: str) -> None:
    with pytest.raises(ValueError, match=r"x\.bindAddress: .*" + value.replace(":", ".")):
        split_host_port(value, field="x.bindAddress")


def test_basic_auth_checker() -> None:
    auth = Auth.model_validate(
        {"type": "basic_auth", "basicAuth": {"username": "u", "password": "p:w"}}
    )
    check = basic_auth_checker(auth, field="f.auth")
    assert check is not None
    assert check("Basic " + "dTpwOnc=")  # u:p:w
    assert not check("Basic dTpwOng=")
    assert not check(None)
    assert not check("Bearer dTpwOnc=")
    assert basic_auth_checker(None, field="f.auth") is None


async def test_bind_error_names_the_field() -> None:
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        server = MetricsServer(f"127.0.0.1:{port}", RouterMetrics(), stats=dict, ready=lambda: True)
        with pytest.raises(OSError, match=r"metricsProvider\.default\.bindAddress: cannot listen"):
            await server.start()


async def test_readyz_follows_readiness() -> None:
    state = {"ready": False}
    server = MetricsServer("127.0.0.1:0", RouterMetrics(), stats=dict, ready=lambda: state["ready"])
    await server.start()
    try:
        async with httpx.AsyncClient() as client:
            assert (await client.get(server.url + "/readyz")).status_code == 503
            state["ready"] = True
            assert (await client.get(server.url + "/readyz")).status_code == 200
            r = await client.get(server.url + "/metrics")
            assert r.headers["content-type"].startswith("text/plain")
            assert (await client.get(server.url + "/stats")).json() == {}
    finally:
        await server.stop()


class _FakeProvider:
    def __init__(self) -> None:
        self.ready = False
        self.checkpoint_tracker: CheckpointTracker[int] | None = None
        self.checkpoint_advanced_at: float | None = None


async def test_provider_connected_and_checkpoint_series() -> None:
    m = RouterMetrics({"namespace": "ns", "routerconfig": "rc"})
    p = _FakeProvider()
    m.watch_provider("vcenter", p)
    text = m.render().decode()
    labels = 'namespace="ns",provider="vcenter",routerconfig="rc"'
    assert f"event_router_provider_connected{{{labels}}} 0.0" in text
    # no checkpoint store: no checkpoint series at all
    assert "event_router_checkpoint" not in text

    p.ready = True
    tracker: CheckpointTracker[int] = CheckpointTracker()
    p.checkpoint_tracker = tracker
    loop = asyncio.get_running_loop()
    tickets = [loop.create_future() for _ in range(3)]
    for i, t in enumerate(tickets):
        tracker.add(i, t)
    tickets[0].set_result(True)
    tickets[1].set_result(False)  # not delivered: the checkpoint stays before it for good
    assert tracker.advance() == 0
    tracker.add(3, loop.create_future())
    p.checkpoint_advanced_at = 1700000000.5
    text = m.render().decode()
    assert f"event_router_provider_connected{{{labels}}} 1.0" in text
    assert f"event_router_checkpoint_pending_events{{{labels}}} 3.0" in text
    assert (
        f"event_router_checkpoint_last_advanced_timestamp_seconds{{{labels}}} 1.7000000005e+09"
        in text
    )
