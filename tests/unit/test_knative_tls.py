"""Knative delivery over HTTPS to a real TLS sink: certificates.rootCAs, insecureSSL, and an
untrusted certificate failing at once with a message that says what to set."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import pytest
from cloudevents.http import CloudEvent

from event_router.config.loader import parse_config
from event_router.core import DeliveryError, RouterContext
from event_router.delivery import RetryPolicy
from event_router.processors.knative import KnativeProcessor
from tests.support.sink import CloudEventSink
from tests.support.tls import make_tls


def _processor(
    url: str, *, insecure: bool = False, root_cas: list[str] | None = None
) -> KnativeProcessor:
    data: dict[str, Any] = {
        "apiVersion": "event-router.vmware.com/v1alpha1",
        "kind": "RouterConfig",
        "metadata": {"name": "tls"},
        "eventProvider": {
            "type": "webhook",
            "name": "w",
            "webhook": {"bindAddress": "127.0.0.1:8080", "path": "/hook"},
        },
        "eventProcessor": {
            "type": "knative",
            "name": "k",
            "knative": {"destination": {"uri": url}, "insecureSSL": insecure},
        },
    }
    if root_cas:
        data["certificates"] = {"rootCAs": root_cas}
    return KnativeProcessor(
        RouterContext(parse_config(data)), retry=RetryPolicy(attempts=3, base_delay=0.01)
    )


EVENT = CloudEvent({"type": "t", "source": "/s", "id": "tls-1"}, {"secure": True})


@pytest.mark.parametrize("mode", ["rootCAs", "insecureSSL"])
async def test_https_delivery(tmp_path: Path, mode: str) -> None:
    ca, server_ctx = make_tls(tmp_path)
    async with CloudEventSink(ssl_context=server_ctx) as sink:
        assert sink.url.startswith("https://")
        proc = (
            _processor(sink.url, root_cas=[str(ca)])
            if mode == "rootCAs"
            else _processor(sink.url, insecure=True)
        )
        await proc.start()
        try:
            await proc.process(EVENT)
        finally:
            await proc.close()
        (got,) = await sink.wait_for(1, timeout=5)
        assert got.get_data() == {"secure": True}


async def test_untrusted_certificate_fails_at_once_saying_what_to_set(tmp_path: Path) -> None:
    _, server_ctx = make_tls(tmp_path)
    async with CloudEventSink(ssl_context=server_ctx) as sink:
        proc = _processor(sink.url)
        await proc.start()
        start = time.monotonic()
        try:
            with pytest.raises(DeliveryError) as info:
                await proc.process(EVENT)
        finally:
            await proc.close()
        assert info.value.retryable is False
        assert "certificates.rootCAs" in str(info.value) and "insecureSSL" in str(info.value)
        assert time.monotonic() - start < 2
        assert sink.events == []
