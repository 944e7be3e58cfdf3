"""Which events a processor takes: Knative Trigger ``filters`` and an EventBridge ``pattern``.

Pure functions: :func:`compile_event_filter` turns a processor's ``filters`` and ``pattern``
into one predicate over a CloudEvent (None when the processor takes every event).

* ``filters`` (Knative Trigger's dialect): every entry must match. ``exact`` / ``prefix`` /
  ``suffix`` compare one attribute's value as a string (an event without the attribute does
  not match); ``all`` / ``any`` / ``not`` combine filters.
* ``pattern`` (Amazon EventBridge's event pattern, :mod:`event_router.patterns`) is matched
  against the CloudEvent as its JSON form: the attributes at the top level and ``data``.
  Data that is not JSON (bytes) is matched as absent.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

from cloudevents.http import CloudEvent

from event_router.config.models import EventProcessor, Filter
from event_router.patterns import compile_pattern

__all__ = ["EventFilter", "compile_event_filter", "compile_filter", "event_json"]

EventFilter = Callable[[CloudEvent], bool]
AttributeTest = Callable[[Mapping[str, Any]], bool]


def _text(value: Any) -> str | None:
    if value is None:
        return None
    if isinstance(value, str):
        return value
    if isinstance(value, bool):
        return "true" if value else "false"
    if hasattr(value, "isoformat"):  # a datetime attribute (time)
        from event_router.timefmt import rfc3339

        return rfc3339(value)
    return str(value)


def compile_filter(spec: Filter) -> AttributeTest:
    """One Knative filter expression as a predicate over an event's attributes."""
    if spec.exact is not None:
        ((name, want),) = spec.exact.items()
        return lambda attrs: _text(attrs.get(name)) == want
    if spec.prefix is not None:
        ((name, want),) = spec.prefix.items()

        def prefix(attrs: Mapping[str, Any]) -> bool:
            got = _text(attrs.get(name))
            return got is not None and got.startswith(want)

        return prefix
    if spec.suffix is not None:
        ((name, want),) = spec.suffix.items()

        def suffix(attrs: Mapping[str, Any]) -> bool:
            got = _text(attrs.get(name))
            return got is not None and got.endswith(want)

        return suffix
    if spec.all is not None:
        tests = [compile_filter(f) for f in spec.all]
        return lambda attrs: all(t(attrs) for t in tests)
    if spec.any is not None:
        tests = [compile_filter(f) for f in spec.any]
        return lambda attrs: any(t(attrs) for t in tests)
    assert spec.not_ is not None  # the model allows exactly one dialect
    inner = compile_filter(spec.not_)
    return lambda attrs: not inner(attrs)


def event_json(event: CloudEvent) -> dict[str, Any]:
    """The CloudEvent as a pattern sees it: attributes, and ``data`` when it is JSON."""
    doc: dict[str, Any] = {k: _text(v) for k, v in event.get_attributes().items()}
    data = event.get_data()
    if data is not None and not isinstance(data, bytes | bytearray | memoryview):
        doc["data"] = data
    return doc


def compile_event_filter(spec: EventProcessor) -> EventFilter | None:
    """The predicate of a processor's ``filters`` and ``pattern`` (both must match), or None
    when it has neither."""
    tests = [compile_filter(f) for f in spec.filters or []]
    pattern = compile_pattern(spec.pattern) if spec.pattern is not None else None
    if not tests and pattern is None:
        return None

    def accept(event: CloudEvent) -> bool:
        if tests:
            attrs = event.get_attributes()
            if not all(t(attrs) for t in tests):
                return False
        return pattern is None or pattern.matches(event_json(event))

    return accept
