"""End to end: what happens to events a sink does not take. The ``event-router`` CLI as a
separate process (vcenter -> knative against vcsim, webhook -> knative), real CloudEvents
sinks over HTTP.

* a sink down (503) for 60 s while vCenter events flow: every event arrives once it
  recovers, in order, once each, without a restart;
* a sink answering 400 to one event: that event goes to the dead-letter sink with Knative's
  extensions, the stream goes on, and a restart does not replay it;
* a dead-letter sink that is down holds the checkpoint: nothing is lost across a kill -9;
* kill -9 of a webhook router under load (ack after delivery) loses no acknowledged event.
"""

from __future__ import annotations

import asyncio
import base64
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml

from tests.support.net import free_port, free_ports
from tests.support.polling import wait_until
from tests.support.sink import CloudEventSink
from tests.support.vcsim import VCSim

pytestmark = [pytest.mark.integration, pytest.mark.timeout(240)]

EVENT_ROUTER = Path(sys.executable).parent / "event-router"


def vcenter_config(
    path: Path,
    sim: VCSim,
    sink_url: str,
    cp_dir: Path,
    metrics_port: int,
    *,
    dead_letter: str | None = None,
) -> None:
    processor: dict[str, Any] = {
        "type": "knative",
        "name": "sink",
        "knative": {"encoding": "structured", "destination": {"uri": sink_url}},
        # short retries, so that the router's own retry rounds show in a short test
        "delivery": {"retry": 2, "backoffDelay": "PT0.05S"},
    }
    if dead_letter is not None:
        processor["delivery"]["deadLetterSink"] = {"uri": dead_letter}
    path.write_text(
        yaml.safe_dump(
            {
                "apiVersion": "event-router.vmware.com/v1alpha1",
                "kind": "RouterConfig",
                "metadata": {"name": "delivery-e2e"},
                "eventProvider": {
                    "type": "vcenter",
                    "name": "vcsim",
                    "vcenter": sim.vcenter_spec(checkpoint=True, checkpointDir=str(cp_dir)),
                },
                "eventProcessors": [processor],
                "metricsProvider": {
                    "type": "default",
                    "name": "metrics",
                    "default": {"bindAddress": f"127.0.0.1:{metrics_port}"},
                },
                "checkpoint": {"periodSeconds": 0.5},
            }
        )
    )


def start_router(cfg: Path, log: Path) -> subprocess.Popen[bytes]:
    with log.open("ab") as out:
        return subprocess.Popen(
            [str(EVENT_ROUTER), "-config", str(cfg), "-log-level", "info"],
            stdout=out,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
        )


def stop(router: subprocess.Popen[bytes], sig: int = signal.SIGTERM) -> None:
    if router.poll() is None:
        router.send_signal(sig)
        try:
            router.wait(20)
        except subprocess.TimeoutExpired:
            router.kill()
            router.wait(5)


def post_events(sim: VCSim, messages: list[str], rate: float) -> None:
    from pyVmomi import vim

    si = sim.connect()
    mgr = si.content.eventManager
    start = time.monotonic()
    for i, msg in enumerate(messages):
        delay = start + i / rate - time.monotonic()
        if delay > 0:
            time.sleep(delay)
        mgr.PostEvent(
            eventToPost=vim.event.GeneralUserEvent(
                key=0, chainId=0, createdTime=si.CurrentTime(), userName="", message=msg
            )
        )


def messages(events: list[Any], prefix: str) -> list[str]:
    out = []
    for e in events:
        msg = (e.data or {}).get("Message") or ""
        if e["subject"] == "GeneralUserEvent" and msg.startswith(prefix):
            out.append(msg)
    return out


async def stats(port: int) -> dict[str, Any]:
    async with httpx.AsyncClient(timeout=5) as client:
        r = await client.get(f"http://127.0.0.1:{port}/stats")
        body: dict[str, Any] = r.json()["vmware.event.router.stats"]
        return body


async def wait_started(cp_file: Path, router: subprocess.Popen[bytes], log: Path) -> None:
    def up() -> bool:
        if router.poll() is not None:
            raise AssertionError(f"router exited: {log.read_text()[-3000:]}")
        return cp_file.exists()

    await wait_until(up, 30, "the router's first checkpoint")


