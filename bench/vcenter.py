"""Benchmark: the ``event-router`` CLI (vcenter -> knative) against vcsim and a local sink.

Phases (the router is a separate process, as in production):

1. drain: ``--backlog`` events (default 1,000) already in vcsim and a checkpoint from
   before them; events/s from the first to the last event at the sink (and from the
   router's start), and the router's CPU per event between those two arrivals.
2. latency: after ``--idle`` s (default 10) without events, events posted at ``--rate``/s
   (default 20) for ``--duration`` s (default 60); event-to-sink latency = sink arrival
   time - the event's ``createdTime`` (vcsim runs on this machine's clock): p50, p99, max;
   and the router's CPU per event from the first post to the last arrival.
3. busy: ``--busy-rate`` events/s (default 100) for ``--busy-duration`` s (default 20), the
   same figures (``live_<rate>_*``): the batch window's reads carry more events per call.
4. burst: after ``--idle`` s, ``--burst`` events (default 1,000) posted at once (4 threads,
   as fast as vcsim takes them): how many never arrived, arrived twice, or out of key order.
5. the machine's wake-up cost, without the router: the CPU of one pyVmomi ReadNextEvents
   returning one event, back to back and after a 60 ms sleep (``read_1_hot_ms``,
   ``read_1_after_sleep_ms``). A live event runs after a sleep, a drained one back to back:
   their ratio bounds how close live CPU per event can come to the drain's.
6. the router process's RSS (VmRSS and peak VmHWM from /proc) after all phases, and its
   peak after the drain.

CPU is the router process's utime + stime from /proc/<pid>/stat (10 ms ticks).

Progress goes to stderr; the last stdout line is one JSON object with at least
``drain_events_per_s``, ``p50_s``, ``p99_s``, ``rss_mib``, ``live_cpu_ms_per_event``,
``drain_cpu_ms_per_event``, ``live_p50_s``, ``live_p99_s``, ``burst_1000_missing``.

    .venv/bin/python -m bench.vcenter [--backlog 1000] [--rate 20] [--duration 60]
        [--idle 10] [--burst 1000] [--busy-rate 100] [--busy-duration 20]
        [--batch-window SECONDS]   # eventProvider.vcenter.batchWindowSeconds (default: the
                                   # config's default, 0.06)

``BENCH_PROFILE=/tmp/vc.prof`` runs the router under cProfile (its event loop thread only: the
pyVmomi calls run in a worker thread) and writes the profile there when it stops.
"""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import itertools
import json
import os
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
from event_router.config.models import VCenterConfig
from tests.support.sink import CloudEventSink
from tests.support.vcsim import VCSim, post_burst, post_paced

EVENT_ROUTER = Path(sys.executable).parent / "event-router"


def say(msg: str) -> None:
    log(msg, tag="bench.vcenter")


def cpu_s(pid: int) -> float:
    """utime + stime of process ``pid`` in seconds (from /proc/<pid>/stat)."""
    stat = Path(f"/proc/{pid}/stat").read_text()
    fields = stat[stat.rindex(")") + 2 :].split()  # after "pid (comm) "
    return (int(fields[11]) + int(fields[12])) / CLOCK_TICKS


CLOCK_TICKS = os.sysconf("SC_CLK_TCK")


class TimedSink(CloudEventSink):
    """The test sink, plus the wall-clock arrival time of every event and the router's CPU
    seconds at that moment (once ``pid`` is set)."""

    def __init__(self) -> None:
        super().__init__()
        #: time.time() of each entry of ``events`` (the base class's ``arrivals`` are
        #: monotonic, not comparable with vCenter's createdTime)
        self.wall_arrivals: list[float] = []
        self.cpu: list[float] = []
        self.pid: int | None = None

    async def _handle(self, request: web.Request) -> web.Response:
        before = len(self.events)
        response = await super()._handle(request)
        now = time.time()
        cpu = cpu_s(self.pid) if self.pid is not None else 0.0
        new = len(self.events) - before
        self.wall_arrivals.extend([now] * new)
        self.cpu.extend([cpu] * new)
        return response


def bench_messages(sink: TimedSink, prefix: str) -> list[tuple[Any, float]]:
    return [(event, at) for event, at, _ in bench_arrivals(sink, prefix)]


