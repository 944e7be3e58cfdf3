"""The CloudEvents 1.0.2 HTTP protocol binding, both ways: pure functions, no I/O.

Used by the webhook provider (HTTP request -> attributes and data) and the Knative processor
(attributes and data -> HTTP request), so both directions follow one set of rules:

* **Binary mode** (HTTP binding 3.1): ``datacontenttype`` <-> ``Content-Type`` and nothing
  else; an event without ``datacontenttype`` leaves without ``Content-Type`` (none is
  invented), and a request without ``Content-Type`` gives an event without
  ``datacontenttype``. A ``ce-datacontenttype`` header is not allowed (3.1.1). Every other
  attribute, extensions included, is one ``ce-<name>`` header whose value is the attribute's
  canonical string (3.1.3.2), percent-encoded on the way out (space, ``"``, ``%`` and every
  character outside printable ASCII U+0021-U+007E, as the upper-case ``%XY`` of each byte of
  its UTF-8 encoding) and, on the way in, first unescaped as an RFC 7230 quoted-string, then
  percent-decoded once, the bytes read as UTF-8 (invalid UTF-8 is rejected, lower-case hex
  accepted, needless encoding accepted).
* **Structured and batch modes** (3.2, 3.3; JSON event format): every attribute goes into
  the JSON document with its JSON type unchanged (an integer stays a number, a boolean a
  boolean, a ``time`` keeps its exact text). An attribute whose value is ``null`` is absent.
  Data: JSON media types (``application/json``, ``*/json``, ``*+json``, or no
  ``datacontenttype``, JSON's default) as the JSON value in ``data``; text (``text/*``,
  ``*/xml``, ``*+xml``, or any other type with a ``charset`` parameter) that is valid UTF-8
  as a JSON string in ``data``; anything else (a body of a JSON type that does not parse
  included) as ``data_base64``.
* **Data of binary mode**: the body is the data. A JSON media type whose body parses is kept
  as its JSON value (so a structured sender downstream can embed it); any other body stays
  the same bytes.
"""

from __future__ import annotations

import base64
import binascii
import datetime as dt
import json
import re
from collections.abc import Mapping
from typing import Any

from event_router.timefmt import rfc3339

__all__ = [
    "BATCH",
    "STRUCTURED",
    "BindingError",
    "binary_attributes",
    "binary_data",
    "canonical_string",
    "decode_header_value",
    "encode_header_value",
    "from_structured",
    "is_json",
    "is_text",
    "media_type",
    "to_binary",
    "to_structured",
]

STRUCTURED = "application/cloudevents+json"
BATCH = "application/cloudevents-batch+json"
#: the header prefix of attributes in binary mode (3.1.3.1)
PREFIX = "ce-"


class BindingError(ValueError):
    """A message or event that the HTTP binding cannot carry; the text says why."""


# --- media types ------------------------------------------------------------------------------


def media_type(content_type: str | None) -> str:
    """The media type without parameters, lower-cased ('' when absent)."""
    return (content_type or "").split(";", 1)[0].strip().lower()


def is_json(content_type: str | None) -> bool:
    """JSON data: no content type (the JSON format's default), ``application/json``, any
    ``*/json`` or ``*+json`` type."""
    media = media_type(content_type)
    return not media or media.endswith("/json") or media.endswith("+json")


def is_text(content_type: str | None) -> bool:
    """Text data (carried as a JSON string in structured mode): ``text/*``, XML, or any type
    that names its ``charset``."""
    media = media_type(content_type)
    if media.startswith("text/") or media.endswith("/xml") or media.endswith("+xml"):
        return True
    return "charset=" in (content_type or "").lower()


# --- header values (3.1.3.2) ------------------------------------------------------------------

#: what must be percent-encoded: space, '"', '%', and anything outside U+0021-U+007E
_NEEDS_ENCODING = re.compile(r"[^\x21\x23\x24\x26-\x7e]")
_NEEDS_DECODING = re.compile(r'["%]|[^\x20-\x7e\t]')
_PERCENT = re.compile(r"%([0-9A-Fa-f]{2})")


def _percent(match: re.Match[str]) -> str:
    char = match.group(0)
    try:
        data = char.encode("utf-8")
    except UnicodeEncodeError:  # a lone surrogate: no UTF-8 encoding exists
        raise BindingError(f"U+{ord(char):04X} (a lone surrogate) is not a character") from None
    return "".join(f"%{b:02X}" for b in data)


