"""The stall report a router pod leaves in its checkpoint ConfigMap, and the
``DeliveryStalled`` condition the operator makes of it (pure functions)."""

from __future__ import annotations

import json

from event_router import stallreport
from event_router.stallreport import EXPIRY, report_key

NOW = 1_800_000_000.0  # 2027-01-15T08:00:00Z


def stamp(t: float) -> str:
    return stallreport._rfc3339(t)


def report(pod: str, age: float, *names: str) -> tuple[str, str]:
    stalled = [
        {"name": n, "type": "knative", "address": f"http://{n}.example", "stalled": 2,
         "stalledSince": stamp(NOW - 100)}
        for n in names
    ]  # fmt: skip
    return report_key(pod), json.dumps(
        {"pod": pod, "updated": stamp(NOW - age), "stalled": stalled}
    )


def test_live_reports_count_expired_and_unreadable_ones_do_not() -> None:
    data = dict([report("a", 5, "sink"), report("b", EXPIRY + 1, "other")])
    data["delivery.c"] = "{not json"
    data["vcenter-10.0.0.1"] = json.dumps({"lastEventKey": 1})  # a checkpoint, not a report
    entries = stallreport.from_reports(data, NOW)
    assert [(e["pod"], e["name"]) for e in entries] == [("a", "sink")]


def test_summary_names_each_stalled_processor_its_sink_and_pod() -> None:
    data = dict([report("router-1", 1, "sink", "audit")])
    ok, reason, message = stallreport.summary(stallreport.from_reports(data, NOW))
    assert ok and reason == "SinkUnavailable"
    assert (
        "processor sink (http://sink.example) in pod router-1: 2 event(s) retried since" in message
    )
    assert "processor audit (http://audit.example)" in message
    assert "nothing is dropped" in message


def test_summary_when_nothing_is_stalled() -> None:
    assert stallreport.summary([]) == (False, "Delivering", "no processor is stalled")


def test_the_digest_ignores_heartbeats_and_counts() -> None:
    first = stallreport.from_reports(dict([report("a", 1, "sink")]), NOW)
    beat = stallreport.from_reports(dict([report("a", 20, "sink")]), NOW)
    beat[0]["stalled"] = 7
    assert stallreport.digest(first) == stallreport.digest(beat)
    assert stallreport.digest(first) != stallreport.digest([])


def test_stalled_processors_keeps_only_stalled_ones() -> None:
    states = [
        {"name": "a", "type": "knative", "address": "http://a", "deadLetterSink": None,
         "stalled": 0, "stalledSince": None},
        {"name": "b", "type": "openfaas", "address": "http://b", "deadLetterSink": None,
         "stalled": 1, "stalledSince": "2026-12-04T08:00:00Z"},
    ]  # fmt: skip
    assert stallreport.stalled_processors(states) == [
        {"name": "b", "type": "openfaas", "address": "http://b", "stalled": 1,
         "stalledSince": "2026-12-04T08:00:00Z"}
    ]  # fmt: skip


def test_report_keys_are_valid_configmap_keys() -> None:
    assert report_key("vc-router-5d9c8-x2k") == "delivery.vc-router-5d9c8-x2k"
    assert report_key("host:name/1") == "delivery.host_name_1"
