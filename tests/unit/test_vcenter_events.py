"""The pure vCenter event -> CloudEvent conversion, on pyVmomi objects built in memory."""

from __future__ import annotations

import datetime as dt
import json
from typing import Any

import pytest
from cloudevents.conversion import to_structured
from pyVmomi import vim

from event_router.events.vcenter import event_id, rfc3339, to_cloudevent, to_data

UTC = dt.UTC
kv: Any = getattr(vim, "KeyAnyValue")  # noqa: B009 - not in the type stubs


def powered_off_event(key: int = 9902) -> vim.event.VmPoweredOffEvent:
    """The VmPoweredOffEvent of the original router's README."""
    return vim.event.VmPoweredOffEvent(
        key=key,
        chainId=9895,
        createdTime=dt.datetime(2020, 2, 11, 21, 28, 23, 677595, tzinfo=UTC),
        userName="VSPHERE.LOCAL\\Administrator",
        datacenter=vim.event.DatacenterEventArgument(
            name="testDC", datacenter=vim.Datacenter("datacenter-2")
        ),
        computeResource=vim.event.ComputeResourceEventArgument(
            name="cls", computeResource=vim.ClusterComputeResource("domain-c7")
        ),
        host=vim.event.HostEventArgument(name="10.185.22.74", host=vim.HostSystem("host-21")),
        vm=vim.event.VmEventArgument(name="test-01", vm=vim.VirtualMachine("vm-56")),
        fullFormattedMessage="test-01 on  10.0.0.1 in testDC is powered off",
        template=False,
    )


README_DATA = {
    "Key": 9902,
    "ChainId": 9895,
    "CreatedTime": "2020-02-11T21:28:23.677595Z",
    "UserName": "VSPHERE.LOCAL\\Administrator",
    "Datacenter": {"Name": "testDC", "Datacenter": {"Type": "Datacenter", "Value": "datacenter-2"}},
    "ComputeResource": {
        "Name": "cls",
        "ComputeResource": {"Type": "ClusterComputeResource", "Value": "domain-c7"},
    },
    "Host": {"Name": "10.185.22.74", "Host": {"Type": "HostSystem", "Value": "host-21"}},
    "Vm": {"Name": "test-01", "Vm": {"Type": "VirtualMachine", "Value": "vm-56"}},
    "Ds": None,
    "Net": None,
    "Dvs": None,
    "FullFormattedMessage": "test-01 on  10.0.0.1 in testDC is powered off",
    "ChangeTag": "",
    "Template": False,
}


def test_data_matches_the_original_readme_sample() -> None:
    data = to_data(powered_off_event())
    # every field of the original's sample, same value, same nesting
    for name, value in README_DATA.items():
        assert data[name] == value, name
    # in the original's order (newer API fields such as Tgw/AuditId may sit in between)
    keys = [k for k in data if k in README_DATA]
    assert keys == list(README_DATA)
    assert "DynamicType" not in data and "DynamicProperty" not in data
    json.dumps(data)  # JSON-able as is


def test_events_share_their_data_keys() -> None:
    """The keys of every event's data are one string per property name (queued events
    hold them: a copy per event was a third of its memory)."""
    first, second = to_data(powered_off_event()), to_data(powered_off_event())
    assert all(a is b for a, b in zip(first, second, strict=True))


def test_router_style_cloudevent() -> None:
    ev = to_cloudevent(
        powered_off_event(),
        source="https://10.0.0.1/sdk",
        instance_uuid="1f7d6b3c-0000-4000-8000-000000000001",
        api_version="8.0.2.0",
    )
    assert ev["type"] == "com.vmware.event.router/event"
    assert ev["subject"] == "VmPoweredOffEvent"
    assert ev["source"] == "https://10.0.0.1/sdk"
    assert ev["time"] == "2020-02-11T21:28:23.677595Z"
    assert ev["datacontenttype"] == "application/json"
    assert ev["vsphereapiversion"] == "8.0.2.0"
    assert "eventclass" not in ev.get_attributes()
    assert ev.data["Vm"]["Vm"] == {"Type": "VirtualMachine", "Value": "vm-56"}
    # encodable by the SDK as a structured CloudEvent
    _, body = to_structured(ev)
    assert json.loads(body)["data"]["Key"] == 9902


