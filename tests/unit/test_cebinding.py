"""The HTTP binding's pure functions (event_router/cebinding.py): header value encoding and
decoding (HTTP binding 1.0.2, 3.1.3.2), Content-Type <-> datacontenttype, structured data."""

from __future__ import annotations

import base64
import json
from pathlib import Path
from urllib.parse import unquote

import pytest
import yaml
from hypothesis import given, settings
from hypothesis import strategies as st

from event_router import cebinding
from event_router.cebinding import BindingError

VECTORS = yaml.safe_load(
    (Path(__file__).parents[1] / "data" / "cloudevents_http_vectors.yaml").read_text("utf-8")
)
HV = VECTORS["header_values"]  # sdk-csharp HttpUtilitiesTest.cs


@pytest.mark.parametrize("case", HV["round_trip"], ids=lambda c: c["header"])
def test_sdk_csharp_round_trip(case: dict[str, str]) -> None:
    assert cebinding.encode_header_value(case["value"]) == case["header"]
    assert cebinding.decode_header_value(case["header"]) == case["value"]


@pytest.mark.parametrize("case", HV["decode_only"], ids=lambda c: c["header"])
def test_sdk_csharp_decode_only(case: dict[str, str]) -> None:
    assert cebinding.decode_header_value(case["header"]) == case["value"]


@pytest.mark.parametrize("header", HV["invalid"])
def test_sdk_csharp_invalid(header: str) -> None:
    with pytest.raises(BindingError):
        cebinding.decode_header_value(header)


def test_spec_example() -> None:
    spec = VECTORS["spec_example"]
    assert cebinding.encode_header_value(spec["value"]) == spec["header"]


no_lone_surrogates = st.text(st.characters(exclude_categories=("Cs",)), max_size=40)


@settings(max_examples=500, deadline=None)
@given(value=no_lone_surrogates)
def test_encoding_is_printable_ascii_and_round_trips(value: str) -> None:
    encoded = cebinding.encode_header_value(value)
    assert all(0x21 <= ord(c) <= 0x7E for c in encoded)
    assert " " not in encoded and '"' not in encoded
    assert unquote(encoded, errors="strict") == value  # the standard library reads it back
    assert cebinding.decode_header_value(encoded) == value


def test_only_what_must_be_encoded_is() -> None:
    printable = "".join(chr(c) for c in range(0x21, 0x7F))
    expected = "".join({'"': "%22", "%": "%25"}.get(c, c) for c in printable)
    assert cebinding.encode_header_value(printable) == expected
    assert cebinding.encode_header_value(" \x7f\x00é") == "%20%7F%00%C3%A9"


def test_lower_case_hex_and_needless_encoding_are_read() -> None:
    assert cebinding.decode_header_value("Hello%20World%21") == "Hello World!"
    assert cebinding.decode_header_value("2023-01-15T10%3a30%3A45Z") == "2023-01-15T10:30:45Z"


def test_raw_utf8_of_a_non_conforming_sender_is_taken_as_it_is() -> None:
    assert cebinding.decode_header_value("café") == "café"
    # bytes that are not UTF-8 (aiohttp hands them over as surrogate escapes)
    with pytest.raises(BindingError):
        cebinding.decode_header_value(b"caf\xe9".decode("utf-8", "surrogateescape"))


def test_lone_surrogate_cannot_be_encoded() -> None:
    with pytest.raises(BindingError):
        cebinding.encode_header_value("a\ud800")


def test_binary_mode_maps_only_datacontenttype_to_content_type() -> None:
    attrs = {"specversion": "1.0", "id": "1", "source": "/s", "type": "t", "subject": "Euro €"}
    headers, body = cebinding.to_binary(attrs, b"\x00\x01")
    assert "content-type" not in headers  # none invented
    assert headers["ce-subject"] == "Euro%20%E2%82%AC" and body == b"\x00\x01"
    headers, _ = cebinding.to_binary({**attrs, "datacontenttype": "text/plain"}, "x")
    assert headers["content-type"] == "text/plain" and "ce-datacontenttype" not in headers
    headers, _ = cebinding.to_binary({**attrs, "flag": True, "n": 3, "none": None}, None)
    assert headers["ce-flag"] == "true" and headers["ce-n"] == "3" and "ce-none" not in headers
    with pytest.raises(BindingError, match="Content-Type"):
        cebinding.to_binary({**attrs, "datacontenttype": "text/plain; x=é"}, None)


def test_binary_attributes_decode_and_refuse_ce_datacontenttype() -> None:
    headers = {
        "ce-specversion": "1.0",
        "ce-subject": "Hello%20World%21",
        "ce-time": "2023-01-15T10%3A30%3A45Z",
        "user-agent": "x",
    }
    attrs = cebinding.binary_attributes(headers)
    assert attrs == {
        "specversion": "1.0",
        "subject": "Hello World!",
        "time": "2023-01-15T10:30:45Z",
    }
    assert cebinding.binary_attributes({**headers, "content-type": "a/b"})["datacontenttype"] == (
        "a/b"
    )
    with pytest.raises(BindingError, match="ce-datacontenttype"):
        cebinding.binary_attributes({**headers, "ce-datacontenttype": "a/b"})
    with pytest.raises(BindingError, match="ce-subject"):
        cebinding.binary_attributes({**headers, "ce-subject": "100% sure"})


def test_structured_keeps_types_and_chooses_data_or_data_base64() -> None:
    attrs = {"specversion": "1.0", "id": "1", "source": "/s", "type": "t", "n": 10, "b": True}
    _, body = cebinding.to_structured(attrs, None)
    assert json.loads(body) == attrs
    _, body = cebinding.to_structured({**attrs, "datacontenttype": "text/plain"}, b"hi \xc3\xa9")
    assert json.loads(body)["data"] == "hi é"
    _, body = cebinding.to_structured({**attrs, "datacontenttype": "text/plain"}, b"\xff")
    assert json.loads(body)["data_base64"] == base64.b64encode(b"\xff").decode()
    _, body = cebinding.to_structured(attrs, b"{}")  # bytes without a type: binary
    assert "data_base64" in json.loads(body)
    # a JSON type whose body did not parse: as it is, not as a JSON string value
    bad = {**attrs, "datacontenttype": "application/json; charset=utf-8"}
    _, body = cebinding.to_structured(bad, b"{not json")
    assert base64.b64decode(json.loads(body)["data_base64"]) == b"{not json"
    _, body = cebinding.to_structured(attrs, {"k": [1]})
    assert json.loads(body)["data"] == {"k": [1]}


def test_from_structured() -> None:
    attrs, data = cebinding.from_structured({"id": "1", "subject": None, "data_base64": "TWE="})
    assert attrs == {"id": "1"} and data == b"Ma"
    with pytest.raises(BindingError, match="mutually exclusive"):
        cebinding.from_structured({"data": 1, "data_base64": "TWE="})
    with pytest.raises(BindingError, match="base64"):
        cebinding.from_structured({"data_base64": "*"})
    with pytest.raises(BindingError, match="JSON object"):
        cebinding.from_structured([1])


def test_binary_data() -> None:
    assert cebinding.binary_data(None, b"") is None
    assert cebinding.binary_data(None, b'{"a":1}') == {"a": 1}  # JSON is the default type
    assert cebinding.binary_data("application/json", b"{bad") == b"{bad"
    assert cebinding.binary_data("text/plain", b'{"a":1}') == b'{"a":1}'
