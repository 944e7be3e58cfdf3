"""Stalled deliveries, told to the operator through the router's checkpoint ConfigMap.

A router pod has no way to write its RouterConfig's status (its Role covers its checkpoint
ConfigMap and its Lease, nothing else), and the operator holds no right on pods. So a pod
whose delivery stalls (a processor retrying an event until its sink recovers) writes a
report under its own key of the checkpoint ConfigMap, ``delivery.<pod>``::

    {"pod": "vc-router-5d9c-x", "updated": "2026-12-04T08:00:00Z",
     "stalled": [{"name": "sink", "type": "knative", "address": "http://...",
                  "stalled": 1, "stalledSince": "2026-12-04T07:59:31Z"}]}

It writes when the set of stalled processors changes and every :data:`HEARTBEAT` seconds
while one is stalled; it deletes its key when none is. A report not refreshed within
:data:`EXPIRY` seconds (its pod died while stalled) counts for nothing, and the next write
of any pod prunes it. The operator watches the ConfigMap and turns the reports into the
RouterConfig's ``DeliveryStalled`` condition (:func:`summary`).
"""

from __future__ import annotations

import asyncio
import datetime as dt
import json
import logging
import time
from collections.abc import Callable, Mapping
from typing import Any

log = logging.getLogger(__name__)

KEY_PREFIX = "delivery."
#: a stalled pod rewrites its report this often
HEARTBEAT = 30.0
#: a report older than this is from a pod that died while stalled
EXPIRY = 3 * HEARTBEAT


def report_key(pod: str) -> str:
    return KEY_PREFIX + "".join(c if c.isalnum() or c in "-._" else "_" for c in pod)


def _rfc3339(t: float) -> str:
    return dt.datetime.fromtimestamp(t, dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _age(report: Mapping[str, Any], now: float) -> float:
    try:
        updated = dt.datetime.strptime(str(report.get("updated")), "%Y-%m-%dT%H:%M:%SZ")
    except ValueError:
        return float("inf")
    return now - updated.replace(tzinfo=dt.UTC).timestamp()


def _live(text: str, now: float) -> dict[str, Any] | None:
    try:
        report = json.loads(text)
    except ValueError:
        return None
    if isinstance(report, dict) and _age(report, now) <= EXPIRY:
        return report
    return None


def reports(data: Mapping[str, str] | None, now: float | None = None) -> list[dict[str, Any]]:
    """The live reports among a ConfigMap's ``data`` (expired and unreadable ones left out),
    by pod name."""
    now = time.time() if now is None else now
    out = []
    for key, text in sorted((data or {}).items()):
        if key.startswith(KEY_PREFIX) and (report := _live(text, now)) is not None:
            out.append(report)
    return out


def stalled_processors(states: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The entries of ``Router.processor_states()`` whose delivery is stalled."""
    return [
        {k: s[k] for k in ("name", "type", "address", "stalled", "stalledSince") if s.get(k)}
        for s in states
        if s.get("stalled")
    ]


def summary(stalled: list[dict[str, Any]]) -> tuple[bool, str, str]:
    """``DeliveryStalled`` (status, reason, message) from stalled processor entries (each
    may carry the ``pod`` that reported it)."""
    if not stalled:
        return False, "Delivering", "no processor is stalled"
    parts = []
    for s in stalled:
        where = f" in pod {s['pod']}" if s.get("pod") else ""
        since = f" since {s['stalledSince']}" if s.get("stalledSince") else ""
        parts.append(
            f"processor {s.get('name')} ({s.get('address') or s.get('type')}){where}: "
            f"{s.get('stalled')} event(s) retried{since}"
        )
    return (
        True,
        "SinkUnavailable",
        "; ".join(parts) + ": the stream waits (the checkpoint holds, nothing is dropped) and "
        "goes on by itself once the sink answers",
    )


def from_reports(data: Mapping[str, str] | None, now: float | None = None) -> list[dict[str, Any]]:
    """Stalled processor entries of every live report, each with its ``pod``."""
    return [
        {**s, "pod": r.get("pod")}
        for r in reports(data, now)
        for s in r.get("stalled") or []
        if isinstance(s, dict)
    ]


def digest(stalled: list[dict[str, Any]]) -> str:
    """What the condition depends on (heartbeats and counts left out)."""
    return json.dumps(
        sorted((str(s.get("pod")), str(s.get("name")), str(s.get("stalledSince"))) for s in stalled)
    )


class Reporter:
    """Writes this pod's report into the checkpoint ConfigMap (router side)."""

    def __init__(
        self,
        namespace: str,
        configmap: str,
        pod: str,
        states: Callable[[], list[dict[str, Any]]],
        api: Any = None,
    ) -> None:
        self.namespace = namespace
        self.configmap = configmap
        self.pod = pod
        self.key = report_key(pod)
        self.states = states
        self._api = api
        self.changed = asyncio.Event()
        self.writes = 0
        #: this pod's key holds a report (cleared at a graceful stop)
        self.reported = False

    def notify(self) -> None:
        """A processor started or stopped stalling (called by the router)."""
        self.changed.set()

    def _client(self) -> Any:
        if self._api is None:
            import kubernetes.client

            from event_router.kubeclient import api_client

            self._api = kubernetes.client.CoreV1Api(api_client())
        return self._api

    def write(self, stalled: list[dict[str, Any]]) -> None:
        """Set (or, when nothing is stalled, delete) this pod's key; prune expired reports."""
        from kubernetes.client.exceptions import ApiException

        from event_router.checkpoints import REQUEST_TIMEOUT

        api = self._client()
        now = time.time()
        for _ in range(10):
            try:
                cm = api.read_namespaced_config_map(
                    self.configmap, self.namespace, _request_timeout=REQUEST_TIMEOUT
                )
            except ApiException as e:
                if e.status == 404 and not stalled:
                    return
                raise
            data = dict(cm.data or {})
            for key in [k for k in data if k.startswith(KEY_PREFIX) and k != self.key]:
                if _live(data[key], now) is None:
                    del data[key]  # its pod died while stalled
            if stalled:
                data[self.key] = json.dumps(
                    {"pod": self.pod, "updated": _rfc3339(now), "stalled": stalled}
                )
            else:
                data.pop(self.key, None)
            if data == (cm.data or {}):
                self.reported = bool(stalled)
                return
            cm.data = data
            try:
                api.replace_namespaced_config_map(
                    self.configmap, self.namespace, cm, _request_timeout=REQUEST_TIMEOUT
                )
                self.writes += 1
                self.reported = bool(stalled)
                return
            except ApiException as e:
                if e.status != 409:
                    raise
        raise RuntimeError(f"configmap {self.namespace}/{self.configmap}: 10 conflicts in a row")

    async def run(self) -> None:
        """Until cancelled: write on every change, and every HEARTBEAT while stalled."""
        last: list[dict[str, Any]] | None = None
        while True:
            stalled = stalled_processors(self.states())
            if stalled != last or stalled:
                try:
                    await asyncio.to_thread(self.write, stalled)
                    last = stalled
                except Exception as e:  # the next change or heartbeat tries again
                    log.warning(
                        "could not report the delivery state to configmap %s/%s: %s",
                        self.namespace,
                        self.configmap,
                        e,
                    )
                    last = None
            self.changed.clear()
            timeout = HEARTBEAT if stalled or last is None else None
            try:
                await asyncio.wait_for(self.changed.wait(), timeout)
            except TimeoutError:
                pass
