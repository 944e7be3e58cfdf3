"""The knative processor's fast encoders agree with the cloudevents SDK's decoding, and the
destination URL is built and checked as documented."""

from __future__ import annotations

from typing import Any

import pytest
from cloudevents.conversion import to_dict
from cloudevents.http import CloudEvent, from_http
from hypothesis import given, settings
from hypothesis import strategies as st

from event_router.config.loader import parse_config
from event_router.processors.knative import destination_url, encode_binary, encode_structured
from tests.support.sink import percent_decoded

text = st.text(st.characters(min_codepoint=32, max_codepoint=0x2FF), max_size=30).map(str.strip)
json_data = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**53), 2**53) | text,
    lambda c: st.lists(c, max_size=3) | st.dictionaries(text, c, max_size=3),
    max_leaves=10,
)
ext_names = st.text("abcdefghijklmnopqrstuvwxyz0123456789", min_size=1, max_size=10).filter(
    lambda n: n not in {"id", "source", "type", "specversion", "datacontenttype", "data"}
)


def _event(exts: dict[str, str], data: Any, content_type: str | None) -> CloudEvent:
    attrs = {"type": "com.example.t", "source": "/src", "id": "x-1", **exts}
    if content_type:
        attrs["datacontenttype"] = content_type
    return CloudEvent(attrs, data)


@settings(max_examples=200, deadline=None)
@given(exts=st.dictionaries(ext_names, text.filter(bool), max_size=4), data=json_data)
def test_binary_and_structured_round_trip_through_the_sdk(exts: dict[str, str], data: Any) -> None:
    event = _event(exts, data, "application/json")
    expected = to_dict(event)
    if expected["data"] == "":  # the SDK decodes an empty string as no data
        expected["data"] = None
    for encode in (encode_binary, encode_structured):
        headers, body = encode(event)
        decoded = from_http(percent_decoded(headers), body)  # ce- values are percent-encoded
        assert to_dict(decoded) == expected, encode.__name__


@settings(max_examples=100, deadline=None)
@given(payload=st.binary(min_size=1, max_size=200))
def test_binary_data_stays_bytes(payload: bytes) -> None:
    event = _event({}, payload, "application/octet-stream")
    headers, body = encode_binary(event)
    assert body == payload and headers["content-type"] == "application/octet-stream"
    headers, body = encode_structured(event)
    # via data_base64 (raw unmarshaller: the SDK's default would JSON-parse b"0" into 0)
    assert from_http(headers, body, data_unmarshaller=lambda b: b).get_data() == payload


def test_text_data_is_sent_as_is_unless_json() -> None:
    _, body = encode_binary(_event({}, "plain words", "text/plain"))
    assert body == b"plain words"
    _, body = encode_binary(_event({}, "a json string", "application/json"))
    assert body == b'"a json string"'
    headers, body = encode_binary(_event({"flag": True, "count": 3}, None, None))  # type: ignore[dict-item]
    assert headers["ce-flag"] == "true" and headers["ce-count"] == "3" and body == b""
    assert "content-type" not in headers


def _knative(dest: dict[str, Any]) -> Any:
    config = parse_config(
        {
            "apiVersion": "event-router.vmware.com/v1alpha1",
            "kind": "RouterConfig",
            "metadata": {"name": "k"},
            "eventProvider": {
                "type": "webhook",
                "name": "w",
                "webhook": {"bindAddress": "127.0.0.1:8080", "path": "/hook"},
            },
            "eventProcessor": {"type": "knative", "name": "k", "knative": {"destination": dest}},
        }
    )
    return config.eventProcessor.knative


@pytest.mark.parametrize(
    ("dest", "url"),
    [
        (
            {"uri": "http://broker.ns.svc.cluster.local/ns/default"},
            "http://broker.ns.svc.cluster.local/ns/default",
        ),
        ({"uri": {"scheme": "http", "host": "sink", "port": 8080}}, "http://sink:8080/"),
        (
            {"uri": {"scheme": "https", "host": "sink.example.com", "path": "events"}},
            "https://sink.example.com/events",
        ),
        (
            {"uri": {"scheme": "http", "host": "[::1]", "port": 80, "path": "/x"}},
            "http://[::1]:80/x",
        ),
        ({"uri": {"scheme": "http", "host": "[::1]:8080"}}, "http://[::1]:8080/"),
        ({"uri": {"scheme": "http", "host": "127.0.0.1:18082"}}, "http://127.0.0.1:18082/"),
    ],
)
def test_destination_url(dest: dict[str, Any], url: str) -> None:
    assert destination_url(_knative(dest)) == url


def test_ref_without_uri_names_the_field() -> None:
    cfg = _knative(
        {
            "ref": {
                "apiVersion": "eventing.knative.dev/v1",
                "kind": "Broker",
                "name": "default",
                "namespace": "vmware",
            }
        }
    )
    with pytest.raises(ValueError) as info:
        destination_url(cfg)
    message = str(info.value)
    assert "eventProcessor.knative.destination.ref" in message
    assert "Broker vmware/default" in message
    assert "eventProcessor.knative.destination.uri" in message
