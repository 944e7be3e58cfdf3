# ruff: noqa: F811 - the fixtures of test_cluster are imported by name
"""Two router replicas on the test node (spec.replicas: 2): one leads, one waits; the leader
lost (kill -9 of its container, deletion of its pod) is replaced by the standby within
seconds while vcsim emits 20 events/s, with nothing lost and duplicates only from the
checkpoint period (same CloudEvent id); an API server that stops answering for longer than
the lease makes the leader stop delivering, and when it is back exactly one replica leads."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import ssl
import threading
import time
import urllib.request
from collections import Counter, defaultdict
from collections.abc import Iterator
from typing import Any

import pytest
from pyVim.connect import Disconnect, SmartConnect

from tests.integration.conftest import STATE_DIR, TestEnv
from tests.integration.test_cluster import (  # noqa: F401 - fixtures
    ROUTER_LABEL,
    apply,
    messages,
    ns,
    operator,
    routerconfig_ready,
    sink,
    uri_of,
    vcenter_routerconfig,
    vcsim_secret,
    wait_messages,
)
from tests.support.cluster import kill_container, kubectl, kubectl_json, ready_pods, wait_for
from tests.support.sink import CloudEventSink
from tests.support.vcsim import post_general_events

pytestmark = [pytest.mark.integration, pytest.mark.timeout(900)]

RATE = 20.0  # events/s, as the load
CHECKPOINT_PERIOD = 1


class Emitter:
    """Posts GeneralUserEvents ``<prefix>-<i>`` to vcsim at ``rate``/s from a thread, over
    its own session, until ``stop()`` or ``count`` events."""

    def __init__(self, env: TestEnv, prefix: str, count: int, rate: float = RATE) -> None:
        host, port = env.vcsim_host.rsplit(":", 1)
        self.si = SmartConnect(host=host, port=int(port), user=env.vcsim_username,
                               pwd=env.vcsim_password, sslContext=ssl._create_unverified_context(),
                               disableSslCertValidation=True)  # fmt: skip
        self.prefix, self.count, self.rate = prefix, count, rate
        self.posted: list[str] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        start = time.monotonic()
        for i in range(self.count):
            if self._stop.is_set():
                break
            delay = start + i / self.rate - time.monotonic()
            if delay > 0:
                time.sleep(delay)
            post_general_events(self.si, 1, f"{self.prefix}{i:04d}")
            self.posted.append(f"{self.prefix}{i:04d}-0")

    def start(self) -> Emitter:
        self._thread.start()
        return self

    def join(self) -> list[str]:
        self._thread.join(timeout=self.count / self.rate + 60)
        Disconnect(self.si)
        return list(self.posted)


def ha_routerconfig(name: str, env: TestEnv, to: CloudEventSink) -> dict[str, Any]:
    rc = vcenter_routerconfig(name, env, {"uri": uri_of(to)})
    rc["spec"]["replicas"] = 2
    rc["spec"]["checkpoint"] = {"periodSeconds": CHECKPOINT_PERIOD}
    return rc


def router_pods(ns_: str, rc: str) -> list[dict[str, Any]]:
    return [
        p
        for p in kubectl_json("get", "pods", "-n", ns_, "-l", f"{ROUTER_LABEL}={rc}")["items"]
        if not p["metadata"].get("deletionTimestamp")
    ]


def role_of(pod: dict[str, Any]) -> str:
    """What the pod's /readyz says: "leader", "standby", or why it cannot say."""
    ip = (pod.get("status") or {}).get("podIP")
    if not ip:
        return "no-ip"
    try:
        with urllib.request.urlopen(f"http://{ip}:8082/readyz", timeout=2) as r:
            return str(r.headers.get("X-Event-Router-Role") or "none")
    except OSError as e:
        return f"down ({e})"


