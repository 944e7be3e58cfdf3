"""Benchmark: the ``event-router`` CLI (vcenter -> knative) against vcsim and a local sink.

Phases (the router is a separate process, as in production):

1. drain: ``--backlog`` events (default 1,000) already in vcsim and a checkpoint from
   before them; events/s from the first to the last event at the sink (and from the
   router's start).
2. latency: events posted at ``--rate``/s (default 20) for ``--duration`` s (default 60);
   event-to-sink latency = sink arrival time - the event's ``createdTime`` (vcsim runs on
   this machine's clock): p50, p99, max.
3. the router process's RSS (VmRSS and peak VmHWM from /proc) after both phases.

Progress goes to stderr; the last stdout line is one JSON object with at least
``drain_events_per_s``, ``p50_s``, ``p99_s``, ``rss_mib``.

    .venv/bin/python -m bench.vcenter [--backlog 1000] [--rate 20] [--duration 60]
"""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import json
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import yaml
from aiohttp import web
from pyVmomi import vim

from bench._common import log, rss_mib
from tests.support.sink import CloudEventSink
from tests.support.vcsim import VCSim

EVENT_ROUTER = Path(sys.executable).parent / "event-router"


def say(msg: str) -> None:
    log(msg, tag="bench.vcenter")


class TimedSink(CloudEventSink):
    """The test sink, plus the wall-clock arrival time of every event."""

    def __init__(self) -> None:
        super().__init__()
        self.arrivals: list[float] = []

    async def _handle(self, request: web.Request) -> web.Response:
        before = len(self.events)
        response = await super()._handle(request)
        now = time.time()
        self.arrivals.extend([now] * (len(self.events) - before))
        return response


def bench_messages(sink: TimedSink, prefix: str) -> list[tuple[Any, float]]:
    out = []
    for event, at in zip(sink.events, sink.arrivals, strict=False):
        msg = (event.data or {}).get("Message") or ""
        if event["subject"] == "GeneralUserEvent" and msg.startswith(prefix):
            out.append((event, at))
    return out


def post(si: Any, prefix: str, count: int, rate: float | None) -> None:
    mgr = si.content.eventManager
    start = time.monotonic()
    for i in range(count):
        if rate:
            delay = start + i / rate - time.monotonic()
            if delay > 0:
                time.sleep(delay)
        mgr.PostEvent(
            eventToPost=vim.event.GeneralUserEvent(
                key=0, chainId=0, createdTime=si.CurrentTime(), userName="", message=f"{prefix}{i}"
            )
        )


def start_router(config: Path, log: Any) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        [str(EVENT_ROUTER), "-config", str(config), "-log-level", "warn"],
        stdout=log,
        stderr=subprocess.STDOUT,
        stdin=subprocess.DEVNULL,
    )


def quantile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


async def wait_count(sink: TimedSink, prefix: str, count: int, timeout: float) -> None:  # noqa: ASYNC109
    deadline = time.monotonic() + timeout
    while len(bench_messages(sink, prefix)) < count:
        if time.monotonic() > deadline:
            raise TimeoutError(
                f"{len(bench_messages(sink, prefix))}/{count} {prefix}* events in {timeout}s"
            )
        await asyncio.sleep(0.05)


async def main(args: argparse.Namespace) -> dict[str, Any]:
    work = Path(tempfile.mkdtemp(prefix="bench-vcenter-"))
    cp_dir = work / "checkpoints"
    cp_dir.mkdir()
    with VCSim() as sim:
        sink = TimedSink()
        async with sink:
            si = await asyncio.to_thread(sim.connect)
            begin: dt.datetime = (await asyncio.to_thread(si.CurrentTime)).astimezone(dt.UTC)
            # a checkpoint from before the backlog: the router starts by draining it
            (cp_dir / "cp-127.0.0.1.json").write_text(
                json.dumps(
                    {
                        "vCenter": sim.url,
                        "lastEventKey": 0,
                        "lastEventType": "",
                        "lastEventKeyTimestamp": begin.strftime("%Y-%m-%dT%H:%M:%S.%fZ"),
                        "createdTimestamp": begin.strftime("%Y-%m-%dT%H:%M:%S.%fZ"),
                    }
                )
            )
            say(f"posting a backlog of {args.backlog} events")
            await asyncio.to_thread(post, si, "d", args.backlog, None)
            config = work / "config.yaml"
            config.write_text(
                yaml.safe_dump(
                    {
                        "apiVersion": "event-router.vmware.com/v1alpha1",
                        "kind": "RouterConfig",
                        "metadata": {"name": "bench"},
                        "eventProvider": {
                            "type": "vcenter",
                            "name": "vcsim",
                            "vcenter": sim.vcenter_spec(
                                checkpoint=True,
                                checkpointDir=str(cp_dir),
                                pageSize=args.page_size,
                            ),
                        },
                        "eventProcessor": {
                            "type": "knative",
                            "name": "sink",
                            "knative": {"destination": {"uri": sink.url}},
                        },
                    }
                )
            )
            log = (work / "router.log").open("wb")
            started = time.time()
            router = start_router(config, log)
            try:
                await wait_count(sink, "d", args.backlog, 120)
                drained = bench_messages(sink, "d")
                first, last = drained[0][1], drained[-1][1]
                drain_rate = (len(drained) - 1) / max(last - first, 1e-6)
                say(
                    f"drain: {len(drained)} events in {last - first:.2f}s "
                    f"({drain_rate:.0f}/s); {last - started:.2f}s from router start"
                )
                total = int(args.rate * args.duration)
                say(f"latency: {total} events at {args.rate}/s for {args.duration}s")
                await asyncio.to_thread(post, si, "l", total, args.rate)
                await wait_count(sink, "l", total, 60)
                latencies = [
                    at - dt.datetime.fromisoformat(ev["time"].replace("Z", "+00:00")).timestamp()
                    for ev, at in bench_messages(sink, "l")
                ]
                rss, hwm = rss_mib(router.pid)
            finally:
                router.send_signal(signal.SIGTERM)
                try:
                    router.wait(20)
                except subprocess.TimeoutExpired:
                    router.kill()
                    router.wait()
                log.close()
    figures = {
        "drain_events": args.backlog,
        "drain_events_per_s": round(drain_rate, 1),
        "drain_s_from_router_start": round(last - started, 3),
        "latency_events": len(latencies),
        "p50_s": round(statistics.median(latencies), 4),
        "p99_s": round(quantile(latencies, 0.99), 4),
        "max_s": round(max(latencies), 4),
        "rss_mib": round(rss, 1),
        "rss_peak_mib": round(hwm, 1),
        "page_size": args.page_size,
        "router_exit_code": router.returncode,
    }
    say(f"p50 {figures['p50_s']}s p99 {figures['p99_s']}s; RSS {rss:.1f} MiB (peak {hwm:.1f})")
    return figures


def cli() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--backlog", type=int, default=1000)
    parser.add_argument("--rate", type=float, default=20.0)
    parser.add_argument("--duration", type=float, default=60.0)
    parser.add_argument("--page-size", type=int, default=100)
    figures = asyncio.run(main(parser.parse_args()))
    print(json.dumps(figures))


if __name__ == "__main__":
    cli()
