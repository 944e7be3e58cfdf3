"""CloudEvents HTTP binding vectors of others, driven through the real router.

Every vector of ``tests/data/cloudevents_http_vectors.yaml`` (the cloudevents/conformance
``yaml/`` events, its HTTP binding feature and JSON format vectors, the SDKs' HTTP cases;
each entry names its repository, path and commit) becomes one or more HTTP requests to a
running router: webhook provider on 127.0.0.1 -> Knative processor -> a CloudEvents sink on
127.0.0.1. Two routers run, one per Knative encoding (binary, structured), and every request
goes to both. At the sink the test reads the raw request with code of its own (the standard
library's ``unquote`` for ``ce-`` values, ``json`` for documents) and compares attributes and
data with what the vector says.

What "the same" means here, from the spec:

* attributes: exactly the same names; values equal, as the canonical string (core spec,
  type system) when either side is binary mode (a header has no type), with their JSON
  types when both sides are structured;
* data: for a JSON media type (or none: the JSON format's default) the same JSON value
  (the feature file's own rule: "the data is equal to the following JSON"); otherwise the
  same bytes (text as its UTF-8 bytes).

The few vectors whose expectation the 1.0.2 binding itself overrides are in ``EXCEPTIONS``,
each with its argument; the test checks the behaviour the spec asks for instead.
"""

from __future__ import annotations

import base64
import json
import re
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import unquote

import httpx
import pytest
import yaml

from event_router.config.loader import parse_config
from event_router.core import RouterContext
from event_router.router import Router
from tests.support.background import Background
from tests.support.net import free_port
from tests.support.sink import CloudEventSink, percent_encoded

VECTORS = yaml.safe_load(
    (Path(__file__).parents[1] / "data" / "cloudevents_http_vectors.yaml").read_text("utf-8")
)
STRUCTURED = "application/cloudevents+json"
BATCH = "application/cloudevents-batch+json"


# --- what a vector sends and what the sink must see ---------------------------------------------


@dataclass
class Expected:
    attributes: dict[str, Any]
    #: None (no data), ("json", value) or ("bytes", raw)
    data: tuple[str, Any] | None = None
    #: the exact ce-subject header a binary-mode Knative request must carry
    wire_subject: str | None = None


@dataclass
class Send:
    id: str
    source: str
    headers: dict[str, str]
    body: bytes
    structured_in: bool
    status: int = 202
    events: list[Expected] = field(default_factory=list)


def _source(entry: dict[str, Any]) -> str:
    s = entry["source"]
    return f"{s['repo']}:{s['path']}@{s['commit'][:12]}"


