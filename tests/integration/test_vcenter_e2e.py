"""End to end: the ``event-router`` CLI (vcenter -> knative) against vcsim and a real
CloudEvents sink, killed with SIGKILL in the middle of a stream and started again."""

from __future__ import annotations

import asyncio
import collections
import os
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.support.polling import wait_until
from tests.support.sink import CloudEventSink
from tests.support.vcsim import VCSim, post_paced

pytestmark = [pytest.mark.integration, pytest.mark.timeout(180)]

EVENT_ROUTER = Path(sys.executable).parent / "event-router"
TOTAL = 500
RATE = 200.0  # events/s posted into vcsim
PERIOD = 1.0  # checkpoint.periodSeconds


def write_config(path: Path, sim: VCSim, sink_url: str, cp_dir: Path) -> None:
    path.write_text(
        yaml.safe_dump(
            {
                "apiVersion": "event-router.vmware.com/v1alpha1",
                "kind": "RouterConfig",
                "metadata": {"name": "e2e"},
                "eventProvider": {
                    "type": "vcenter",
                    "name": "vcsim",
                    "vcenter": sim.vcenter_spec(checkpoint=True, checkpointDir=str(cp_dir)),
                },
                "eventProcessor": {
                    "type": "knative",
                    "name": "sink",
                    "knative": {"encoding": "structured", "destination": {"uri": sink_url}},
                },
                "checkpoint": {"periodSeconds": PERIOD},
            }
        )
    )


def start_router(cfg: Path, log: Path) -> subprocess.Popen[bytes]:
    with log.open("ab") as out:
        return subprocess.Popen(
            [str(EVENT_ROUTER), "-config", str(cfg), "-log-level", "debug"],
            stdout=out,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
        )


def post_stream(sim: VCSim, posted: list[float]) -> None:
    post_paced(sim.connect(), "s-", TOTAL, RATE, posted=posted)


def stream_messages(events: list[Any]) -> list[tuple[str, str]]:
    out = []
    for e in events:
        msg = (e.data or {}).get("Message") or ""
        if e["subject"] == "GeneralUserEvent" and msg.startswith("s-"):
            out.append((msg, e["id"]))
    return out


async def test_kill_9_mid_stream_then_restart_loses_nothing(tmp_path: Path) -> None:
    cp_dir = tmp_path / "checkpoints"
    cfg = tmp_path / "config.yaml"
    log = tmp_path / "router.log"
    with VCSim() as sim:
        async with CloudEventSink() as sink:
            write_config(cfg, sim, sink.url, cp_dir)
            router = start_router(cfg, log)
            try:
                # a fresh start writes its first checkpoint at once
                await wait_until(
                    lambda: (cp_dir / "cp-127.0.0.1.json").exists(), 30, "first checkpoint"
                )
                posted: list[float] = []
                poster = asyncio.create_task(asyncio.to_thread(post_stream, sim, posted))
                cp_file = cp_dir / "cp-127.0.0.1.json"
                await wait_until(
                    lambda: (
                        len(stream_messages(sink.events)) >= TOTAL * 3 // 10
                        and "GeneralUserEvent" in cp_file.read_text()
                    ),
                    30,
                    "the first events at the sink and a checkpoint inside the stream",
                )
                # kill at a point of the stream independent of when checkpoints are
                # written (anywhere in a period), not right after a write
                await wait_until(
                    lambda: len(posted) >= TOTAL * 6 // 10, 30, "60 % of the stream posted"
                )
                os.kill(router.pid, signal.SIGKILL)
                router.wait(10)
                assert len(posted) < TOTAL, "the stream must still be running at the kill"
                # events keep coming while the router is down; requests the killed router
                # had already sent are still being answered by the sink
                await asyncio.sleep(0.5)
                before = stream_messages(sink.events)
                router = start_router(cfg, log)
                await poster
                await wait_until(
                    lambda: (
                        {m for m, _ in stream_messages(sink.events)}
                        >= {f"s-{i}" for i in range(TOTAL)}
                    ),
                    60,
                    "every event at the sink",
                )
                await asyncio.sleep(PERIOD)  # late duplicates would show up now
            finally:
                router.send_signal(signal.SIGTERM)
                try:
                    router.wait(15)
                except subprocess.TimeoutExpired:
                    router.kill()
                    router.wait(5)
            if router.returncode not in (0,):
                pytest.fail(f"router exited {router.returncode}: {log.read_text()[-3000:]}")

    got = stream_messages(sink.events)
    counts = collections.Counter(m for m, _ in got)
    ids: dict[str, set[str]] = collections.defaultdict(set)
    for m, i in got:
        ids[m].add(i)
    # every event at least once
    assert set(counts) == {f"s-{i}" for i in range(TOTAL)}
    # duplicates carry identical ids (a sink can de-duplicate)
    assert all(len(v) == 1 for v in ids.values())
    assert len({next(iter(v)) for v in ids.values()}) == TOTAL
    # only the tail of what was delivered before the kill is repeated: at most one
    # checkpoint period's worth at the posting rate (plus the events in flight)
    repeated = [m for m, c in counts.items() if c > 1]
    assert all(c <= 2 for c in counts.values())
    before_order = [m for m, _ in before]
    assert set(repeated) == set(before_order[len(before_order) - len(repeated) :])
    assert len(repeated) <= RATE * PERIOD + 20, len(repeated)
    assert len(repeated) < len(before), "the checkpoint advanced: not everything is replayed"
    print(f"delivered before kill {len(before)}, repeated after restart {len(repeated)}")
