"""Time formatting shared by event conversion and checkpoints."""

from __future__ import annotations

import datetime as dt


def rfc3339(value: dt.datetime) -> str:
    """RFC 3339 in UTC with a ``Z`` and the fraction trimmed, as Go's ``time.Time`` JSON
    (RFC3339Nano). A naive datetime is taken as UTC."""
    if value.tzinfo is None:
        value = value.replace(tzinfo=dt.UTC)
    value = value.astimezone(dt.UTC)
    text = value.strftime("%Y-%m-%dT%H:%M:%S")
    if value.microsecond:
        text += f".{value.microsecond:06d}".rstrip("0")
    return text + "Z"
