"""The one time format the product writes: RFC 3339 (CloudEvent ``time``, ``data`` times such
as CreatedTime, checkpoints, status, Kubernetes Events, /stats, logs).

Always a four-digit year, for any year from 1 to 9999 (Go's zero time is
``0001-01-01T00:00:00Z``; ``strftime("%Y")`` would write year 1 as ``1``), in UTC with ``Z``.
"""

from __future__ import annotations

import datetime as dt

__all__ = ["rfc3339", "rfc3339_epoch"]


def rfc3339(value: dt.datetime, fraction: int | None = None) -> str:
    """``value`` in RFC 3339, UTC with ``Z``; a naive datetime is taken as UTC.

    ``fraction``: None writes the fraction of a second trimmed of trailing zeros, none when
    it is zero (as Go's ``time.RFC3339Nano``, what the original wrote); 0 writes no fraction;
    1-6 exactly that many digits (truncated, as Go's formatting does).

    An instant whose UTC date would leave years 1-9999 (``0001-01-01T00:00:00+01:00``) keeps
    its own offset instead: still RFC 3339, still the same instant.
    """
    if value.tzinfo is None:
        value = value.replace(tzinfo=dt.UTC)
    offset = value.utcoffset() or dt.timedelta(0)
    zone = "Z"
    if offset:
        try:
            value = value.astimezone(dt.UTC)
        except OverflowError:
            minutes = int(offset.total_seconds()) // 60
            sign = "-" if minutes < 0 else "+"
            zone = f"{sign}{abs(minutes) // 60:02d}:{abs(minutes) % 60:02d}"
    text = (
        f"{value.year:04d}-{value.month:02d}-{value.day:02d}"
        f"T{value.hour:02d}:{value.minute:02d}:{value.second:02d}"
    )
    micro = f"{value.microsecond:06d}"
    if fraction is None:
        if value.microsecond:
            text += "." + micro.rstrip("0")
    elif fraction > 0:
        if fraction > 6:
            raise ValueError(f"fraction: at most 6 digits (got {fraction})")
        text += "." + micro[:fraction]
    return text + zone


def rfc3339_epoch(seconds: float, fraction: int | None = None) -> str:
    """A POSIX timestamp in RFC 3339 (see :func:`rfc3339`)."""
    return rfc3339(dt.datetime.fromtimestamp(seconds, tz=dt.UTC), fraction)
