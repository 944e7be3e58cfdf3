"""monitoring/alerts.yaml and monitoring/dashboard.json on real series: a real Prometheus
scrapes a real operator's /metrics (in-process runtime, on the test control plane) whose
routers read two private vcsims, and evaluates the rules and every panel's query.

* ``ok``: vcsim -> a sink that takes every event: in no alert.
* ``bad``: vcsim -> a sink that is down (503 to every request): delivery rounds fail and are
  retried until it recovers, the checkpoint held before the first event; then its vcsim
  stops: provider disconnected, router not ready. (A 400 would drop the event, or dead-letter
  it, and the checkpoint would move on.)
* ``nocreds``: its Secret does not exist: the operator's RouterConfigs-not-ready.
"""

from __future__ import annotations

import asyncio
import json
import time
from pathlib import Path
from typing import Any

import pytest
import yaml
from kubernetes import client

from event_router.operator.devtools import apply, create_rc, wait_for
from tests.integration.test_operator import (  # noqa: F401 - fixtures
    api,
    basic_secret,
    operator,
    rc,
    ready,
    vcsim_spec,
)
from tests.support.net import free_port
from tests.support.prometheus import PrometheusServer
from tests.support.sink import CloudEventSink
from tests.support.vcsim import VCSim, post_general_events

pytestmark = [pytest.mark.integration, pytest.mark.timeout(240)]

REPO = Path(__file__).resolve().parents[2]
ALERTS = REPO / "monitoring" / "alerts.yaml"
DASHBOARD = REPO / "monitoring" / "dashboard.json"


def alert_rules() -> dict[str, dict[str, Any]]:
    groups = yaml.safe_load(ALERTS.read_text())["groups"]
    return {r["alert"]: r for g in groups for r in g["rules"] if "alert" in r}


def routerconfigs(result: list[dict[str, Any]]) -> set[str]:
    return {r["metric"].get("routerconfig", "") for r in result}


def panel_queries(rate_interval: str, namespace: str) -> list[tuple[str, str]]:
    """(panel title, PromQL) of every panel target, template variables substituted the way
    Grafana does for the selection namespace=<namespace>, routerconfig=All."""
    dash = json.loads(DASHBOARD.read_text())
    out = []
    for panel in dash["panels"]:
        for target in panel["targets"]:
            expr = (
                target["expr"]
                .replace("$__rate_interval", rate_interval)
                .replace("$namespace", namespace)  # [a-z0-9-]: nothing to escape
                .replace("$routerconfig", ".*")
            )
            out.append((panel["title"], expr))
    return out