async def test_a_sink_down_for_60s_gets_every_event_in_order_once_it_recovers(
    tmp_path: Path,
) -> None:
    cp_dir, cfg, log = tmp_path / "cp", tmp_path / "config.yaml", tmp_path / "router.log"
    metrics_port = free_port()
    sent = [f"down-{i:04d}" for i in range(600)]  # 10/s for 60 s
    with VCSim() as sim:
        async with CloudEventSink() as sink:
            vcenter_config(cfg, sim, sink.url, cp_dir, metrics_port)
            router = start_router(cfg, log)
            try:
                await wait_started(cp_dir / "cp-127.0.0.1.json", router, log)
                sink.down = 503
                poster = asyncio.create_task(asyncio.to_thread(post_events, sim, sent, 10.0))
                await wait_until(lambda: sink.requests > 10, 30, "deliveries refused")
                s = await stats(metrics_port)
                assert s["knative"]["stalled"] == 1, s
                await poster  # 60 s of events while the sink is down
                assert messages(sink.events, "down-") == []
                sink.down = None  # recovers: the stream resumes by itself
                await wait_until(
                    lambda: len(messages(sink.events, "down-")) >= len(sent),
                    60,
                    "every event after the sink recovered",
                )
                got = list(sink.events)
                assert router.poll() is None, "the router restarted"
            finally:
                stop(router)
    received = messages(got, "down-")
    assert received == sent  # every event, once, in order
    text = log.read_text()
    assert "delivery stalled on event" in text and "after a" in text
    assert ") dropped: " not in text


async def test_a_rejected_event_goes_to_the_dead_letter_sink_and_is_not_replayed(
    tmp_path: Path,
) -> None:
    cp_dir, cfg, log = tmp_path / "cp", tmp_path / "config.yaml", tmp_path / "router.log"
    metrics_port = free_port()
    first = [f"dl-{i:02d}" for i in range(10)]
    with VCSim() as sim:
        async with CloudEventSink() as sink, CloudEventSink() as dls:
            sink.reject_containing = {b'"dl-03"'}
            vcenter_config(cfg, sim, sink.url, cp_dir, metrics_port, dead_letter=dls.url)
            router = start_router(cfg, log)
            try:
                await wait_started(cp_dir / "cp-127.0.0.1.json", router, log)
                await asyncio.to_thread(post_events, sim, first, 50.0)
                await wait_until(
                    lambda: len(messages(sink.events, "dl-")) == 9 and dls.events,
                    30,
                    "nine events at the sink, one at the dead-letter sink",
                )
                s = await stats(metrics_port)
                assert s["knative"]["deadLettered"] == 1, s
            finally:
                stop(router)
            assert router.returncode == 0, log.read_text()[-3000:]
            assert messages(sink.events, "dl-") == [m for m in first if m != "dl-03"]
            (letter,) = dls.events
            assert letter.data["Message"] == "dl-03"
            assert letter["knativeerrordest"] == sink.url
            assert letter["knativeerrorcode"] == "400"
            error_body = base64.b64decode(letter["knativeerrordata"])
            assert json.loads(error_body) == {"error": "poison event rejected"}

            # restarted: the dead-lettered event settled, the checkpoint is past it
            router = start_router(cfg, log)
            try:
                await asyncio.to_thread(post_events, sim, ["dl-after"], 50.0)
                await wait_until(
                    lambda: "dl-after" in messages(sink.events, "dl-"), 30, "the next event"
                )
                await asyncio.sleep(1.0)  # anything replayed would have arrived by now
            finally:
                stop(router)
            assert messages(sink.events, "dl-") == [m for m in first if m != "dl-03"] + ["dl-after"]
            assert len(dls.events) == 1


async def test_a_dead_letter_sink_that_is_down_holds_the_checkpoint(tmp_path: Path) -> None:
    cp_dir, cfg, log = tmp_path / "cp", tmp_path / "config.yaml", tmp_path / "router.log"
    metrics_port = free_port()
    sent = [f"hold-{i}" for i in range(5)]
    with VCSim() as sim:
        async with CloudEventSink() as sink, CloudEventSink() as dls:
            sink.reject_containing = {b'"hold-2"'}
            dls.down = 503
            vcenter_config(cfg, sim, sink.url, cp_dir, metrics_port, dead_letter=dls.url)
            router = start_router(cfg, log)
            try:
                await wait_started(cp_dir / "cp-127.0.0.1.json", router, log)
                await asyncio.to_thread(post_events, sim, sent, 50.0)
                await wait_until(lambda: dls.requests >= 3, 30, "dead-letter attempts")
                await asyncio.sleep(1.5)  # three checkpoint periods
                # the stream waits behind the event nobody took; the checkpoint holds
                assert messages(sink.events, "hold-") == ["hold-0", "hold-1"]
                checkpoint = json.loads((cp_dir / "cp-127.0.0.1.json").read_text())
                hold_1 = next(e for e in sink.events if e.data.get("Message") == "hold-1")
                os.kill(router.pid, signal.SIGKILL)
                router.wait(10)
            finally:
                stop(router)
            # the checkpoint is the last event every processor settled: hold-1
            assert checkpoint["lastEventKey"] == hold_1.data["Key"], checkpoint
            dls.down = None
            router = start_router(cfg, log)
            try:
                await wait_until(
                    lambda: (
                        {"hold-3", "hold-4"} <= set(messages(sink.events, "hold-")) and dls.events
                    ),
                    30,
                    "the rest of the stream after the restart",
                )
            finally:
                stop(router)
    assert [e.data["Message"] for e in dls.events] == ["hold-2"]
    got = messages(sink.events, "hold-")
    assert set(got) == {"hold-0", "hold-1", "hold-3", "hold-4"}
    assert got[-2:] == ["hold-3", "hold-4"]


