"""monitoring/ and the chart's copies: the alert rules pass promtool (check and the unit tests
of monitoring/alerts.test.yaml), every series the rules and the dashboard name is one the
router or the operator exports, and the chart's copies equal their sources."""

from __future__ import annotations

import asyncio
import json
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from prometheus_client.parser import text_string_to_metric_families

from event_router.checkpoints import CheckpointTracker
from event_router.metrics import RouterMetrics
from event_router.operator.metrics import OperatorMetrics

REPO = Path(__file__).resolve().parents[2]
MONITORING = REPO / "monitoring"


def promtool() -> str:
    path = shutil.which("promtool")
    if path is None:
        pytest.fail("promtool not found: apt-get install prometheus (.ci/run does)", pytrace=False)
    return path


def test_promtool_check_rules() -> None:
    r = subprocess.run(
        [promtool(), "check", "rules", str(MONITORING / "alerts.yaml")],
        capture_output=True,
        text=True,
    )
    assert r.returncode == 0, r.stdout + r.stderr
    assert "SUCCESS: 8 rules found" in r.stdout + r.stderr


def test_promtool_test_rules() -> None:
    r = subprocess.run(
        [promtool(), "test", "rules", "alerts.test.yaml"],
        cwd=MONITORING,
        capture_output=True,
        text=True,
    )
    assert r.returncode == 0, r.stdout + r.stderr


def test_every_alert_has_a_runbook_and_a_severity() -> None:
    rules = [r for g in yaml.safe_load((MONITORING / "alerts.yaml").read_text())["groups"]
             for r in g["rules"]]  # fmt: skip
    assert [r["alert"] for r in rules] == [
        "EventRouterProviderDisconnected",
        "EventRouterDeliveryFailures",
        "EventRouterCheckpointNotAdvancing",
        "EventRouterNotReady",
        "EventRouterConfigsNotReady",
        "EventRouterDeliveryStalled",
        "EventRouterEventsDropped",
        "EventRouterNoLeader",
    ]
    for r in rules:
        assert r["labels"]["severity"] in ("critical", "warning"), r["alert"]
        assert {"summary", "description", "runbook"} <= set(r["annotations"]), r["alert"]
        assert len(r["annotations"]["runbook"]) > 100, r["alert"]


class _Provider:
    ready = True
    checkpoint_advanced_at = 1.0

    def __init__(self) -> None:
        self.checkpoint_tracker: CheckpointTracker[int] = CheckpointTracker()


def exported_names() -> set[str]:
    """Every sample name a router (all series touched once) and the operator export."""
    m = RouterMetrics({"namespace": "ns", "routerconfig": "rc"})
    m.watch_provider("vcenter", _Provider())
    m.child(m.received, "vcenter", "t").inc()
    m.child(m.delivered, "sink", "t").inc()
    m.child(m.failed, "sink", "t").inc()
    m.child(m.retried, "sink", "t", "HTTP 503").inc()
    m.child(m.rejected, "webhook", "400").inc()
    m.child(m.latency, "sink").observe(0.1)
    m.child(m.queue_depth, "sink").set(0)
    m.child(m.queue_capacity, "sink").set(1)
    m.child(m.ready).set(1)
    m.child(m.dropped, "sink", "t").inc()
    m.child(m.dead_lettered, "sink", "t").inc()
    m.child(m.stalled, "sink").set(0)
    m.child(m.leader).set(1)
    text = m.render().decode() + OperatorMetrics(lambda: None).render().decode()
    return {s.name for f in text_string_to_metric_families(text) for s in f.samples}


def named_series(text: str) -> set[str]:
    return set(re.findall(r"\bevent_router_[a-z_]+", text))


def test_rules_and_dashboard_name_only_exported_series() -> None:
    exported = exported_names()
    rules = named_series((MONITORING / "alerts.yaml").read_text().split("groups:", 1)[1])
    dashboard = json.loads((MONITORING / "dashboard.json").read_text())
    exprs = [t["expr"] for p in dashboard["panels"] for t in p["targets"]]
    exprs += [v["definition"] for v in dashboard["templating"]["list"] if "definition" in v]
    panels = named_series("\n".join(exprs))
    assert rules - exported == set()
    assert panels - exported == set()
    # what the dashboard shows: events/s, latency, retries, failures, checkpoint lag
    for name in (
        "event_router_events_received_total",
        "event_router_events_delivered_total",
        "event_router_delivery_latency_seconds_bucket",
        "event_router_delivery_retries_total",
        "event_router_events_failed_total",
        "event_router_checkpoint_last_advanced_timestamp_seconds",
        "event_router_checkpoint_pending_events",
    ):
        assert name in panels, name


def test_dashboard_is_per_routerconfig() -> None:
    dashboard = json.loads((MONITORING / "dashboard.json").read_text())
    names = [v["name"] for v in dashboard["templating"]["list"]]
    assert names == ["datasource", "namespace", "routerconfig"]
    for p in dashboard["panels"]:
        for t in p["targets"]:
            if "routerconfig" not in t["expr"] and "operator" not in t["expr"]:
                pytest.fail(f"panel {p['title']!r} ignores $routerconfig: {t['expr']}")
            assert t["datasource"]["uid"] == "${datasource}"


def test_the_chart_copies_equal_their_sources() -> None:
    r = subprocess.run(
        [sys.executable, str(REPO / "hack" / "sync-chart.py"), "--check"],
        capture_output=True,
        text=True,
    )
    assert r.returncode == 0, r.stderr


def test_checkpoint_tracker_counts_what_the_checkpoint_covers() -> None:
    loop = asyncio.new_event_loop()
    try:
        t: CheckpointTracker[int] = CheckpointTracker()
        done = [loop.create_future() for _ in range(3)]
        for i, f in enumerate(done):
            t.add(i, f)
        done[0].set_result(True)
        done[1].set_result(True)
        assert t.advance() == 1 and t.uncovered == 1
        done[2].set_result(True)
        assert t.advance() == 2 and t.uncovered == 0
    finally:
        loop.close()
