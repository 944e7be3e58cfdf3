"""Takeover of a standby router replica on the test node: spec.replicas 2 (vcenter ->
knative URI), vcsim emitting 20 events/s; the leader's container is killed (kill -9) five
times, each time while events flow.

    python -m bench.failover        (needs root: it brings up hack/testenv up --node)

Prints, last, one JSON object: ``takeover_s`` (median over the kills: from the kill to the
first event delivered by the new leader), ``takeover_all_s``, ``lost`` (events posted but
never delivered, over all runs), ``duplicates`` (events delivered twice; each time with the
same CloudEvent id), ``targets``.
"""

from __future__ import annotations

import asyncio
import json
import os
import statistics
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

from bench._common import log
from bench.cluster import REPO, testenv_up
from tests.integration.conftest import STATE_DIR, TestEnv
from tests.integration.test_cluster import messages, vcsim_secret
from tests.integration.test_failover import (
    RATE,
    Emitter,
    apply,
    delivered_after,
    ha_routerconfig,
    leader_pod,
    one_leader,
    two_ready,
)
from tests.support.cluster import kill_container, kubectl, ready_pods, wait_for
from tests.support.sink import CloudEventSink

KILLS = 5
OPERATOR_NS = "event-router-system"


def env() -> TestEnv:
    return TestEnv(
        kubeconfig=os.environ["KUBECONFIG"],
        vcsim_url=os.environ["VCSIM_URL"],
        vcsim_username=os.environ["VCSIM_USERNAME"],
        vcsim_password=os.environ["VCSIM_PASSWORD"],
        bin_dir=Path(os.environ["ER_TESTENV_BIN_DIR"]),
        host_ip=os.environ.get("TESTENV_HOST_IP", "127.0.0.1"),
        node=os.environ.get("TESTENV_NODE", ""),
    )


async def run(ns: str, e: TestEnv) -> dict[str, object]:
    takeovers: list[float] = []
    lost = 0
    async with CloudEventSink(host=e.host_ip) as sink:
        vcsim_secret(ns, e)
        apply(ns, ha_routerconfig("bench-ha", e, sink))
        posted_all: list[str] = []
        for i in range(KILLS):
            await asyncio.to_thread(wait_for, lambda: two_ready(ns, "bench-ha"), 240, "2 pods")
            await asyncio.to_thread(wait_for, lambda: one_leader(ns, "bench-ha"), 90, "a leader")
            old = await asyncio.to_thread(leader_pod, ns, "bench-ha")
            emitter = Emitter(e, f"kill{i}-", int(RATE * 20)).start()
            await asyncio.sleep(5)
            t0 = time.monotonic()
            kill_container(STATE_DIR, old["status"]["containerStatuses"][0]["containerID"])
            posted = await asyncio.to_thread(emitter.join)
            posted_all += posted
            deadline = time.monotonic() + 60
            while not set(posted) <= set(messages(sink)) and time.monotonic() < deadline:  # noqa: ASYNC110
                await asyncio.sleep(0.3)
            missing = set(posted) - set(messages(sink))
            lost += len(missing)
            after = delivered_after(sink, t0 + 0.3)
            took = after[0] - t0 if after else float("inf")
            takeovers.append(took)
            log(f"kill {i + 1}/{KILLS}: delivered after {took:.1f}s; lost {len(missing)}")
        wanted = set(posted_all)
        counts = Counter(m for m in messages(sink) if m in wanted)
        ids: dict[str, set[str]] = {}
        for ev in sink.events:
            data = ev.get_data()
            if isinstance(data, dict) and data.get("Message") in wanted:
                ids.setdefault(data["Message"], set()).add(ev["id"])
    return {
        "takeover_s": round(statistics.median(takeovers), 2),
        "takeover_all_s": [round(t, 2) for t in takeovers],
        "lost": lost,
        "duplicates": sum(n - 1 for n in counts.values()),
        "duplicates_with_another_id": sum(1 for v in ids.values() if len(v) > 1),
        "events_posted": len(posted_all),
        "rate_per_s": RATE,
        "targets": {"takeover_s": 10, "lost": 0},
    }


def main() -> int:
    testenv_up()
    e = env()
    ns = f"bench-failover-{os.getpid()}"
    try:
        subprocess.run(["bash", str(REPO / "hack" / "image.sh")], check=True)
        log("kubectl apply -k manifests/")
        kubectl("apply", "-k", str(REPO / "manifests"))
        wait_for(
            lambda: ready_pods(OPERATOR_NS, "app.kubernetes.io/name=event-router-operator"),
            180,
            "the operator pod",
        )
        kubectl("create", "namespace", ns)
        try:
            figures = asyncio.run(run(ns, e))
        finally:
            kubectl("delete", "routerconfigs", "--all", "-n", ns, "--wait=true",
                    "--timeout=60s", check=False)  # fmt: skip
            kubectl("delete", "namespace", ns, "--wait=false", check=False)
    finally:
        kubectl("delete", "-k", str(REPO / "manifests"), "--wait=true", "--timeout=120s",
                check=False)  # fmt: skip
        subprocess.run(
            [sys.executable, str(REPO / "hack" / "testenv"), "release", str(os.getpid())],
            capture_output=True,
        )
    print(json.dumps(figures))
    return 0


if __name__ == "__main__":
    sys.exit(main())