def leader_pod(ns_: str, rc: str) -> dict[str, Any]:
    lease = kubectl_json("get", "lease", "-n", ns_, f"{rc}-router")
    holder = str(lease["spec"].get("holderIdentity") or "").rsplit("_", 1)[0]
    pods = {p["metadata"]["name"]: p for p in router_pods(ns_, rc)}
    assert holder in pods, (holder, list(pods))
    return pods[holder]


def two_ready(ns_: str, rc: str) -> list[dict[str, Any]] | None:
    pods = ready_pods(ns_, f"{ROUTER_LABEL}={rc}")
    return pods if len(pods) == 2 else None


def one_leader(ns_: str, rc: str) -> dict[str, str] | None:
    roles = {p["metadata"]["name"]: role_of(p) for p in router_pods(ns_, rc)}
    return roles if sorted(roles.values()) == ["leader", "standby"] else None


def delivered_after(got: CloudEventSink, t: float) -> list[float]:
    return [a for a in got.arrivals if a > t]


def check_no_loss_and_duplicates(got: CloudEventSink, posted: list[str]) -> int:
    """Every posted event arrived; a duplicate carries the id of its first delivery; the
    number of duplicates."""
    ids: dict[str, set[str]] = defaultdict(set)
    for e in got.events:
        data = e.get_data()
        if isinstance(data, dict) and isinstance(data.get("Message"), str):
            ids[data["Message"]].add(e["id"])
    missing = [m for m in posted if m not in ids]
    assert not missing, f"{len(missing)} events lost: {missing[:10]}"
    counts = Counter(m for m in messages(got) if m in set(posted))
    dups = sum(n - 1 for n in counts.values())
    two_ids = {m: i for m, i in ids.items() if m in set(posted) and len(i) > 1}
    assert not two_ids, f"duplicates with other ids (a consumer could not drop them): {two_ids}"
    return dups


async def takeover(
    env: TestEnv, ns_: str, rc: str, got: CloudEventSink, prefix: str, how: str
) -> tuple[float, int]:
    """Emit 20/s for 20 s, lose the leader after 5 s (``how``); (seconds from the loss to the
    first delivery of the new leader, duplicates)."""
    old = await asyncio.to_thread(leader_pod, ns_, rc)
    emitter = Emitter(env, prefix, int(RATE * 20)).start()
    await asyncio.sleep(5)
    t0 = time.monotonic()
    if how == "kill":
        kill_container(STATE_DIR, old["status"]["containerStatuses"][0]["containerID"])
    else:
        kubectl("delete", "pod", "-n", ns_, old["metadata"]["name"], "--wait=false")
    posted = await asyncio.to_thread(emitter.join)
    await wait_messages(got, posted, 60)
    after = delivered_after(got, t0 + 0.3)  # the old leader's last answers are done by then
    assert after, "nothing delivered after the loss"
    took = after[0] - t0
    dups = check_no_loss_and_duplicates(got, posted)
    new = await asyncio.to_thread(leader_pod, ns_, rc)
    if how == "delete":
        assert new["metadata"]["name"] != old["metadata"]["name"]
    print(f"{how}: the standby delivered {took:.1f}s after the loss; {dups} duplicates")
    return took, dups


