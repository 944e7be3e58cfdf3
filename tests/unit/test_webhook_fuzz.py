"""Hypothesis throws random bodies and headers at a running webhook provider: never a 5xx,
never a crash, and the router still delivers a good event afterwards.

The router (webhook -> knative -> CloudEventSink) runs on its own event loop in a thread;
the examples are posted with a synchronous httpx client over real HTTP.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from cloudevents.conversion import to_binary, to_structured
from cloudevents.http import CloudEvent
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from event_router.config.loader import parse_config
from event_router.core import RouterContext
from event_router.router import Router
from tests.support.background import Background
from tests.support.net import free_port
from tests.support.sink import CloudEventSink, percent_encoded

ALLOWED = {202, 400, 405, 413, 415}


@pytest.fixture(scope="module")
def webhook() -> Iterator[tuple[str, CloudEventSink, Router]]:
    bg = Background()
    sink = CloudEventSink()
    bg.run(sink.__aenter__())
    port = free_port()
    config = parse_config(
        {
            "apiVersion": "event-router.vmware.com/v1alpha1",
            "kind": "RouterConfig",
            "metadata": {"name": "fuzz"},
            "eventProvider": {
                "type": "webhook",
                "name": "w",
                "webhook": {
                    "bindAddress": f"127.0.0.1:{port}",
                    "path": "/webhook",
                    "maxBodyBytes": 4096,
                },
            },
            "eventProcessor": {
                "type": "knative",
                "name": "k",
                "knative": {"destination": {"uri": sink.url}},
            },
        }
    )
    router = Router(RouterContext(config))
    bg.run(router.start())
    bg.run(router.wait_ready(5))
    try:
        yield f"http://127.0.0.1:{port}/webhook", sink, router
    finally:
        bg.run(router.stop(5))
        bg.run(sink.__aexit__(None, None, None))
        bg.close()


HEADER_NAMES = [
    "content-type",
    "ce-specversion",
    "ce-id",
    "ce-source",
    "ce-type",
    "ce-time",
    "ce-subject",
    "ce-datacontenttype",
    "ce-Foo_Bar",
    "ce-x",
    "ce-",
    "authorization",
    "x-anything",
]
CONTENT_TYPES = [
    "application/cloudevents+json",
    "application/cloudevents-batch+json",
    "application/json",
    "application/cloudevents+json; charset=utf-8",
    "text/plain",
    "",
    "multipart/form-data; boundary=x",
]
# header values as HTTP allows them (no leading/trailing blanks)
header_text = st.text(st.characters(min_codepoint=32, max_codepoint=126), max_size=40).map(
    str.strip
)
header_value = st.one_of(
    st.sampled_from(["1.0", "0.3", "2.0", "", "a", "1", "true", *CONTENT_TYPES]), header_text
)
# valid JSON only: NaN and Infinity are not JSON, and the webhook answers 400 for them
# (tests/unit/test_webhook_hardening.py)
json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers()
    | st.floats(allow_nan=False, allow_infinity=False)
    | header_text,
    lambda children: (
        st.lists(children, max_size=4)
        | st.dictionaries(
            st.sampled_from(
                [
                    "specversion",
                    "id",
                    "source",
                    "type",
                    "data",
                    "data_base64",
                    "time",
                    "Ext",
                    "x",
                    "subject",
                ]
            )
            | header_text,
            children,
            max_size=6,
        )
    ),
    max_leaves=12,
)


def _structured_body(draw_value: Any) -> bytes:
    return json.dumps(draw_value).encode()


bodies = st.one_of(
    st.binary(max_size=600),
    json_values.map(_structured_body),
    st.lists(json_values, max_size=4).map(_structured_body),
    st.binary(min_size=4097, max_size=5000),  # over maxBodyBytes
)


@settings(
    max_examples=250,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(
    method=st.sampled_from(["POST"] * 6 + ["GET", "PUT", "DELETE", "PATCH"]),
    headers=st.dictionaries(st.sampled_from(HEADER_NAMES), header_value, max_size=8),
    content_type=st.sampled_from([*CONTENT_TYPES, None]),
    body=bodies,
)
def test_random_requests_never_5xx(
    webhook: tuple[str, CloudEventSink, Router],
    method: str,
    headers: dict[str, str],
    content_type: str | None,
    body: bytes,
) -> None:
    url, _, _ = webhook
    if content_type is not None:
        headers = {**headers, "content-type": content_type}
    with httpx.Client(timeout=10) as client:
        r = client.request(method, url, headers=headers, content=body)
    assert r.status_code in ALLOWED, (r.status_code, r.text)
    if r.status_code >= 400:
        assert r.text.strip(), "an error answer says why"


@settings(
    max_examples=100, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    extensions=st.dictionaries(
        st.text("abcdefghijklmnopqrstuvwxyz0123456789", min_size=1, max_size=12).filter(
            lambda k: k not in {"id", "source", "type", "specversion", "data", "time"}
        ),
        header_text,
        max_size=4,
    ),
    data=json_values,
    structured=st.booleans(),
)
def test_valid_random_events_are_accepted_and_delivered_unchanged(
    webhook: tuple[str, CloudEventSink, Router],
    extensions: dict[str, str],
    data: Any,
    structured: bool,
) -> None:
    url, sink, _ = webhook
    attrs = {
        "type": "fuzz.t",
        "source": "/fuzz",
        "id": f"f-{len(sink.events)}-{id(data)}",
        "datacontenttype": "application/json",
        **extensions,
    }
    event = CloudEvent(attrs, data)
    headers, raw = (to_structured if structured else to_binary)(event)
    headers = percent_encoded(headers)  # the SDK leaves that to us (HTTP binding 3.1.3.2)
    body = raw or b""
    before = len(sink.events)
    with httpx.Client(timeout=10) as client:
        r = client.post(url, headers=headers, content=body)
    if len(body) > 4096:
        assert r.status_code == 413
        return
    assert r.status_code == 202, r.text
    deadline = 200
    while len(sink.events) <= before and deadline:
        threading.Event().wait(0.01)
        deadline -= 1
    got = next(e for e in sink.events[before:] if e["id"] == attrs["id"])
    assert got.get_attributes() == event.get_attributes()
    # the SDK that decodes at the sink reads an empty string as no data
    assert got.get_data() == (None if data == "" else data)


def test_router_still_delivers_after_the_fuzzing(
    webhook: tuple[str, CloudEventSink, Router],
) -> None:
    url, sink, router = webhook
    event = CloudEvent({"type": "after.fuzz", "source": "/s", "id": "final"}, {"ok": True})
    headers, body = to_binary(event)
    with httpx.Client() as client:
        assert client.post(url, headers=headers, content=body).status_code == 202
    for _ in range(300):
        if any(e["id"] == "final" for e in sink.events):
            break
        threading.Event().wait(0.01)
    assert any(e["id"] == "final" for e in sink.events)
    assert router.ready
