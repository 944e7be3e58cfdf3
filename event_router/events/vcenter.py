"""vCenter event -> CloudEvent conversion (pure functions, no I/O).

:func:`to_data` turns any pyVmomi data object into the JSON the original router emitted
(govmomi's ``json.Marshal`` of the event): property names capitalised (``chainId`` ->
``ChainId``), managed object references as ``{"Type", "Value"}``, datetimes as RFC 3339
in UTC, unset strings as ``""`` (Go's zero value), other unset values and empty arrays as
``null``, binary as base64.

:func:`to_cloudevent` builds the CloudEvent for one vCenter event in either type style
(``router``: the original's; ``sources``: Tanzu Sources for Knative).
"""

from __future__ import annotations

import base64
import datetime as dt
import functools
import uuid
from typing import Any, Literal

from cloudevents.http import CloudEvent
from pyVmomi import VmomiSupport, vim

from event_router.timefmt import rfc3339

__all__ = [
    "ID_NAMESPACE",
    "event_class",
    "event_id",
    "event_name",
    "rfc3339",
    "to_cloudevent",
    "to_data",
]

#: namespace of the uuid5 CloudEvent ids (fixed forever: changing it changes every id)
ID_NAMESPACE = uuid.UUID("0f8d3c1e-6a53-5b4a-9d0e-7d6f2c1b9e41")

ROUTER_TYPE_PREFIX = "com.vmware.event.router/"
SOURCES_TYPE_FORMAT = "com.vmware.vsphere.{name}.v0"

#: pyVmomi's own bookkeeping properties, absent from govmomi's structs
_SKIPPED = frozenset({"dynamicType", "dynamicProperty"})


@functools.cache
def _go_name(name: str) -> str:
    """``chainId`` -> ``ChainId``; one shared string per property name (the ``data`` of
    every queued event holds its keys: a new string per key and event was 40% of it)."""
    return name[:1].upper() + name[1:]


def _is_string_type(type_: Any) -> bool:
    try:
        return isinstance(type_, type) and issubclass(type_, str)
    except TypeError:
        return False


@functools.cache
def _properties(cls: type) -> tuple[tuple[str, str, bool], ...]:
    """(pyVmomi name, Go name, string-typed) of each property of a data object type that
    goes into ``data``, once per type."""
    return tuple(
        (prop.name, _go_name(prop.name), _is_string_type(prop.type))
        for prop in cls._GetPropertyList()  # type: ignore[attr-defined]
        if prop.name not in _SKIPPED
    )


def to_data(value: Any) -> Any:
    """Any pyVmomi value -> JSON-able value with the original router's names and nesting."""
    if value is None:
        return None
    if isinstance(value, VmomiSupport.ManagedObject):
        return {"Type": type(value)._wsdlName, "Value": value._moId}
    if isinstance(value, VmomiSupport.DataObject):
        out: dict[str, Any] = {}
        cls: type = type(value)  # a class is hashable (mypy sees DataObject's __hash__)
        for name, key, is_string in _properties(cls):
            item = getattr(value, name, None)
            out[key] = "" if item is None and is_string else to_data(item)
        return out
    if isinstance(value, bool):
        return value
    if isinstance(value, dt.datetime):
        return rfc3339(value)
    if isinstance(value, bytes | bytearray):
        return base64.b64encode(bytes(value)).decode("ascii")
    if isinstance(value, str):
        return str(value)
    if isinstance(value, int):
        return int(value)
    if isinstance(value, float):
        return float(value)
    if isinstance(value, type):  # vmodl.TypeName / type-valued properties
        return getattr(value, "_wsdlName", value.__name__)
    if isinstance(value, list | tuple):
        return [to_data(v) for v in value] or None
    return str(value)


EventClass = Literal["event", "eventex", "extendedevent"]


def event_class(event: Any) -> EventClass:
    if isinstance(event, vim.event.EventEx):
        return "eventex"
    if isinstance(event, vim.event.ExtendedEvent):
        return "extendedevent"
    return "event"


def event_name(event: Any) -> str:
    """The event's class name (``VmPoweredOnEvent``), or ``eventTypeId`` for EventEx and
    ExtendedEvent (falling back to the class name when it is empty)."""
    if isinstance(event, vim.event.EventEx | vim.event.ExtendedEvent):
        type_id = getattr(event, "eventTypeId", None)
        if type_id:
            return str(type_id)
    return str(type(event)._wsdlName)


def event_id(instance_uuid: str, key: int, created: dt.datetime) -> str:
    """A stable id: the same vCenter event always gets the same id (replays can be
    de-duplicated); ``createdTime`` keeps ids distinct if keys wrap or restart."""
    return str(uuid.uuid5(ID_NAMESPACE, f"{instance_uuid}/{int(key)}/{rfc3339(created)}"))


def to_cloudevent(
    event: Any,
    *,
    source: str,
    instance_uuid: str,
    api_version: str,
    type_style: Literal["router", "sources"] = "router",
) -> CloudEvent:
    """One vCenter event -> CloudEvent (``data`` is :func:`to_data` of the event)."""
    cls = event_class(event)
    name = event_name(event)
    created: dt.datetime = event.createdTime
    attributes: dict[str, Any] = {
        "id": event_id(instance_uuid, event.key, created),
        "source": source,
        "time": rfc3339(created),
        "subject": name,
        "datacontenttype": "application/json",
        "vsphereapiversion": api_version,
    }
    if type_style == "sources":
        attributes["type"] = SOURCES_TYPE_FORMAT.format(name=name)
        attributes["eventclass"] = cls
    else:
        attributes["type"] = ROUTER_TYPE_PREFIX + cls
    return CloudEvent(attributes, to_data(event))