def webhook_config(path: Path, sink_url: str, hook_port: int, metrics_port: int) -> None:
    path.write_text(
        yaml.safe_dump(
            {
                "apiVersion": "event-router.vmware.com/v1alpha1",
                "kind": "RouterConfig",
                "metadata": {"name": "hook-kill"},
                "eventProvider": {
                    "type": "webhook",
                    "name": "hook",
                    "webhook": {"bindAddress": f"127.0.0.1:{hook_port}", "path": "/webhook"},
                },
                "eventProcessor": {
                    "type": "knative",
                    "name": "sink",
                    "knative": {"destination": {"uri": sink_url}},
                },
                "metricsProvider": {
                    "type": "default",
                    "name": "metrics",
                    "default": {"bindAddress": f"127.0.0.1:{metrics_port}"},
                },
            }
        )
    )


async def test_kill_9_of_a_webhook_router_loses_no_acknowledged_event(tmp_path: Path) -> None:
    """8 clients post while the sink takes 50 ms per event; kill -9 in the middle: every
    event that got a 2xx is at the sink (ack: delivered, the default)."""
    cfg, log = tmp_path / "config.yaml", tmp_path / "router.log"
    hook_port, metrics_port = free_ports(2)
    acked: list[str] = []
    refused = 0
    async with CloudEventSink(delay=0.05) as sink:
        webhook_config(cfg, sink.url, hook_port, metrics_port)
        router = start_router(cfg, log)
        try:
            async with httpx.AsyncClient(timeout=10) as client:
                await wait_until(lambda: router.poll() is None, 5, "router running")
                url = f"http://127.0.0.1:{hook_port}/webhook"

                async def ready() -> bool:
                    try:
                        r = await client.get(f"http://127.0.0.1:{metrics_port}/readyz")
                        return r.status_code == 200
                    except httpx.TransportError:
                        return False

                for _ in range(200):
                    if await ready():
                        break
                    await asyncio.sleep(0.05)
                stop_at = asyncio.Event()

                async def client_loop(c: int) -> None:
                    nonlocal refused
                    n = 0
                    while not stop_at.is_set():
                        eid = f"c{c}-{n}"
                        n += 1
                        headers = {
                            "ce-specversion": "1.0",
                            "ce-id": eid,
                            "ce-source": "/load",
                            "ce-type": "com.example.load",
                            "content-type": "application/json",
                        }
                        try:
                            r = await client.post(url, headers=headers, content=b'{"n":1}')
                        except httpx.TransportError:
                            refused += 1
                            await asyncio.sleep(0.01)
                            continue
                        if r.status_code // 100 == 2:
                            acked.append(eid)
                        else:
                            refused += 1

                clients = [asyncio.create_task(client_loop(c)) for c in range(8)]
                await wait_until(lambda: len(acked) >= 100, 30, "100 acknowledged events")
                os.kill(router.pid, signal.SIGKILL)
                router.wait(10)
                await asyncio.sleep(0.3)
                stop_at.set()
                await asyncio.gather(*clients)
        finally:
            stop(router)
        await asyncio.sleep(0.2)  # requests the killed router had sent are answered
        at_sink = {e["id"] for e in sink.events}
    lost = [eid for eid in acked if eid not in at_sink]
    print(f"acknowledged {len(acked)}, at the sink {len(at_sink)}, refused {refused}")
    assert not lost, f"{len(lost)} acknowledged event(s) lost: {lost[:10]}"
    assert len(at_sink) >= len(acked)  # some delivered but not acknowledged: the kill
