"""The local matcher agrees with moto's own EventBridge pattern matching.

Every pattern below is applied to every event (an EventBridge envelope whose ``detail`` is a
CloudEvent as the processor sends it) by both :mod:`event_router.patterns` and moto's
in-process ``EventPattern`` class (the code the moto server uses to decide delivery), and
the answers are compared. The corpus covers every operator moto implements; the cases where
moto is known to deviate from EventBridge (booleans equal to numbers, arrays of objects,
``shellstyle``) are excluded here and checked against EventBridge's documented examples in
``test_patterns.py``.
"""

from __future__ import annotations

import json
from typing import Any

import pytest
from moto.events.models import EventPattern

from event_router.patterns import compile_pattern


def envelope(detail: dict[str, Any], detail_type: str = "VmPoweredOnEvent") -> dict[str, Any]:
    return {
        "version": "0",
        "id": "3e3c153a-8339-4e30-8c35-687ebef853fe",
        "detail-type": detail_type,
        "source": detail.get("source", "https://vcenter.local/sdk"),
        "account": "123456789012",
        "time": "2026-11-25T12:00:00Z",
        "region": "us-west-1",
        "resources": [],
        "detail": detail,
    }


def cloudevent(**overrides: Any) -> dict[str, Any]:
    ce: dict[str, Any] = {
        "specversion": "1.0",
        "id": "42",
        "source": "https://vcenter.local/sdk",
        "type": "com.vmware.event.router/event",
        "subject": "VmPoweredOnEvent",
        "time": "2026-11-25T12:00:00Z",
        "datacontenttype": "application/json",
        "data": {
            "Key": 9420,
            "ChainId": 9407,
            "CreatedTime": "2026-11-25T12:00:00.5Z",
            "UserName": "VSPHERE.LOCAL\\Administrator",
            "FullFormattedMessage": "Test-VM on esx-01.local in Datacenter is powered on",
            "Vm": {"Name": "Test-VM", "Vm": {"Type": "VirtualMachine", "Value": "vm-56"}},
            "Host": {"Name": "esx-01.local"},
            "Ds": None,
            "Tags": ["prod", "linux"],
            "Cpu": 4,
            "MemoryGB": 15.5,
            "Ip": "10.0.0.17",
            "Ip6": "2001:db8::17",
            "Template": False,
        },
    }
    data = dict(ce["data"])
    for key, value in overrides.items():
        if key in ("subject", "type", "source"):
            ce[key] = value
        elif value is _DELETE:
            data.pop(key, None)
        else:
            data[key] = value
    ce["data"] = data
    return ce


_DELETE = object()

EVENTS: list[dict[str, Any]] = [
    envelope(cloudevent()),
    envelope(cloudevent(subject="VmPoweredOffEvent"), "VmPoweredOffEvent"),
    envelope(cloudevent(subject="vmpoweredonevent", Cpu=0, MemoryGB=0.5, Ip="192.168.1.9")),
    envelope(cloudevent(Vm={"Name": "prod-db-01"}, Tags=["prod"], Cpu=64, Ip="10.0.1.200")),
    envelope(cloudevent(Ds=_DELETE, Tags=[], Ip="not-an-ip", Template=True, Cpu=-3)),
    envelope(cloudevent(subject="AlarmStatusChangedEvent", UserName="", Cpu=5, MemoryGB=5)),
    envelope(cloudevent(Vm={"Name": "web*01"}, Host={"Name": "ESX-02.LOCAL"}, Cpu=5.000001)),
    envelope(cloudevent(source="https://other.example/sdk", Ds="datastore1", Tags="single")),
    envelope(cloudevent(Missing="here", Ip6="fe80::1", Vm={"Name": "Test-VM-2"})),
    envelope(
        cloudevent(
            Key=12000, Host={"Name": "esx.lab"}, FullFormattedMessage="Test-VM is powered off"
        )
    ),
]

D = "detail"


def on_data(**fields: Any) -> dict[str, Any]:
    return {D: {"data": fields}}


