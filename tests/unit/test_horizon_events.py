"""Horizon AuditEventSummary -> CloudEvent conversion (pure functions)."""

from __future__ import annotations

import datetime as dt
import json

import pytest
from cloudevents.conversion import to_structured

from event_router.events.horizon import (
    event_time,
    event_type,
    rfc3339_millis,
    summary,
    to_cloudevent,
)

SAMPLE = {
    "id": 4711,
    "type": "VLSI_USERLOGGEDIN",
    "time": 1625140800123,
    "module": "Vlsi",
    "severity": "AUDIT_SUCCESS",
    "message": "User CORP\\alice has logged in to Horizon REST API",
    "user_id": "S-1-5-21-1000-1105",
    "machine_id": "c4ad7b9e-0000-4bd5-9a7e-1d1e0fe4bb39",
    "machine_dns_name": "desktop-01.corp.local",
    "desktop_pool_name": "pool-a",
    "application_pool_name": None,
    "unknown_extra": "dropped",
}


def test_cloudevent_attributes() -> None:
    ce = to_cloudevent(SAMPLE, "https://api.myhorizon.corp.local")
    assert ce["id"] == "4711"
    assert ce["source"] == "https://api.myhorizon.corp.local"
    assert ce["specversion"] == "1.0"
    assert ce["subject"] == "VLSI_USERLOGGEDIN"
    assert ce["type"] == "com.vmware.event.router/horizon.vlsi_userloggedin.v0"
    # millisecond precision (the original truncated to whole seconds)
    assert ce["time"] == "2021-07-01T12:00:00.123Z"
    assert ce["datacontenttype"] == "application/json"


def test_sources_type_style() -> None:
    ce = to_cloudevent(SAMPLE, "https://h", "sources")
    assert ce["type"] == "com.vmware.horizon.vlsi_userloggedin.v0"
    assert (
        event_type("BROKER_USERLOGGEDOUT", "sources")
        == "com.vmware.horizon.broker_userloggedout.v0"
    )
    with pytest.raises(ValueError, match="allowed: router, sources"):
        event_type("X", "other")  # type: ignore[arg-type]


def test_data_is_the_audit_event_summary() -> None:
    ce = to_cloudevent(SAMPLE, "https://h")
    assert ce.data == {
        "id": 4711,
        "type": "VLSI_USERLOGGEDIN",
        "time": 1625140800123,
        "module": "Vlsi",
        "severity": "AUDIT_SUCCESS",
        "message": "User CORP\\alice has logged in to Horizon REST API",
        "user_id": "S-1-5-21-1000-1105",
        "machine_id": "c4ad7b9e-0000-4bd5-9a7e-1d1e0fe4bb39",
        "machine_dns_name": "desktop-01.corp.local",
        "desktop_pool_name": "pool-a",
    }
    # serialisable as a structured CloudEvent
    _headers, body = to_structured(ce)
    structured = json.loads(body)
    assert structured["subject"] == "VLSI_USERLOGGEDIN"
    assert structured["data"]["time"] == 1625140800123


def test_same_event_same_id_on_replay() -> None:
    a = to_cloudevent(SAMPLE, "https://h")
    b = to_cloudevent(dict(SAMPLE), "https://h")
    assert a["id"] == b["id"] == "4711"


@pytest.mark.parametrize(
    ("millis", "text"),
    [
        (0, "1970-01-01T00:00:00.000Z"),
        (1625140800000, "2021-07-01T12:00:00.000Z"),
        (1625140800001, "2021-07-01T12:00:00.001Z"),
        (1625140800999, "2021-07-01T12:00:00.999Z"),
    ],
)
def test_time_keeps_milliseconds(millis: int, text: str) -> None:
    assert rfc3339_millis(millis) == text
    assert event_time(millis) == dt.datetime.fromisoformat(text.replace("Z", "+00:00"))


def test_summary_drops_unknown_and_null_fields() -> None:
    assert "unknown_extra" not in summary(SAMPLE)
    assert "application_pool_name" not in summary(SAMPLE)


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"id": None}, "field 'id' must be an integer"),
        ({"id": "abc"}, "field 'id' must be an integer"),
        ({"time": True}, "field 'time' must be an integer"),
        ({"type": ""}, "field 'type' must be a non-empty string"),
        ({"type": None}, "field 'type' must be a non-empty string"),
    ],
)
def test_malformed_events_name_the_field(change: dict[str, object], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        to_cloudevent({**SAMPLE, **change}, "https://h")
