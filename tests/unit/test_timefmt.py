"""Every time the product writes is RFC 3339 with a four-digit year (years 1..9999):
the one formatting function (event_router/timefmt.py) at its edges, and the writers that use
it (CloudEvent ``time`` and ``data.CreatedTime`` of a vCenter event with Go's zero time,
checkpoints, Horizon times, /stats, JSON logs, operator status times)."""

from __future__ import annotations

import datetime as dt
import io
import json
import logging
import re

import pytest
from pyVmomi import vim

from event_router.checkpoints import VCenterCheckpoint, parse_time
from event_router.events.horizon import rfc3339_millis
from event_router.events.vcenter import to_cloudevent
from event_router.metrics import rfc3339 as stats_time
from event_router.timefmt import rfc3339, rfc3339_epoch

UTC = dt.UTC
#: RFC 3339 section 5.6 date-time (fraction optional; Z or a numeric offset)
RFC3339 = re.compile(
    r"^[0-9]{4}-(0[1-9]|1[0-2])-(0[1-9]|[12][0-9]|3[01])T([01][0-9]|2[0-3]):[0-5][0-9]:"
    r"([0-5][0-9]|60)(\.[0-9]+)?(Z|[+-]([01][0-9]|2[0-3]):[0-5][0-9])$"
)
GO_ZERO = dt.datetime(1, 1, 1, tzinfo=UTC)


@pytest.mark.parametrize(
    ("value", "fraction", "text"),
    [
        (GO_ZERO, None, "0001-01-01T00:00:00Z"),
        (dt.datetime(1, 1, 1), None, "0001-01-01T00:00:00Z"),  # naive: UTC
        (dt.datetime(999, 12, 31, 23, 59, 59, tzinfo=UTC), None, "0999-12-31T23:59:59Z"),
        (dt.datetime(9999, 12, 31, 23, 59, 59, 999999, tzinfo=UTC), None,
         "9999-12-31T23:59:59.999999Z"),
        (dt.datetime(2024, 5, 1, 10, 0, 0, 120000, tzinfo=UTC), None, "2024-05-01T10:00:00.12Z"),
        (dt.datetime(2024, 5, 1, 10, 0, 0, 120000, tzinfo=UTC), 3, "2024-05-01T10:00:00.120Z"),
        (dt.datetime(2024, 5, 1, 10, 0, 0, 999999, tzinfo=UTC), 3, "2024-05-01T10:00:00.999Z"),
        (dt.datetime(2024, 5, 1, 10, 0, 0, 5, tzinfo=UTC), 6, "2024-05-01T10:00:00.000005Z"),
        (dt.datetime(2024, 5, 1, 10, 0, 0, 120000, tzinfo=UTC), 0, "2024-05-01T10:00:00Z"),
        (GO_ZERO, 3, "0001-01-01T00:00:00.000Z"),
        # other zones: converted to UTC
        (dt.datetime(2024, 5, 1, 12, 0, tzinfo=dt.timezone(dt.timedelta(hours=2))), None,
         "2024-05-01T10:00:00Z"),
        (dt.datetime(1000, 1, 1, 0, 30, tzinfo=dt.timezone(dt.timedelta(hours=1))), None,
         "0999-12-31T23:30:00Z"),
        (dt.datetime(2024, 1, 1, tzinfo=dt.timezone(-dt.timedelta(hours=5, minutes=30))), None,
         "2024-01-01T05:30:00Z"),
        # UTC would leave years 1..9999: the offset stays (the same instant, still RFC 3339)
        (dt.datetime(1, 1, 1, tzinfo=dt.timezone(dt.timedelta(hours=1))), None,
         "0001-01-01T00:00:00+01:00"),
        (dt.datetime(9999, 12, 31, 23, 0, tzinfo=dt.timezone(-dt.timedelta(hours=1, minutes=30))),
         None, "9999-12-31T23:00:00-01:30"),
    ],
)  # fmt: skip
def test_edges(value: dt.datetime, fraction: int | None, text: str) -> None:
    assert rfc3339(value, fraction) == text
    assert RFC3339.fullmatch(text)
    if text.endswith("Z") and fraction is None:  # read back to the same instant
        assert parse_time(text) == value.replace(tzinfo=value.tzinfo or UTC)


@pytest.mark.parametrize("year", [1, 9, 10, 99, 100, 999, 1000, 1969, 1970, 2038, 9999])
def test_every_year_has_four_digits(year: int) -> None:
    text = rfc3339(dt.datetime(year, 6, 15, 1, 2, 3, tzinfo=UTC))
    assert text == f"{year:04d}-06-15T01:02:03Z" and RFC3339.fullmatch(text)


def test_epoch_and_bad_fraction() -> None:
    assert rfc3339_epoch(0) == "1970-01-01T00:00:00Z"
    assert rfc3339_epoch(1.5, 3) == "1970-01-01T00:00:01.500Z"
    assert stats_time(-62135596800) == "0001-01-01T00:00:00.000Z"  # Go's zero time in /stats
    with pytest.raises(ValueError, match="fraction"):
        rfc3339(GO_ZERO, 7)


def test_vcenter_event_with_go_zero_time() -> None:
    """The original's own test fixtures hold an event whose createdTime is Go's zero time."""
    event = vim.event.VmPoweredOnEvent(
        key=1,
        chainId=1,
        createdTime=GO_ZERO,
        userName="u",
        fullFormattedMessage="m",
        template=False,
    )
    ce = to_cloudevent(event, source="https://vc/sdk", instance_uuid="u", api_version="8.0")
    assert ce["time"] == "0001-01-01T00:00:00Z"
    assert ce.get_data()["CreatedTime"] == "0001-01-01T00:00:00Z"


def test_checkpoint_of_year_one_round_trips() -> None:
    cp = VCenterCheckpoint(
        vcenter="https://vc/sdk",
        last_event_key=1,
        last_event_type="VmPoweredOnEvent",
        last_event_time=GO_ZERO,
        created=dt.datetime(999, 1, 2, 3, 4, 5, 600000, tzinfo=UTC),
    )
    data = cp.to_json()
    assert data["lastEventKeyTimestamp"] == "0001-01-01T00:00:00Z"
    assert data["createdTimestamp"] == "0999-01-02T03:04:05.6Z"
    assert VCenterCheckpoint.from_json(json.loads(json.dumps(data))) == cp


def test_horizon_times_keep_milliseconds() -> None:
    assert rfc3339_millis(1625140800123) == "2021-07-01T12:00:00.123Z"
    assert rfc3339_millis(-62135596800000) == "0001-01-01T00:00:00.000Z"


def test_json_log_timestamp() -> None:
    from event_router.logsetup import setup_logging

    stream = io.StringIO()
    setup_logging("info", True, stream=stream)
    try:
        logging.getLogger("event_router.test").info("hello")
    finally:
        setup_logging("info", False)
    line = json.loads(stream.getvalue().splitlines()[-1])
    stamp = next(v for k, v in line.items() if k in ("ts", "time", "timestamp"))
    assert RFC3339.fullmatch(stamp), stamp


def test_operator_status_time() -> None:
    from event_router.operator.reconciler import _now

    assert RFC3339.fullmatch(_now())