PATTERNS: list[dict[str, Any]] = [
    # exact values
    {D: {"subject": ["VmPoweredOnEvent"]}},
    {D: {"subject": ["VmPoweredOnEvent", "VmPoweredOffEvent"]}},
    {"detail-type": ["VmPoweredOffEvent"]},
    {"source": ["https://vcenter.local/sdk"], D: {"subject": ["VmPoweredOnEvent"]}},
    on_data(Cpu=[4]),
    on_data(Cpu=[4, 64]),
    on_data(MemoryGB=[15.5]),
    on_data(MemoryGB=[5]),
    on_data(Ds=[None]),
    on_data(Template=[False]),
    on_data(Template=[True]),
    on_data(UserName=[""]),
    on_data(Tags=["linux"]),
    on_data(Tags=["single"]),
    on_data(Vm={"Name": ["Test-VM"]}),
    on_data(Vm={"Vm": {"Value": ["vm-56"]}}),
    # prefix / suffix (plain and ignoring case)
    {D: {"subject": [{"prefix": "VmPowered"}]}},
    on_data(Vm={"Name": [{"prefix": "prod-"}]}),
    {D: {"subject": [{"prefix": {"equals-ignore-case": "vmpOWERED"}}]}},
    on_data(Host={"Name": [{"suffix": ".local"}]}),
    on_data(Host={"Name": [{"suffix": {"equals-ignore-case": ".LOCAL"}}]}),
    on_data(Ip=[{"prefix": "10."}, {"suffix": ".9"}]),
    # equals-ignore-case
    {D: {"subject": [{"equals-ignore-case": "VMPOWEREDONEVENT"}]}},
    on_data(Host={"Name": [{"equals-ignore-case": "esx-02.local"}]}),
    # anything-but: value, list, numbers, prefix, suffix, ignore-case, wildcard
    {D: {"subject": [{"anything-but": "VmPoweredOnEvent"}]}},
    {D: {"subject": [{"anything-but": ["VmPoweredOnEvent", "VmPoweredOffEvent"]}]}},
    on_data(Cpu=[{"anything-but": 4}]),
    on_data(Cpu=[{"anything-but": [4, 5]}]),
    on_data(Tags=[{"anything-but": "prod"}]),
    {D: {"subject": [{"anything-but": {"prefix": "VmPowered"}}]}},
    on_data(Host={"Name": [{"anything-but": {"suffix": ".local"}}]}),
    {D: {"subject": [{"anything-but": {"equals-ignore-case": "vmpoweredonevent"}}]}},
    on_data(Vm={"Name": [{"anything-but": {"wildcard": "*-db-*"}}]}),
    # numeric ranges
    on_data(Cpu=[{"numeric": [">", 0]}]),
    on_data(Cpu=[{"numeric": [">=", 4, "<", 64]}]),
    on_data(Cpu=[{"numeric": [">", 0, "<=", 5]}]),
    on_data(Cpu=[{"numeric": ["=", 5]}]),
    on_data(MemoryGB=[{"numeric": ["<", 1]}]),
    on_data(MemoryGB=[{"numeric": [">", 5, "<=", 15.5]}]),
    on_data(Key=[{"numeric": [">=", 9000, "<", 10000]}]),
    # exists
    on_data(Ds=[{"exists": True}]),
    on_data(Ds=[{"exists": False}]),
    on_data(Missing=[{"exists": False}]),
    on_data(Missing=[{"exists": True}]),
    on_data(Ip=[{"exists": True}], Ds=[{"exists": False}]),
    # cidr (IPv4 and IPv6)
    on_data(Ip=[{"cidr": "10.0.0.0/24"}]),
    on_data(Ip=[{"cidr": "10.0.0.0/16"}]),
    on_data(Ip=[{"cidr": "192.168.0.0/16"}]),
    on_data(Ip6=[{"cidr": "2001:db8::/32"}]),
    # wildcard
    on_data(Vm={"Name": [{"wildcard": "*-VM"}]}),
    on_data(Vm={"Name": [{"wildcard": "prod-*-01"}]}),
    on_data(Vm={"Name": [{"wildcard": "web\\*01"}]}),
    on_data(FullFormattedMessage=[{"wildcard": "*powered on"}]),
    # $or
    {D: {"$or": [{"subject": ["VmPoweredOffEvent"]}, {"data": {"Cpu": [{"numeric": [">", 32]}]}}]}},
    {"$or": [{"detail-type": ["AlarmStatusChangedEvent"]}, {D: {"data": {"Tags": ["linux"]}}}]},
    # combinations (AND across fields)
    {
        D: {
            "subject": [{"prefix": "Vm"}],
            "data": {"Cpu": [{"numeric": [">=", 4]}], "Ip": [{"cidr": "10.0.0.0/8"}]},
        }
    },
    {"source": [{"anything-but": {"prefix": "https://other"}}], D: {"data": {"Tags": ["prod"]}}},
]

PAIRS = [(p, e) for p in PATTERNS for e in EVENTS]


def test_corpus_is_large_enough() -> None:
    assert len(PAIRS) >= 150
    used = json.dumps(PATTERNS)
    for op in (
        "prefix",
        "suffix",
        "anything-but",
        "numeric",
        "exists",
        "equals-ignore-case",
        "wildcard",
        "cidr",
        "$or",
    ):
        assert f'"{op}"' in used, op


