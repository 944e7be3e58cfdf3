"""EventBridge pattern language: documented examples, the original's shellstyle, and errors.

Examples are taken from the EventBridge user guide ("Content filtering in Amazon EventBridge
event patterns", "Comparison operators"), Quamina's shellstyle description and the original
router's README. Agreement with moto's matcher is checked in ``test_patterns_moto.py``.
"""

from __future__ import annotations

import json
from typing import Any

import pytest

from event_router.patterns import PatternError, compile_pattern, matches


def ce(subject: str = "VmPoweredOnEvent", **data: Any) -> dict[str, Any]:
    return {
        "detail": {
            "specversion": "1.0",
            "id": "1",
            "source": "https://vc.local/sdk",
            "type": "com.vmware.event.router/event",
            "subject": subject,
            "data": data,
        }
    }


# --- the original router's README examples (Quamina shellstyle) -------------------------

README_SUBJECTS = {
    "detail": {"subject": ["VmPoweredOnEvent", "VmPoweredOffEvent", "DrsVmPoweredOnEvent"]}
}
README_VM_PREFIX = {"detail": {"subject": [{"shellstyle": "Vm*"}]}}
README_LINUX = {"detail": {"data": {"Vm": {"Name": [{"shellstyle": "Linux*"}]}}}}


def test_readme_examples() -> None:
    assert matches(README_SUBJECTS, ce("DrsVmPoweredOnEvent"))
    assert not matches(README_SUBJECTS, ce("VmCreatedEvent"))
    assert matches(README_VM_PREFIX, ce("VmCreatedEvent"))
    assert not matches(README_VM_PREFIX, ce("DrsVmPoweredOnEvent"))
    assert matches(README_LINUX, ce(Vm={"Name": "Linux-01"}))
    assert not matches(README_LINUX, ce(Vm={"Name": "Win-Linux"}))
    assert not matches(README_LINUX, ce(Vm=None))


@pytest.mark.parametrize(
    ("shell", "value", "expected"),
    [
        ("*.jpg", "sunset.jpg", True),  # Quamina's README example
        ("*.jpg", "sunset.jpeg", False),
        ("Vm*", "Vm", True),
        ("Vm*Event", "VmPoweredOnEvent", True),
        ("Vm*Event", "VmPoweredOnEvents", False),
        ("*", "", True),
        ("a*b*c", "axxbyyc", True),
        ("a*b*c", "acb", False),
        ("exact", "exact", True),
        ("x\\*", "x\\abc", True),  # no escapes in shellstyle: the backslash is literal
    ],
)
def test_shellstyle(shell: str, value: str, expected: bool) -> None:
    assert matches({"v": [{"shellstyle": shell}]}, {"v": value}) is expected
    assert matches({"v": [{"shellstyle": shell}]}, {"v": 7}) is False


# --- EventBridge user guide examples ----------------------------------------------------


def test_null_and_empty_string_are_values_not_missing() -> None:
    pattern = {"detail": {"responseElements": [None]}}
    assert matches(pattern, {"detail": {"responseElements": None}})
    assert not matches(pattern, {"detail": {}})
    empty = {"detail": {"eventVersion": [""]}}
    assert matches(empty, {"detail": {"eventVersion": ""}})
    assert not matches(empty, {"detail": {"eventVersion": "1"}})


def test_array_values_match_when_any_element_matches() -> None:
    pattern = {"resources": ["arn:aws:ec2:us-east-1:123456789012:instance/i-b188560f"]}
    event = {
        "resources": [
            "arn:aws:ec2:us-east-1:123456789012:instance/i-b188560f",
            "arn:aws:ec2:us-east-1:111122223333:instance/i-b188560f",
        ]
    }
    assert matches(pattern, event)
    assert not matches(pattern, {"resources": ["arn:other"]})


def test_arrays_of_objects_match_within_one_element() -> None:
    pattern = {"detail": {"disks": {"label": ["Hard disk 2"], "sizeGB": [{"numeric": [">", 100]}]}}}
    event = {
        "detail": {
            "disks": [
                {"label": "Hard disk 1", "sizeGB": 500},
                {"label": "Hard disk 2", "sizeGB": 200},
            ]
        }
    }
    assert matches(pattern, event)
    crossed = {
        "detail": {
            "disks": [
                {"label": "Hard disk 1", "sizeGB": 500},
                {"label": "Hard disk 2", "sizeGB": 50},
            ]
        }
    }
    assert not matches(pattern, crossed)


def test_numeric_documented_range() -> None:
    pattern = {
        "detail": {
            "c-count": [{"numeric": [">", 0, "<=", 5]}],
            "d-count": [{"numeric": ["<", 10]}],
            "x-limit": [{"numeric": ["=", 301.8]}],
        }
    }
    assert matches(pattern, {"detail": {"c-count": 5, "d-count": 7, "x-limit": 301.8}})
    assert not matches(pattern, {"detail": {"c-count": 0, "d-count": 7, "x-limit": 301.8}})
    assert not matches(pattern, {"detail": {"c-count": 5, "d-count": 10, "x-limit": 301.8}})
    assert not matches(pattern, {"detail": {"c-count": "5", "d-count": 7, "x-limit": 301.8}})


def test_booleans_are_not_numbers() -> None:
    assert not matches({"v": [1]}, {"v": True})
    assert not matches({"v": [True]}, {"v": 1})
    assert not matches({"v": [{"numeric": [">", 0]}]}, {"v": True})
    assert matches({"v": [5]}, {"v": 5.0})
    assert not matches({"v": ["5"]}, {"v": 5})