async def test_alert_rules_and_dashboard_queries_on_a_real_operator_s_series(
    api: client.ApiClient,  # noqa: F811
    namespace: str,
    operator: Any,  # noqa: F811
    tmp_path: Path,
) -> None:
    ns = namespace
    rules = alert_rules()
    metrics_port = free_port()
    with VCSim() as vc_ok, VCSim() as vc_bad:
        async with CloudEventSink() as sink_ok, CloudEventSink() as sink_bad:
            sink_bad.down = 503
            apply(api, basic_secret("vc-creds", vc_ok.username, vc_ok.password), ns)
            spec_ok = vcsim_spec(vc_ok, sink_ok.url)
            spec_bad = vcsim_spec(vc_bad, sink_bad.url)
            spec_nocreds = vcsim_spec(vc_ok, sink_ok.url)
            spec_nocreds["eventProvider"]["vcenter"]["auth"]["secretRef"]["name"] = "absent"
            create_rc(api, ns, rc("ok", spec_ok))
            create_rc(api, ns, rc("bad", spec_bad))
            create_rc(api, ns, rc("nocreds", spec_nocreds))
            operator("inprocess", "--metrics-bind-address", f"127.0.0.1:{metrics_port}")
            for name in ("ok", "bad"):
                await asyncio.to_thread(wait_for, ready(api, ns, name), 60, f"{name} Ready")
            await asyncio.to_thread(
                wait_for,
                ready(api, ns, "nocreds", status="False", reason="CredentialsMissing"),
                30,
                "nocreds CredentialsMissing",
            )

            prom = PrometheusServer(
                tmp_path,
                {"event-router-operator": [f"127.0.0.1:{metrics_port}"]},
                rule_files=[ALERTS],
                max_seconds=200,
            )
            with prom:
                si_ok = await asyncio.to_thread(vc_ok.connect)
                si_bad = await asyncio.to_thread(vc_bad.connect)
                # events across several scrapes, so rates and increases see them
                for i in range(4):
                    await asyncio.to_thread(post_general_events, si_ok, 3, f"ok{i}")
                    await asyncio.to_thread(post_general_events, si_bad, 2, f"bad{i}")
                    await asyncio.sleep(1.5)
                await sink_ok.wait_for(12, timeout=30)

                def has(expr: str, want: set[str]) -> list[dict[str, Any]] | None:
                    result = prom.query(expr)
                    return result if want <= routerconfigs(result) else None

                await asyncio.to_thread(
                    wait_for,
                    lambda: has(f'event_router_events_failed_total{{namespace="{ns}"}}', {"bad"}),
                    30,
                    "failed deliveries of bad scraped",
                )
                await asyncio.to_thread(
                    wait_for,
                    lambda: has(f'event_router_events_delivered_total{{namespace="{ns}"}}', {"ok"}),
                    30,
                    "deliveries of ok scraped",
                )
                await asyncio.sleep(3)  # a few more scrapes

                # every rule evaluates without error on these series
                health = {r["name"]: (r["health"], r.get("lastError", "")) for r in prom.rules()}
                assert set(health) == set(rules)
                assert all(h == "ok" for h, _ in health.values()), health

                # each expression, as written, on the real series
                def mine(expr: str, at: float | None = None) -> set[str]:
                    return {
                        r["metric"].get("routerconfig", "")
                        for r in prom.query(expr, at)
                        if r["metric"].get("namespace", ns) == ns
                    }

                assert mine(rules["EventRouterDeliveryFailures"]["expr"]) == {"bad"}
                assert mine(rules["EventRouterProviderDisconnected"]["expr"]) == set()
                assert mine(rules["EventRouterNotReady"]["expr"]) == set()
                # bad's sink is down (503): its delivery stalls, nothing is dropped; one
                # replica each, so no leader alert
                assert mine(rules["EventRouterDeliveryStalled"]["expr"]) == {"bad"}
                assert mine(rules["EventRouterEventsDropped"]["expr"]) == set()
                assert mine(rules["EventRouterNoLeader"]["expr"]) == set()
                configs = prom.query(rules["EventRouterConfigsNotReady"]["expr"])
                assert [(r["metric"]["ready"], r["value"][1]) for r in configs] == [("False", "1")]
                # not yet: the checkpoint of bad moved at its start, less than 10 minutes ago
                checkpoint = rules["EventRouterCheckpointNotAdvancing"]["expr"]
                assert mine(checkpoint) == set()
                # 10 minutes on with the same series (the lookback is 15 minutes): bad's checkpoint
                # stands before its failed events; ok's has nothing pending
                assert mine(checkpoint, time.time() + 601) == {"bad"}
                pending = prom.query(f'event_router_checkpoint_pending_events{{namespace="{ns}"}}')
                by_rc = {r["metric"]["routerconfig"]: float(r["value"][1]) for r in pending}
                assert by_rc["bad"] >= 8 and by_rc["ok"] == 0, by_rc

                # Prometheus's own rule evaluation: the alerts are pending (their `for` runs)
                def active() -> dict[str, set[str]]:
                    out: dict[str, set[str]] = {}
                    for a in prom.alerts():
                        labels = a["labels"]
                        if labels.get("namespace", ns) == ns:
                            rc_name = labels.get("routerconfig", labels.get("ready", ""))
                            out.setdefault(labels["alertname"], set()).add(rc_name)
                    return out

                await asyncio.to_thread(
                    wait_for,
                    lambda: (
                        active().get("EventRouterDeliveryFailures") == {"bad"}
                        and active().get("EventRouterConfigsNotReady") == {"False"}
                    ),
                    20,
                    "DeliveryFailures (bad) and ConfigsNotReady pending",
                )

                # the dashboard: every panel's query returns series; its variables list ours
                empty = [
                    (title, expr)
                    for title, expr in panel_queries("30s", ns)
                    if not prom.query(expr)
                ]
                assert not empty, f"panels without series: {empty}"
                rcs = prom.api(
                    "label/routerconfig/values",
                    **{"match[]": f'event_router_events_received_total{{namespace=~"{ns}"}}'},
                )
                assert {"ok", "bad"} <= set(rcs)
                assert ns in prom.api(
                    "label/namespace/values", **{"match[]": "event_router_events_received_total"}
                )
                retries = prom.query(f'event_router_delivery_retries_total{{namespace="{ns}"}}')
                assert {r["metric"]["reason"] for r in retries} == {"HTTP 503"}

                # bad's vCenter goes away: provider disconnected, router not ready (bad only)
                vc_bad.stop()
                await asyncio.to_thread(
                    wait_for,
                    lambda: mine(rules["EventRouterProviderDisconnected"]["expr"]) == {"bad"},
                    40,
                    "bad's provider disconnected in Prometheus",
                )
                assert mine(rules["EventRouterNotReady"]["expr"]) == {"bad"}
                await asyncio.to_thread(
                    wait_for,
                    lambda: (
                        active().get("EventRouterProviderDisconnected") == {"bad"}
                        and active().get("EventRouterNotReady") == {"bad"}
                    ),
                    20,
                    "ProviderDisconnected and NotReady pending for bad",
                )
                assert "ok" not in set().union(*active().values())