def bench_arrivals(sink: TimedSink, prefix: str) -> list[tuple[Any, float, float]]:
    """(event, arrival time, router CPU seconds then) of the bench's events ``<prefix><i>``."""
    out = []
    for event, at, cpu in zip(sink.events, sink.wall_arrivals, sink.cpu, strict=True):
        msg = (event.data or {}).get("Message") or ""
        if event["subject"] == "GeneralUserEvent" and msg.startswith(prefix):
            out.append((event, at, cpu))
    return out


def burst_figures(events: list[Any], prefix: str, count: int) -> dict[str, int]:
    """Missing, duplicated and out-of-order (by vCenter key) events of a burst."""
    messages = [(e.data or {}).get("Message") for e in events]
    keys = [int((e.data or {}).get("Key") or 0) for e in events]
    expected = {f"{prefix}{i}" for i in range(count)}
    return {
        f"burst_{count}_missing": len(expected - set(messages)),
        f"burst_{count}_duplicates": len(messages) - len(set(messages)),
        f"burst_{count}_out_of_order": sum(1 for a, b in itertools.pairwise(keys) if b <= a),
    }


def start_router(config: Path, log: Any) -> subprocess.Popen[bytes]:
    profile = os.environ.get("BENCH_PROFILE")  # a path: cProfile the router's event loop
    router = [str(EVENT_ROUTER)]
    if profile:
        router = [sys.executable, "-m", "cProfile", "-o", profile, "-m", "event_router.cli"]
    return subprocess.Popen(
        [*router, "-config", str(config), "-log-level", "warn"],
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


async def live_phase(
    sink: TimedSink, si: Any, pid: int, prefix: str, rate: float, duration: float
) -> dict[str, float]:
    """``rate`` events/s for ``duration`` s: event-to-sink latency and router CPU per event
    (from the first post to the last arrival)."""
    total = int(rate * duration)
    say(f"live: {total} events at {rate:g}/s for {duration:g}s")
    cpu_before = cpu_s(pid)
    await asyncio.to_thread(post_paced, si, prefix, total, rate)
    await wait_count(sink, prefix, total, 60)
    live = bench_arrivals(sink, prefix)
    cpu = (live[-1][2] - cpu_before) / total
    latencies = [
        at - dt.datetime.fromisoformat(ev["time"].replace("Z", "+00:00")).timestamp()
        for ev, at, _ in live
    ]
    figures = {
        "events": len(latencies),
        "p50_s": round(statistics.median(latencies), 4),
        "p99_s": round(quantile(latencies, 0.99), 4),
        "max_s": round(max(latencies), 4),
        "cpu_ms_per_event": round(cpu * 1000, 3),
    }
    say(f"live at {rate:g}/s: {figures}")
    return figures


def read_cost(sim: VCSim, reads: int = 150) -> dict[str, float]:
    """CPU (this thread's) of one ReadNextEvents that returns one event: back to back, and
    after a 60 ms sleep."""
    si, poster = sim.connect(), sim.connect()
    content = si.content
    spec = vim.event.EventFilterSpec(
        entity=vim.event.EventFilterSpec.ByEntity(entity=content.rootFolder, recursion="all"),
        time=vim.event.EventFilterSpec.ByTime(beginTime=si.CurrentTime()),
    )
    collector = content.eventManager.CreateCollectorForEvents(filter=spec)
    figures = {}
    try:
        for name, pause in (("read_1_hot_ms", 0.0), ("read_1_after_sleep_ms", 0.06)):
            spent = 0.0
            for _ in range(reads):
                post_paced(poster, "w", 1, None)
                if pause:
                    time.sleep(pause)
                t0 = time.thread_time()
                got = collector.ReadNextEvents(maxCount=100)
                spent += time.thread_time() - t0
                assert len(got) == 1, len(got)
            figures[name] = round(spent / reads * 1000, 3)
    finally:
        collector.DestroyCollector()
    return figures


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
            await asyncio.to_thread(post_paced, si, "d", args.backlog, None)
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
                                batchWindowSeconds=args.batch_window,
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
            sink.pid = router.pid
            try:
                await wait_count(sink, "d", args.backlog, 120)
                drained = bench_arrivals(sink, "d")
                first, last = drained[0][1], drained[-1][1]
                drain_rate = (len(drained) - 1) / max(last - first, 1e-6)
                drain_cpu = (drained[-1][2] - drained[0][2]) / max(len(drained) - 1, 1)
                say(
                    f"drain: {len(drained)} events in {last - first:.2f}s "
                    f"({drain_rate:.0f}/s); {last - started:.2f}s from router start; "
                    f"{drain_cpu * 1000:.2f} ms CPU per event"
                )
                _, drain_hwm = rss_mib(router.pid)
                say(f"idle {args.idle}s")
                await asyncio.sleep(args.idle)
                live_figures = await live_phase(sink, si, router.pid, "l", args.rate, args.duration)
                busy_figures: dict[str, float] = {}
                if args.busy_rate:
                    say(f"idle {args.idle}s")
                    await asyncio.sleep(args.idle)
                    busy_figures = await live_phase(
                        sink, si, router.pid, "h", args.busy_rate, args.busy_duration
                    )
                say(f"idle {args.idle}s, then a burst of {args.burst} events")
                await asyncio.sleep(args.idle)
                posted_in = await asyncio.to_thread(post_burst, sim, "b", args.burst)
                try:
                    await wait_count(sink, "b", args.burst, 60)
                except TimeoutError as e:
                    say(f"burst: {e}")
                await asyncio.sleep(1)  # duplicates, if any, arrive too
                burst = burst_figures([ev for ev, _ in bench_messages(sink, "b")], "b", args.burst)
                say(f"burst: posted in {posted_in:.2f}s; {burst}")
                rss, hwm = rss_mib(router.pid)
            finally:
                router.send_signal(signal.SIGTERM)
                try:
                    router.wait(20)
                except subprocess.TimeoutExpired:
                    router.kill()
                    router.wait()
                log.close()
            say("wake-up cost of a ReadNextEvents (this process; the router has stopped)")
            reads = await asyncio.to_thread(read_cost, sim)
            say(f"read of one event: {reads}")
    busy = f"{args.busy_rate:g}"

    def over_drain(live: dict[str, float]) -> float:
        return round(live["cpu_ms_per_event"] / max(drain_cpu * 1000, 1e-9), 2)

    figures = {
        "drain_events": args.backlog,
        "drain_events_per_s": round(drain_rate, 1),
        "drain_s_from_router_start": round(last - started, 3),
        "latency_events": live_figures["events"],
        "p50_s": live_figures["p50_s"],
        "p99_s": live_figures["p99_s"],
        "max_s": live_figures["max_s"],
        "live_p50_s": live_figures["p50_s"],
        "live_p99_s": live_figures["p99_s"],
        "live_cpu_ms_per_event": live_figures["cpu_ms_per_event"],
        "drain_cpu_ms_per_event": round(drain_cpu * 1000, 3),
        "live_over_drain_cpu": over_drain(live_figures),
        **{f"live_{busy}_{key}": value for key, value in busy_figures.items() if key != "events"},
        **({f"live_{busy}_over_drain_cpu": over_drain(busy_figures)} if busy_figures else {}),
        **reads,
        "wake_factor": round(reads["read_1_after_sleep_ms"] / max(reads["read_1_hot_ms"], 1e-9), 2),
        "batch_window_s": args.batch_window,
        **burst,
        "rss_mib": round(rss, 1),
        "rss_peak_mib": round(hwm, 1),
        "rss_peak_after_drain_mib": round(drain_hwm, 1),
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
    parser.add_argument("--idle", type=float, default=10.0)
    parser.add_argument("--burst", type=int, default=1000)
    parser.add_argument("--busy-rate", type=float, default=100.0, help="0: no busy phase")
    parser.add_argument("--busy-duration", type=float, default=20.0)
    parser.add_argument(
        "--batch-window",
        type=float,
        default=VCenterConfig.model_fields["batchWindowSeconds"].default,
        help="eventProvider.vcenter.batchWindowSeconds (default: the config's default)",
    )
    figures = asyncio.run(main(parser.parse_args()))
    print(json.dumps(figures))


if __name__ == "__main__":
    cli()