def encode_header_value(value: str) -> str:
    """Percent-encode an attribute's canonical string for a ``ce-`` header (3.1.3.2)."""
    if (  # the common case, on the hot path: string methods are quicker than the regex
        value.isascii()
        and value.isprintable()
        and " " not in value
        and '"' not in value
        and "%" not in value
    ):
        return value
    return _NEEDS_ENCODING.sub(_percent, value)


def _unquote(raw: str) -> str:
    """Undo RFC 7230 section 3.2.6 quoted-strings (with backslash escapes) anywhere in the
    value; text outside quotes stays as it is."""
    out: list[str] = []
    i, n = 0, len(raw)
    while i < n:
        c = raw[i]
        if c != '"':
            out.append(c)
            i += 1
            continue
        i += 1
        while True:
            if i >= n:
                raise BindingError("unterminated quoted string")
            c = raw[i]
            if c == "\\":
                if i + 1 >= n:
                    raise BindingError("unterminated escape in a quoted string")
                out.append(raw[i + 1])
                i += 2
            elif c == '"':
                i += 1
                break
            else:
                out.append(c)
                i += 1
    return "".join(out)


def decode_header_value(raw: str) -> str:
    """A ``ce-`` header value as the attribute's string (3.1.3.2): quoted-strings unescaped,
    then one round of percent-decoding, the bytes read as UTF-8 (strictly: overlong forms,
    surrogates and cut sequences are rejected). Characters that arrive unencoded outside
    ASCII (a non-conforming sender's raw UTF-8) are taken as they are."""
    if not _NEEDS_DECODING.search(raw):
        return raw
    text = _unquote(raw) if '"' in raw else raw
    if "%" not in text and text.isascii():
        return text
    out = bytearray()
    pos = 0
    for match in _PERCENT.finditer(text):
        out += _raw_bytes(text[pos : match.start()])
        out.append(int(match.group(1), 16))
        pos = match.end()
    out += _raw_bytes(text[pos:])
    try:
        return out.decode("utf-8")
    except UnicodeDecodeError as err:
        raise BindingError(
            f"percent-encoded bytes are not valid UTF-8 ({err.reason} at byte {err.start})"
        ) from None


def _raw_bytes(segment: str) -> bytes:
    if "%" in segment:
        at = segment.index("%")
        raise BindingError(
            f"'%' must start a %XY escape of two hex digits (got {segment[at : at + 3]!r})"
        )
    # aiohttp hands undecodable header bytes over as surrogate escapes: give them back as
    # bytes, so the UTF-8 check below sees them
    return segment.encode("utf-8", "surrogateescape")


def canonical_string(value: Any) -> str:
    """An attribute value's canonical string (core spec, type system): Boolean ``true`` /
    ``false``, Integer in decimal, Binary in base64, Timestamp in RFC 3339."""
    if isinstance(value, str):
        return value
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, bytes | bytearray | memoryview):
        return base64.b64encode(bytes(value)).decode("ascii")
    if isinstance(value, dt.datetime):
        return rfc3339(value)
    return str(value)


# --- binary mode ------------------------------------------------------------------------------


def binary_attributes(headers: Mapping[str, str]) -> dict[str, str]:
    """The attributes of a binary-mode request (header names lower-cased): every ``ce-``
    header decoded, ``Content-Type`` as ``datacontenttype`` when present."""
    attrs: dict[str, str] = {}
    for key, value in headers.items():
        if not key.startswith(PREFIX):
            continue
        name = key[len(PREFIX) :]
        if name == "datacontenttype":
            raise BindingError(
                "header ce-datacontenttype is not allowed in binary mode: the Content-Type "
                "header carries datacontenttype (HTTP binding 3.1.1)"
            )
        try:
            attrs[name] = decode_header_value(value)
        except BindingError as err:
            raise BindingError(f"header {key}: {err} (HTTP binding 3.1.3.2)") from None
    content_type = headers.get("content-type")
    if content_type:
        attrs["datacontenttype"] = content_type
    return attrs