async def test_two_replicas_one_leads_and_the_standby_takes_over(
    operator: TestEnv,
    ns: str,
    sink: CloudEventSink,
) -> None:
    vcsim_secret(ns, operator)
    rc = "ha"
    apply(ns, ha_routerconfig(rc, operator, sink))
    await asyncio.to_thread(wait_for, lambda: two_ready(ns, rc), 180, "two router pods Ready")
    status = (await asyncio.to_thread(routerconfig_ready, ns, rc, 90))["status"]
    roles = await asyncio.to_thread(wait_for, lambda: one_leader(ns, rc), 60, "leader+standby")
    (leader,) = [name for name, role in roles.items() if role == "leader"]
    assert status["leader"] == leader or status["leader"] in roles, status
    # the PDB and the spread the operator rendered
    pdb = kubectl_json("get", "pdb", "-n", ns, f"{rc}-router")
    assert pdb["spec"]["maxUnavailable"] == 1
    # `kubectl get routerconfigs -o wide` shows the leader
    wide = kubectl("get", "routerconfigs", "-n", ns, "-o", "wide")
    assert "LEADER" in wide

    # kill -9 of the leader's container, then deletion of the (new) leader's pod
    kill_took, kill_dups = await takeover(operator, ns, rc, sink, "kill", "kill")
    await asyncio.to_thread(wait_for, lambda: two_ready(ns, rc), 180, "two router pods again")
    await asyncio.to_thread(wait_for, lambda: one_leader(ns, rc), 60, "leader+standby again")
    delete_took, delete_dups = await takeover(operator, ns, rc, sink, "delete", "delete")
    assert kill_took <= 15, f"standby delivered {kill_took:.1f}s after kill -9"
    assert delete_took <= 15, f"standby delivered {delete_took:.1f}s after the pod's deletion"
    # duplicates: at most what the checkpoint period (1 s here) can leave unrecorded, plus
    # the write's own latency: 3 s of events at 20/s
    assert kill_dups <= 3 * RATE and delete_dups <= 3 * RATE, (kill_dups, delete_dups)

    # status.leader follows the Lease
    await asyncio.to_thread(wait_for, lambda: two_ready(ns, rc), 180, "two router pods again")
    now_leader = (await asyncio.to_thread(leader_pod, ns, rc))["metadata"]["name"]
    await asyncio.to_thread(
        wait_for,
        lambda: (
            kubectl_json("get", "routerconfig", "-n", ns, rc)["status"].get("leader") == now_leader
        ),
        60,
        "status.leader to name the new leader",
    )


def _apiserver_pid() -> int:
    state = json.loads((STATE_DIR / "state.json").read_text())
    return int(state["components"]["kube-apiserver"]["pid"])


async def test_an_api_server_outage_longer_than_the_lease_stops_the_leader(
    operator: TestEnv,
    ns: str,
    sink: CloudEventSink,
) -> None:
    vcsim_secret(ns, operator)
    rc = "ha-split"
    apply(ns, ha_routerconfig(rc, operator, sink))
    await asyncio.to_thread(wait_for, lambda: two_ready(ns, rc), 180, "two router pods Ready")
    await asyncio.to_thread(wait_for, lambda: one_leader(ns, rc), 60, "leader+standby")
    emitter = Emitter(operator, "split", int(RATE * 25)).start()
    await asyncio.sleep(3)
    pid = _apiserver_pid()
    os.kill(pid, signal.SIGSTOP)  # it answers nothing, as when a network splits
    stopped = time.monotonic()
    try:
        await asyncio.sleep(14)  # > lease duration (6 s) + renew deadline margin
        # the leader stopped delivering within its renew deadline (4 s) + 1 s
        late = delivered_after(sink, stopped + 5.0)
        assert not late, f"{len(late)} events delivered while no replica may lead"
    finally:
        os.kill(pid, signal.SIGCONT)
    posted = await asyncio.to_thread(emitter.join)
    await wait_messages(sink, posted, 120)
    check_no_loss_and_duplicates(sink, posted)
    # exactly one replica leads, and it stays so
    await asyncio.to_thread(wait_for, lambda: one_leader(ns, rc), 120, "one leader again")
    for _ in range(5):
        await asyncio.sleep(1)
        roles = await asyncio.to_thread(lambda: {p["metadata"]["name"]: role_of(p)
                                                 for p in router_pods(ns, rc)})  # fmt: skip
        assert list(roles.values()).count("leader") <= 1, roles


@pytest.fixture(autouse=True)
def _no_stopped_apiserver() -> Iterator[None]:
    yield
    # a failed test never leaves the API server stopped
    try:
        os.kill(_apiserver_pid(), signal.SIGCONT)
    except (OSError, KeyError, ValueError):
        pass
