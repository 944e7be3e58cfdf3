"""Horizon audit event -> CloudEvent conversion (pure functions, no I/O).

A Horizon audit event is the REST API's ``AuditEventSummary`` (``GET
/rest/external/v1/audit-events``): ``id`` (int), ``type`` (e.g. ``VLSI_USERLOGGEDIN``),
``time`` (milliseconds since the Unix epoch, UTC), ``module``, ``severity``, ``message``,
``user_id``, ``machine_id``, ``machine_dns_name``, ``desktop_pool_name``,
``application_pool_name``.

The CloudEvent: ``id`` = the Horizon event id (stable across replays, so consumers can
de-duplicate), ``source`` = the Horizon address, ``time`` = the event time with millisecond
precision, ``subject`` = the Horizon event type, ``type`` in router style
(``com.vmware.event.router/horizon.<type lowercased>.v0``, the original router's) or
sources style (``com.vmware.horizon.<type lowercased>.v0``, Tanzu Sources for Knative),
``data`` = the AuditEventSummary fields (absent/null fields left out, as the original's
``omitempty``).
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping
from typing import Any, Literal

from cloudevents.http import CloudEvent

from event_router.timefmt import rfc3339

__all__ = [
    "SUMMARY_FIELDS",
    "event_time",
    "event_type",
    "rfc3339_millis",
    "summary",
    "to_cloudevent",
]

#: the fields of Horizon's AuditEventSummary, in the API's documented order
SUMMARY_FIELDS: tuple[str, ...] = (
    "id",
    "type",
    "time",
    "module",
    "severity",
    "message",
    "user_id",
    "machine_id",
    "machine_dns_name",
    "desktop_pool_name",
    "application_pool_name",
)

ROUTER_TYPE_FORMAT = "com.vmware.event.router/horizon.{name}.v0"
SOURCES_TYPE_FORMAT = "com.vmware.horizon.{name}.v0"
CONTENT_TYPE = "application/json"


def event_type(horizon_type: str, style: Literal["router", "sources"] = "router") -> str:
    """``VLSI_USERLOGGEDIN`` -> ``com.vmware.event.router/horizon.vlsi_userloggedin.v0``
    (router style) or ``com.vmware.horizon.vlsi_userloggedin.v0`` (sources style)."""
    name = horizon_type.strip().lower()
    if not name:
        raise ValueError("horizon event type: must not be empty")
    if style == "router":
        return ROUTER_TYPE_FORMAT.format(name=name)
    if style == "sources":
        return SOURCES_TYPE_FORMAT.format(name=name)
    raise ValueError(f"typeStyle: unknown style {style!r} (allowed: router, sources)")


def event_time(millis: int) -> dt.datetime:
    """Horizon's epoch milliseconds -> an aware UTC datetime (millisecond precision kept)."""
    seconds, ms = divmod(int(millis), 1000)
    return dt.datetime.fromtimestamp(seconds, tz=dt.UTC) + dt.timedelta(milliseconds=ms)


def rfc3339_millis(millis: int) -> str:
    """Epoch milliseconds -> RFC 3339 in UTC with exactly three fraction digits:
    ``1625140800123`` -> ``2021-07-01T12:00:00.123Z``."""
    return rfc3339(event_time(millis), 3)


def _require_int(event: Mapping[str, Any], name: str) -> int:
    value = event.get(name)
    # bool is an int in Python; a JSON true/false is not a valid id or time
    if isinstance(value, bool) or not isinstance(value, int | str):
        raise ValueError(f"horizon event: field {name!r} must be an integer (got {value!r})")
    try:
        return int(value)
    except ValueError:
        raise ValueError(
            f"horizon event: field {name!r} must be an integer (got {value!r})"
        ) from None


def summary(event: Mapping[str, Any]) -> dict[str, Any]:
    """The AuditEventSummary fields of ``event`` (unknown fields and nulls dropped)."""
    return {k: event[k] for k in SUMMARY_FIELDS if event.get(k) is not None}


def to_cloudevent(
    event: Mapping[str, Any],
    source: str,
    style: Literal["router", "sources"] = "router",
) -> CloudEvent:
    """One Horizon AuditEventSummary -> CloudEvent. Raises ValueError naming the field
    when ``id``, ``type`` or ``time`` is missing or malformed."""
    event_id = _require_int(event, "id")
    millis = _require_int(event, "time")
    type_ = event.get("type")
    if not isinstance(type_, str) or not type_.strip():
        raise ValueError(
            f"horizon event {event_id}: field 'type' must be a non-empty string (got {type_!r})"
        )
    attributes = {
        "id": str(event_id),
        "source": source,
        "specversion": "1.0",
        "type": event_type(type_, style),
        "subject": type_,
        "time": rfc3339_millis(millis),
        "datacontenttype": CONTENT_TYPE,
    }
    return CloudEvent(attributes, summary(event))