def _canonical(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


def _json_type(content_type: str | None) -> bool:
    media = (content_type or "").split(";")[0].strip().lower()
    return not media or media.endswith("/json") or media.endswith("+json")


def _data(content_type: str | None, body: bytes) -> tuple[str, Any] | None:
    if not body:
        return None
    if _json_type(content_type):
        return ("json", json.loads(body))
    return ("bytes", body)


def _binary_request(attrs: dict[str, Any], body: bytes) -> dict[str, str]:
    """A binary-mode request as HTTP binding 1.0.2 says, by the test's own encoder."""
    headers = {f"ce-{k}": _canonical(v) for k, v in attrs.items() if k != "datacontenttype"}
    headers = percent_encoded(headers)
    if "datacontenttype" in attrs:
        headers["content-type"] = attrs["datacontenttype"]
    return headers


def _structured_doc(attrs: dict[str, Any], data: tuple[str, Any] | None) -> dict[str, Any]:
    doc = dict(attrs)
    if data is not None:
        kind, value = data
        if kind == "json":
            doc["data"] = value
        else:
            try:
                doc["data"] = value.decode("utf-8")
            except UnicodeDecodeError:
                doc["data_base64"] = base64.b64encode(value).decode()
    return doc


def _conformance_yaml() -> Iterator[Send]:
    for entry in VECTORS["conformance_yaml"]:
        for n, vector in enumerate(entry["events"]):
            ctx = dict(vector["ContextAttributes"])
            extensions = ctx.pop("Extensions", {}) or {}
            # pkg/http/http.go EventToRequest: every value trimmed, empty ones left out
            attrs = {k: str(v).strip() for k, v in {**ctx, **extensions}.items() if str(v).strip()}
            body = vector["Data"].encode("utf-8")
            data = _data(attrs.get("datacontenttype"), body)
            base = f"conformance:{entry['source']['path']}#{n}"
            transport = {
                k: str(v).strip() for k, v in (vector.get("TransportExtensions") or {}).items()
            }
            # 1. exactly as the conformance tool sends it (no percent-encoding)
            raw = {f"ce-{k}": v for k, v in attrs.items() if k != "datacontenttype"}
            if "datacontenttype" in attrs:
                raw["content-type"] = attrs["datacontenttype"]
            yield Send(
                f"{base}:tool",
                _source(entry),
                {**raw, **transport},
                body,
                False,
                events=[Expected(attrs, data)],
            )
            # 2. as HTTP binding 1.0.2 asks a sender (percent-encoded)
            yield Send(
                f"{base}:binary",
                _source(entry),
                {**_binary_request(attrs, body), **transport},
                body,
                False,
                events=[Expected(attrs, data)],
            )
            # 3. the same event in structured mode (JSON format)
            doc = _structured_doc(attrs, data)
            yield Send(
                f"{base}:structured",
                _source(entry),
                {"content-type": STRUCTURED},
                json.dumps(doc).encode(),
                True,
                events=[Expected(attrs, data)],
            )


def _feature() -> Iterator[Send]:
    f = VECTORS["feature"]
    src = _source(f)
    b = f["binary"]
    for ct in b["content_types"]:
        attrs = {**b["attributes"], "datacontenttype": ct}
        yield Send(
            f"feature:binary:{ct}",
            src,
            {**b["headers"], "content-type": ct},
            b["body"].encode(),
            False,
            events=[Expected(attrs, ("json", b["data_json"]))],
        )
    s = f["structured"]
    for ct in s["content_types"]:
        yield Send(
            f"feature:structured:{ct}",
            src,
            {"content-type": ct},
            s["body"].encode(),
            True,
            events=[Expected(dict(s["attributes"]), ("json", s["data_json"]))],
        )


def _json_format_event(event: dict[str, Any]) -> Expected:
    attrs = {k: v for k, v in event.items() if k not in ("data", "data_base64") and v is not None}
    data: tuple[str, Any] | None = None
    if event.get("data") is not None:
        ct = attrs.get("datacontenttype")
        data = ("json", event["data"]) if _json_type(ct) else ("bytes", event["data"].encode())
    return Expected(attrs, data)


def _json_format() -> Iterator[Send]:
    src = _source(VECTORS["json_events"])
    for t in VECTORS["json_events"]["tests"]:
        expected = _json_format_event(t["event"])
        yield Send(
            f"json-format:{t['id']}:structured",
            src,
            {"content-type": STRUCTURED},
            json.dumps(t["event"]).encode(),
            True,
            events=[expected],
        )
        # the same event in binary mode (extension values as their canonical strings)
        body = expected.data[1] if expected.data else b""
        strings = {k: _canonical(v) for k, v in expected.attributes.items()}
        yield Send(
            f"json-format:{t['id']}:binary",
            src,
            _binary_request(strings, body),
            body,
            False,
            events=[Expected(strings, expected.data)],
        )
    src = _source(VECTORS["json_batches"])
    for t in VECTORS["json_batches"]["tests"]:
        yield Send(
            f"json-format:{t['id']}:batch",
            src,
            {"content-type": BATCH},
            json.dumps(t["batch"]).encode(),
            True,
            events=[_json_format_event(e) for e in t["batch"]],
        )


MINIMAL = {"specversion": "1.0", "id": "hv", "source": "/hv", "type": "header.value"}


def _header_values() -> Iterator[Send]:
    hv = VECTORS["header_values"]
    src = _source(hv)
    cases = [(c["header"], c["value"], c["header"]) for c in hv["round_trip"]]
    cases += [(c["header"], c["value"], None) for c in hv["decode_only"]]
    spec = VECTORS["spec_example"]
    for n, (header, value, wire) in enumerate(cases):
        wire = wire or percent_encoded({"ce-x": value})["ce-x"]
        attrs = {**MINIMAL, "subject": value}
        headers = {**_binary_request(MINIMAL, b""), "ce-subject": header}
        yield Send(
            f"sdk-csharp:header#{n}:binary",
            src,
            headers,
            b"",
            False,
            events=[Expected(attrs, None, wire)],
        )
        yield Send(
            f"sdk-csharp:header#{n}:structured",
            src,
            {"content-type": STRUCTURED},
            json.dumps(attrs).encode(),
            True,
            events=[Expected(attrs, None, wire)],
        )
    for n, header in enumerate(hv["invalid"]):
        yield Send(
            f"sdk-csharp:invalid#{n}",
            src,
            {**_binary_request(MINIMAL, b""), "ce-subject": header},
            b"",
            False,
            status=400,
        )
    attrs = {**MINIMAL, "subject": spec["value"]}
    yield Send(
        "spec:3.1.3.2-example:binary",
        _source(spec),
        {**_binary_request(MINIMAL, b""), "ce-subject": spec["header"]},
        b"",
        False,
        events=[Expected(attrs, None, spec["header"])],
    )
    yield Send(
        "spec:3.1.3.2-example:structured",
        _source(spec),
        {"content-type": STRUCTURED},
        json.dumps(attrs).encode(),
        True,
        events=[Expected(attrs, None, spec["header"])],
    )


def _sdk_python() -> Iterator[Send]:
    py = VECTORS["sdk_python"]
    src = _source(py)
    for case in py["binary"]:
        for spec in case["specversions"]:
            headers = {k.lower(): v for k, v in case["headers"].items()}
            headers["ce-specversion"] = spec
            attrs: dict[str, Any] = {k[3:]: v for k, v in headers.items() if k.startswith("ce-")}
            if "content-type" in headers:
                attrs["datacontenttype"] = headers["content-type"]
            if "body_base64" in case:
                body = base64.b64decode(case["body_base64"])
            else:
                body = case["body"].encode()
            ct = attrs.get("datacontenttype")
            data = (
                None
                if not body
                else ("json", json.loads(body))
                if _json_type(ct) and ct
                else ("bytes", body)
            )
            # raw header names as the SDK test writes them (Ce-Id ...): names are case-insensitive
            sent = {**case["headers"], "ce-specversion": spec}
            yield Send(
                f"sdk-python:{case['test']}:{spec}",
                src,
                sent,
                body,
                False,
                events=[Expected(attrs, data)],
            )
    for case in py["structured"]:
        for spec in case["specversions"]:
            doc = {**case["event"], "specversion": spec}
            attrs = {k: v for k, v in doc.items() if k not in ("data", "data_base64")}
            if "data_base64" in doc:
                data = ("bytes", base64.b64decode(doc["data_base64"]))
            elif "data" in doc:
                data = ("json", doc["data"])
            else:
                data = None
            yield Send(
                f"sdk-python:{case['test']}:{spec}",
                src,
                {"content-type": STRUCTURED},
                json.dumps(doc).encode(),
                True,
                events=[Expected(attrs, data)],
            )


def _sdk_go() -> Iterator[Send]:
    go = VECTORS["sdk_go"]
    src = _source(go)
    for case in go["requests"]:
        data: tuple[str, Any] | None = None
        if "data_json" in case:
            data = ("json", case["data_json"])
        elif "data_bytes" in case:
            data = ("bytes", case["data_bytes"].encode())
        structured = case["headers"].get("content-type") == STRUCTURED
        yield Send(f"sdk-go:{case['test']}", src, dict(case["headers"]), case["body"].encode(),
                   structured, events=[Expected(dict(case["attributes"]), data)])  # fmt: skip


SENDS = [
    *_conformance_yaml(),
    *_feature(),
    *_json_format(),
    *_header_values(),
    *_sdk_python(),
    *_sdk_go(),
]


# --- exceptions: where the 1.0.2 binding overrides a vector's expectation -----------------------


def _quoted_string_exception(send: Send) -> None:
    # yaml/v1.yaml and yaml/v3.yaml as the conformance tool sends them: the tool writes
    # comexampleextension2 = {"othervalue": 5} raw into the header (its EventToRequest does no
    # percent-encoding; it predates 1.0.2). HTTP binding 1.0.2 3.1.3.2: "When decoding an
    # HTTP message into a CloudEvent, any HTTP header value MUST first be unescaped with
    # respect to double-quoted strings, as described in RFC7230, section 3.2.6", so a
    # conforming receiver reads "othervalue" as a quoted-string and gets {othervalue: 5}
    # (sdk-csharp's DecodeHeaderValue does the same). Sent as 1.0.2 asks (%22 for '"', %20
    # for space: the ":binary" variant of the same vector) the value arrives unchanged.
    event = send.events[0]
    event.attributes = {**event.attributes, "comexampleextension2": "{othervalue: 5}"}


def _control_character_exception(send: Send) -> None:
    # sdk-csharp's round trip of "line1\r\nline2" <-> "line1%0D%0Aline2". Its own comment:
    # "This wouldn't be a valid attribute value in CloudEvents 1.0". The core spec (type
    # system, String) disallows U+0000-U+001F and U+007F-U+009F in attribute values, so the
    # webhook rejects the event (400); the pure encoder and decoder still round-trip it
    # (tests/unit/test_cebinding.py).
    send.status = 400
    send.events = []


EXCEPTIONS = {
    "conformance:yaml/v1.yaml#0:tool": _quoted_string_exception,
    "conformance:yaml/v3.yaml#0:tool": _quoted_string_exception,
    "sdk-csharp:header#6:binary": _control_character_exception,
    "sdk-csharp:header#6:structured": _control_character_exception,
}
for _send in SENDS:
    if _send.id in EXCEPTIONS:
        EXCEPTIONS[_send.id](_send)


# --- the routers ---------------------------------------------------------------------------------


@dataclass
class Running:
    url: str
    sink: CloudEventSink
    router: Router


@pytest.fixture(scope="module")
def routers() -> Iterator[dict[str, Running]]:
    bg = Background()
    running: dict[str, Running] = {}
    try:
        for encoding in ("binary", "structured"):
            sink = CloudEventSink()
            bg.run(sink.__aenter__())
            port = free_port()
            config = parse_config(
                {
                    "apiVersion": "event-router.vmware.com/v1alpha1",
                    "kind": "RouterConfig",
                    "metadata": {"name": f"conformance-{encoding}"},
                    "eventProvider": {
                        "type": "webhook",
                        "name": "w",
                        "webhook": {"bindAddress": f"127.0.0.1:{port}", "path": "/webhook"},
                    },
                    "eventProcessor": {
                        "type": "knative",
                        "name": "k",
                        "knative": {"destination": {"uri": sink.url}, "encoding": encoding},
                    },
                }
            )
            router = Router(RouterContext(config))
            bg.run(router.start())
            bg.run(router.wait_ready(5))
            running[encoding] = Running(f"http://127.0.0.1:{port}/webhook", sink, router)
        yield running
    finally:
        for r in running.values():
            bg.run(r.router.stop(5))
            bg.run(r.sink.__aexit__(None, None, None))
        bg.close()


# --- what arrived --------------------------------------------------------------------------------


def _received(headers: dict[str, str], body: bytes, expected: Expected) -> dict[str, Any]:
    """attributes, data (in the expectation's kind) and the ce-subject header of one
    request at the sink, decoded by the test's own reading of the binding."""
    kind = expected.data[0] if expected.data else "json"
    if headers.get("content-type", "").split(";")[0] == STRUCTURED:
        doc = json.loads(body)
        attrs = {k: v for k, v in doc.items() if k not in ("data", "data_base64")}
        data: tuple[str, Any] | None = None
        if "data_base64" in doc:
            data = ("bytes", base64.b64decode(doc["data_base64"]))
        elif doc.get("data") is not None:
            value = doc["data"]
            data = (
                ("bytes", value.encode())
                if kind == "bytes" and isinstance(value, str)
                else (kind, value)
            )
        return {"attributes": attrs, "data": data, "subject_header": None}
    assert "ce-datacontenttype" not in headers, "binary mode: Content-Type carries it (3.1.1)"
    attrs = {k[3:]: unquote(v, errors="strict") for k, v in headers.items() if k.startswith("ce-")}
    if "content-type" in headers:
        attrs["datacontenttype"] = headers["content-type"]
    data = None
    if body:
        data = ("json", json.loads(body)) if kind == "json" else ("bytes", body)
    return {"attributes": attrs, "data": data, "subject_header": headers.get("ce-subject")}


def _post(url: str, send: Send) -> httpx.Response:
    with httpx.Client(timeout=10) as client:
        return client.post(url, headers=send.headers, content=send.body)


def _wait(sink: CloudEventSink, count: int) -> None:
    for _ in range(500):
        if len(sink.raw) >= count:
            return
        threading.Event().wait(0.01)
    raise AssertionError(f"the sink got {len(sink.raw)} requests, expected {count}")


@pytest.mark.parametrize("encoding", ["binary", "structured"])
@pytest.mark.parametrize("send", SENDS, ids=[s.id for s in SENDS])
def test_vector_through_the_router(routers: dict[str, Running], send: Send, encoding: str) -> None:
    r = routers[encoding]
    before = len(r.sink.raw)
    answer = _post(r.url, send)
    assert answer.status_code == send.status, (send.source, answer.text)
    if send.status != 202:
        return
    _wait(r.sink, before + len(send.events))
    for (headers, body), expected in zip(r.sink.raw[before:], send.events, strict=True):
        got = _received(headers, body, expected)
        want = expected.attributes
        if encoding == "binary" or not send.structured_in:
            want = {k: _canonical(v) for k, v in want.items()}
        assert got["attributes"] == want, send.source
        assert got["data"] == expected.data, send.source
        if encoding == "binary":
            # no Content-Type invented, none lost
            assert ("content-type" in headers) == ("datacontenttype" in expected.attributes)
            if expected.wire_subject is not None:
                assert got["subject_header"] == expected.wire_subject, send.source


def test_vector_counts() -> None:
    """The figures of the closing note: every send goes through both encodings."""
    sources = {s.source.split("@")[0] for s in SENDS}
    # one vector, several forms (as the tool sends it, binary, structured): one vector
    vectors = {re.sub(r":(tool|binary|structured)$", "", s.id) for s in SENDS}
    assert len(vectors) == 75, len(vectors)
    assert len(SENDS) == 119, len(SENDS)
    assert len(EXCEPTIONS) == 4
    assert len(sources) == 11, sources