def test_exists_applies_to_leaf_fields_only() -> None:
    assert matches({"detail": {"state": [{"exists": True}]}}, {"detail": {"state": "x"}})
    assert not matches({"detail": {"state": [{"exists": True}]}}, {"detail": {"state": {"a": 1}}})
    assert matches({"detail": {"state": [{"exists": False}]}}, {"detail": {"other": 1}})
    # a missing parent means a missing leaf
    assert matches({"detail": {"a": {"b": [{"exists": False}]}}}, {"detail": {}})
    assert not matches({"detail": {"a": {"b": ["x"]}}}, {"detail": {}})


def test_anything_but_variants() -> None:
    state = lambda f: {"detail": {"state": [{"anything-but": f}]}}  # noqa: E731
    assert matches(state("initializing"), {"detail": {"state": "running"}})
    assert not matches(state("initializing"), {"detail": {"state": "initializing"}})
    assert not matches(state("initializing"), {"detail": {}})  # needs the field
    assert not matches(state({"prefix": "init"}), {"detail": {"state": "initializing"}})
    assert matches(state({"suffix": ".png"}), {"detail": {"state": "a.jpg"}})
    assert not matches(
        state({"equals-ignore-case": "INITIALIZING"}), {"detail": {"state": "Initializing"}}
    )
    path = {"FilePath": [{"anything-but": {"wildcard": "*/lib/*"}}]}
    assert matches(path, {"FilePath": "/usr/bin/x"})
    assert not matches(path, {"FilePath": "/usr/lib/x"})
    assert matches({"x": [{"anything-but": [100, 200]}]}, {"x": 300})
    assert not matches({"x": [{"anything-but": [100, 200]}]}, {"x": 200.0})


def test_cidr_ipv4_and_ipv6() -> None:
    assert matches({"ip": [{"cidr": "10.0.0.0/24"}]}, {"ip": "10.0.0.255"})
    assert not matches({"ip": [{"cidr": "10.0.0.0/24"}]}, {"ip": "10.0.1.0"})
    assert matches({"ip": [{"cidr": "2001:db8::/32"}]}, {"ip": "2001:db8:1::5"})
    assert not matches({"ip": [{"cidr": "10.0.0.0/24"}]}, {"ip": "garbage"})


def test_wildcard_escapes() -> None:
    assert matches({"f": [{"wildcard": "dir/*.png"}]}, {"f": "dir/a/b.png"})
    assert matches({"f": [{"wildcard": "a\\*b"}]}, {"f": "a*b"})
    assert not matches({"f": [{"wildcard": "a\\*b"}]}, {"f": "axxb"})


def test_or_and_prefix_ignore_case() -> None:
    pattern = {
        "$or": [
            {"source": [{"prefix": {"equals-ignore-case": "AWS."}}]},
            {"detail": {"n": [{"numeric": [">", 10]}]}},
        ]
    }
    assert matches(pattern, {"source": "aws.ec2", "detail": {"n": 1}})
    assert matches(pattern, {"source": "custom", "detail": {"n": 11}})
    assert not matches(pattern, {"source": "custom", "detail": {"n": 10}})


# --- malformed or unsupported patterns: the error names the offending part --------------


@pytest.mark.parametrize(
    ("pattern", "where", "says"),
    [
        ("{not json", "<pattern>", "not valid JSON"),
        ("[1]", "<pattern>", "must be a JSON object"),
        (
            {"detail": {"subject": "VmPoweredOnEvent"}},
            "detail.subject",
            'write ["VmPoweredOnEvent"]',
        ),
        ({"detail": {"subject": []}}, "detail.subject", "empty array"),
        (
            {"detail": {"subject": [{"regex": "Vm.*"}]}},
            "detail.subject[0]",
            "unknown operator 'regex'",
        ),
        ({"detail": {"n": [{"numeric": [">>", 1]}]}}, "detail.n[0].numeric[0]", "not a comparison"),
        (
            {"detail": {"n": [{"numeric": [">", "1"]}]}},
            "detail.n[0].numeric[1]",
            "expected a number",
        ),
        (
            {"detail": {"n": [{"numeric": [">", 5, "<", 1]}]}},
            "detail.n[0].numeric",
            "range is empty",
        ),
        ({"detail": {"n": [{"numeric": [">", 1, ">", 2]}]}}, "detail.n[0].numeric", "lower bound"),
        ({"d": {"ip": [{"cidr": "10.0.0.300/24"}]}}, "d.ip[0].cidr", "not an IPv4 or IPv6 network"),
        ({"d": {"s": [{"exists": "yes"}]}}, "d.s[0].exists", "true or false"),
        ({"d": {"s": [{"prefix": "a", "suffix": "b"}]}}, "d.s[0]", "exactly one operator"),
        (
            {"d": {"s": [{"anything-but": {"numeric": [">", 1]}}]}},
            "d.s[0].anything-but",
            "unsupported operator 'numeric'",
        ),
        (
            {"d": {"s": [{"anything-but": ["a", 1]}]}},
            "d.s[0].anything-but",
            "only strings or only numbers",
        ),
        ({"d": {"s": [{"wildcard": "a**b"}]}}, "d.s[0].wildcard", "consecutive wildcards"),
        ({"d": {"s": [{"shellstyle": "a**"}]}}, "d.s[0].shellstyle", "'**'"),
        ({"$or": [{"a": ["x"]}]}, "$or", "at least two"),
        ({"d": {"s": [["nested"]]}}, "d.s[0]", "nested arrays"),
        ({"d": {}}, "d", "empty object"),
    ],
)
def test_malformed_patterns_name_the_offending_part(pattern: Any, where: str, says: str) -> None:
    with pytest.raises(PatternError) as info:
        compile_pattern(pattern if isinstance(pattern, str) else json.dumps(pattern))
    assert str(info.value).startswith(f"{where}: "), str(info.value)
    assert says in str(info.value)