@pytest.mark.parametrize("index", range(len(PATTERNS)))
def test_local_matcher_agrees_with_moto(index: int) -> None:
    pattern = PATTERNS[index]
    local = compile_pattern(json.dumps(pattern))
    theirs = EventPattern.load(json.dumps(pattern))
    answers = [(local.matches(e), theirs.matches_event(e)) for e in EVENTS]
    disagreements = [(i, ours, moto) for i, (ours, moto) in enumerate(answers) if ours != moto]
    assert not disagreements, f"pattern {pattern}: (event, ours, moto) {disagreements}"
    # every pattern discriminates: it matches some events of the corpus and rejects others
    assert any(a for a, _ in answers), f"{pattern} matches no event"
    assert not all(a for a, _ in answers), f"{pattern} matches every event"


# --- generated: random patterns and events in the domain where moto follows EventBridge ---
# (no booleans, no empty objects/arrays, no arrays of objects: moto deviates there)

from hypothesis import HealthCheck, given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

WORDS = st.sampled_from(["vm", "Vm", "VM-01", "web-01", "db", "", "Linux-7", "esx.local"])
NUMS = st.one_of(st.integers(-5, 70), st.sampled_from([0.5, 5.0, 15.5, -3.25]))
IPS = st.sampled_from(["10.0.0.1", "10.0.1.9", "192.168.7.7", "2001:db8::1", "fe80::2"])

GEN_EVENT = st.fixed_dictionaries(
    {},
    optional={
        "s": st.one_of(WORDS, st.none()),
        "n": NUMS,
        "ip": IPS,
        "tags": st.lists(WORDS, min_size=1, max_size=3),
        "obj": st.fixed_dictionaries({"s2": WORDS}),
    },
)

STRING_FILTER = st.one_of(
    WORDS,
    WORDS.map(lambda w: {"prefix": w[:2]}),
    WORDS.map(lambda w: {"suffix": w[-2:]}),
    WORDS.map(lambda w: {"prefix": {"equals-ignore-case": w[:2].upper()}}),
    WORDS.map(lambda w: {"equals-ignore-case": w.swapcase()}),
    st.lists(WORDS, min_size=1, max_size=3).map(lambda ws: {"anything-but": ws}),
    WORDS.map(lambda w: {"anything-but": {"prefix": w[:1] or "v"}}),
    WORDS.map(lambda w: {"anything-but": {"suffix": w[-1:] or "1"}}),
    WORDS.map(lambda w: {"anything-but": {"equals-ignore-case": w}}),
    WORDS.map(lambda w: {"wildcard": "*" + (w[1:3] or "m") + "*"}),
    st.booleans().map(lambda b: {"exists": b}),
)
NUMBER_FILTER = st.one_of(
    NUMS,
    st.tuples(st.sampled_from([">", ">=", "<", "<=", "="]), NUMS).map(
        lambda t: {"numeric": [t[0], t[1]]}
    ),
    st.tuples(st.integers(-5, 30), st.integers(0, 40)).map(
        lambda t: {"numeric": [">=", min(t), "<", max(t) + 1]}
    ),
    st.lists(st.integers(0, 70), min_size=1, max_size=3).map(lambda ns: {"anything-but": ns}),
    st.booleans().map(lambda b: {"exists": b}),
)
IP_FILTER = st.one_of(
    st.sampled_from(["10.0.0.0/24", "10.0.0.0/8", "192.168.0.0/16", "2001:db8::/32"]).map(
        lambda c: {"cidr": c}
    ),
    st.booleans().map(lambda b: {"exists": b}),
)


def _filters(strategy: st.SearchStrategy[Any]) -> st.SearchStrategy[list[Any]]:
    return st.lists(strategy, min_size=1, max_size=3)


GEN_PATTERN_BODY = st.fixed_dictionaries(
    {},
    optional={
        "s": _filters(STRING_FILTER),
        "n": _filters(NUMBER_FILTER),
        "ip": _filters(IP_FILTER),
        "tags": _filters(STRING_FILTER),
        "obj": st.fixed_dictionaries({"s2": _filters(STRING_FILTER)}),
    },
).filter(bool)
GEN_PATTERN = st.one_of(
    GEN_PATTERN_BODY.map(lambda b: {D: b}),
    st.lists(GEN_PATTERN_BODY, min_size=2, max_size=3).map(lambda bs: {D: {"$or": bs}}),
)


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(pattern=GEN_PATTERN, detail=GEN_EVENT)
def test_generated_pairs_agree_with_moto(pattern: dict[str, Any], detail: dict[str, Any]) -> None:
    text = json.dumps(pattern)
    event = {"detail": detail}
    assert compile_pattern(text).matches(event) == EventPattern.load(text).matches_event(event)