def test_sources_style_cloudevent() -> None:
    ev = to_cloudevent(
        powered_off_event(),
        source="https://vc/sdk",
        instance_uuid="u",
        api_version="7.0",
        type_style="sources",
    )
    assert ev["type"] == "com.vmware.vsphere.VmPoweredOffEvent.v0"
    assert ev["eventclass"] == "event"
    assert ev["subject"] == "VmPoweredOffEvent"


@pytest.mark.parametrize(
    ("event", "cls"),
    [
        (vim.event.EventEx(eventTypeId="com.vmware.cl.CreateLibraryEvent"), "eventex"),
        (vim.event.ExtendedEvent(eventTypeId="com.vmware.vc.HA.Thing"), "extendedevent"),
    ],
)
def test_eventex_and_extendedevent_use_event_type_id(event: Any, cls: str) -> None:
    event.key = 7
    event.chainId = 7
    event.createdTime = dt.datetime(2024, 1, 2, 3, 4, 5, tzinfo=UTC)
    event.userName = "u"
    router = to_cloudevent(event, source="s", instance_uuid="u", api_version="8")
    assert router["type"] == f"com.vmware.event.router/{cls}"
    assert router["subject"] == event.eventTypeId
    assert router.data["EventTypeId"] == event.eventTypeId
    sources = to_cloudevent(
        event, source="s", instance_uuid="u", api_version="8", type_style="sources"
    )
    assert sources["type"] == f"com.vmware.vsphere.{event.eventTypeId}.v0"
    assert sources["eventclass"] == cls


def test_eventex_arguments_and_extended_data() -> None:
    ex = vim.event.EventEx(
        key=1,
        chainId=1,
        createdTime=dt.datetime(2024, 1, 1, tzinfo=UTC),
        userName="u",
        eventTypeId="x.y",
        arguments=[kv(key="a", value="b"), kv(key="n", value=3)],
    )
    data = to_data(ex)
    assert data["Arguments"] == [{"Key": "a", "Value": "b"}, {"Key": "n", "Value": 3}]
    ext = vim.event.ExtendedEvent(
        key=2,
        chainId=2,
        createdTime=dt.datetime(2024, 1, 1, tzinfo=UTC),
        userName="u",
        eventTypeId="x",
        managedObject=vim.HostSystem("host-9"),
        data=[vim.event.ExtendedEvent.Pair(key="k", value="v")],
    )
    data = to_data(ext)
    assert data["ManagedObject"] == {"Type": "HostSystem", "Value": "host-9"}
    assert data["Data"] == [{"Key": "k", "Value": "v"}]


def test_empty_arrays_are_null_like_go_nil_slices() -> None:
    assert to_data(vim.event.EventEx(eventTypeId="x"))["Arguments"] is None


def test_ids_are_stable_and_distinct() -> None:
    t = dt.datetime(2024, 5, 6, 7, 8, 9, 123456, tzinfo=UTC)
    a = event_id("vc-1", 42, t)
    assert a == event_id("vc-1", 42, t)  # a replay carries the same id
    assert a != event_id("vc-2", 42, t)  # another vCenter
    assert a != event_id("vc-1", 43, t)  # another event
    assert a != event_id("vc-1", 42, t + dt.timedelta(microseconds=1))  # a wrapped/reused key
    ev1 = to_cloudevent(powered_off_event(), source="s", instance_uuid="vc", api_version="8")
    ev2 = to_cloudevent(powered_off_event(), source="s", instance_uuid="vc", api_version="8")
    assert ev1["id"] == ev2["id"]


def test_negative_keys_after_int32_wrap() -> None:
    ev = to_cloudevent(
        powered_off_event(key=-2147483647), source="s", instance_uuid="vc", api_version="8"
    )
    assert ev.data["Key"] == -2147483647


def test_rfc3339() -> None:
    assert rfc3339(dt.datetime(2020, 1, 1, tzinfo=UTC)) == "2020-01-01T00:00:00Z"
    assert rfc3339(dt.datetime(2020, 1, 1, 0, 0, 0, 500000, tzinfo=UTC)) == (
        "2020-01-01T00:00:00.5Z"
    )
    cet = dt.timezone(dt.timedelta(hours=1))
    assert rfc3339(dt.datetime(2020, 1, 1, 1, 0, tzinfo=cet)) == "2020-01-01T00:00:00Z"
