"""The knative processor takes its proxy from the environment, as the original router's Go
client did: HTTP_PROXY (credentials kept) for http:// sinks, NO_PROXY bypasses it. A
CloudEventSink stands in for the proxy: an aiohttp server takes the absolute-form request."""

from __future__ import annotations

import base64

import pytest
from cloudevents.http import CloudEvent

from event_router.core import DeliveryError
from tests.support.sink import CloudEventSink
from tests.unit.test_knative_tls import _processor

PROXY_VARS = ("http_proxy", "https_proxy", "all_proxy", "no_proxy")
#: a sink name that does not resolve: only a proxy can deliver to it
SINK = "http://broker-ingress.knative.invalid:8080/default/default"


@pytest.fixture(autouse=True)
def no_proxy_env(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in PROXY_VARS:
        monkeypatch.delenv(name, raising=False)
        monkeypatch.delenv(name.upper(), raising=False)


async def test_http_proxy_from_the_environment_carries_the_event(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    async with CloudEventSink() as proxy:
        where = proxy.url.split("://", 1)[1].rstrip("/")
        monkeypatch.setenv("HTTP_PROXY", f"http://proxy-user:proxy-pass@{where}")
        proc = _processor(SINK)
        await proc.start()
        try:
            await proc.process(CloudEvent({"type": "t", "source": "/s", "id": "p-1"}, {"n": 1}))
        finally:
            await proc.close()
        (got,) = await proxy.wait_for(1, timeout=5)
    assert got["id"] == "p-1"
    headers, _ = proxy.raw[0]
    assert headers["host"] == "broker-ingress.knative.invalid:8080"
    credentials = base64.b64encode(b"proxy-user:proxy-pass").decode()
    assert headers["proxy-authorization"] == f"Basic {credentials}"


async def test_no_proxy_hosts_are_reached_directly(monkeypatch: pytest.MonkeyPatch) -> None:
    async with CloudEventSink() as proxy:
        where = proxy.url.split("://", 1)[1].rstrip("/")
        monkeypatch.setenv("HTTP_PROXY", f"http://{where}")
        monkeypatch.setenv("NO_PROXY", ".knative.invalid")
        proc = _processor(SINK)
        await proc.start()
        try:
            # directly: the name does not resolve, so the delivery fails for good here
            with pytest.raises(DeliveryError, match=r"knative.invalid|resolve|connect"):
                await proc.process(CloudEvent({"type": "t", "source": "/s", "id": "p-2"}, {}))
        finally:
            await proc.close()
        assert proxy.raw == []