def binary_data(content_type: str | None, body: bytes) -> Any:
    """The data of a binary-mode body: None when empty; the JSON value for a JSON media type
    when the body parses; the bytes as they are otherwise."""
    if not body:
        return None
    if is_json(content_type):
        try:
            return json.loads(body)
        except (ValueError, UnicodeDecodeError, RecursionError):
            return body
    return body


def data_bytes(data: Any, content_type: str | None) -> bytes:
    """The body of a binary-mode message: bytes as they are, text as UTF-8 unless the type
    is JSON, anything else (and text of a JSON type) serialized as JSON."""
    if data is None:
        return b""
    if isinstance(data, bytes):
        return data
    if isinstance(data, bytearray | memoryview):
        return bytes(data)
    try:
        if isinstance(data, str) and not is_json(content_type):
            return data.encode("utf-8")
        return json.dumps(data, separators=(",", ":"), ensure_ascii=False).encode("utf-8")
    except UnicodeEncodeError:
        raise BindingError("the data holds a lone surrogate, which UTF-8 cannot encode") from None


_HEADER_SAFE = re.compile(r"[\t\x20-\x7e]*")


def to_binary(attrs: Mapping[str, Any], data: Any) -> tuple[dict[str, str], bytes]:
    """Binary mode: ``(headers, body)``. Attributes with the value None are left out."""
    headers: dict[str, str] = {}
    content_type: str | None = None
    for key, value in attrs.items():
        if value is None:
            continue
        if key == "datacontenttype":
            content_type = str(value)
            continue
        text = value if isinstance(value, str) else canonical_string(value)
        try:
            headers[PREFIX + key] = encode_header_value(text)
        except BindingError as err:
            raise BindingError(f"attribute {key!r}: {err}") from None
    if content_type is not None:
        if not _HEADER_SAFE.fullmatch(content_type):
            raise BindingError(
                f"datacontenttype {content_type!r} cannot be a Content-Type header "
                "(printable ASCII only); use the structured encoding"
            )
        headers["content-type"] = content_type
    return headers, data_bytes(data, content_type)


# --- structured mode --------------------------------------------------------------------------


def structured_document(attrs: Mapping[str, Any], data: Any) -> dict[str, Any]:
    """The JSON event format's object of one event (also one item of a batch)."""
    doc: dict[str, Any] = {k: v for k, v in attrs.items() if v is not None}
    if data is None:
        return doc
    if isinstance(data, bytes | bytearray | memoryview):
        raw = bytes(data)
        content_type = attrs.get("datacontenttype")
        # bytes of a JSON type are a body that did not parse: a string in "data" would read
        # as a JSON string value, so they go as they are, in data_base64
        if is_text(content_type) and not is_json(content_type):
            try:
                doc["data"] = raw.decode("utf-8")
                return doc
            except UnicodeDecodeError:
                pass
        doc["data_base64"] = base64.b64encode(raw).decode("ascii")
    else:
        doc["data"] = data
    return doc


def to_structured(attrs: Mapping[str, Any], data: Any) -> tuple[dict[str, str], bytes]:
    """Structured mode: ``(headers, body)``, one ``application/cloudevents+json`` document."""
    doc = structured_document(attrs, data)
    try:
        body = json.dumps(doc, separators=(",", ":"), ensure_ascii=False).encode("utf-8")
    except UnicodeEncodeError:
        raise BindingError("the event holds a lone surrogate, which UTF-8 cannot encode") from None
    return {"content-type": STRUCTURED}, body


def from_structured(doc: Any) -> tuple[dict[str, Any], Any]:
    """``(attributes, data)`` of one JSON-format event object: ``null`` attributes are
    absent, ``data_base64`` is decoded to bytes, ``data`` is taken as it is."""
    if not isinstance(doc, dict):
        raise BindingError(f"a structured event must be a JSON object (got {type(doc).__name__})")
    attrs = {k: v for k, v in doc.items() if k not in ("data", "data_base64") and v is not None}
    data: Any = doc.get("data")
    if doc.get("data_base64") is not None:
        if data is not None:
            raise BindingError("data and data_base64 are mutually exclusive")
        encoded = doc["data_base64"]
        if not isinstance(encoded, str):
            raise BindingError("data_base64 must be a string")
        try:
            data = base64.b64decode(encoded, validate=True)
        except (binascii.Error, ValueError):
            raise BindingError("data_base64 is not valid base64") from None
    return attrs, data
