"""Benchmark: webhook provider -> router -> knative processor -> local sink.

Three processes: the router (the ``event-router`` CLI with a generated config, so its RSS
is read from /proc), a CloudEvents sink (aiohttp, acknowledges 202 and records arrival
times), and this driver (concurrent aiohttp clients posting binary-mode CloudEvents).

Phases: warm-up; throughput (concurrent clients as fast as they can, sustained events/s =
events delivered to the sink / wall time); latency at a fixed rate (open-loop pacing at
500 events/s, end-to-end latency = sink arrival - client send, both CLOCK_MONOTONIC on
this machine); 8 clients opening a new connection per request for 2,000 events (every answer
comes after delivery: ``ack: delivered``); RSS of the router (VmRSS and peak VmHWM).

Then a fan-out phase (``fanout_3_*``), with a second router of its own: one webhook to
three processors with filters, each to a knative sink process of its own (``powered``:
Knative ``filters`` prefix on ``type``; ``prod``: an EventBridge ``pattern`` on
``data.Vm.Name``; ``audit``: an ``any`` of two filters). The events cycle through four
types and two VM names, so each processor takes half of them, one in eight goes nowhere
and one in eight everywhere: 1.5 deliveries per event. ``--fanout-events`` events from
``--clients`` concurrent clients as fast as they can (``fanout_3_events_per_s``: events
answered 202 / wall time, and a 202 comes only once every processor that selects the event
delivered it, ``ack: delivered``), then as many at ``--fanout-rate`` events/s, open loop
(``fanout_3_p50_ms`` / ``fanout_3_p99_ms``: POST to its 202, i.e. until the event is at
every sink that selects it). Each sink's count is checked against what the filters select.
Three knative sinks rather than moto's EventBridge: moto in server mode on this machine
took 12.6 ms per PutEvents of one entry and 131 ms per batch of ten (about 80 entries/s)
with the rule's SQS target, 4.8 ms per batch of ten without a target, all on the same
2 cores: a figure of moto, not of the router.

Progress goes to stderr; the last stdout line is one JSON object of figures.

    .venv/bin/python -m bench.webhook_knative [--events 20000] [--clients 32]
        [--rate 500] [--seconds 10] [--encoding binary|structured]
        [--fanout-events 2000] [--fanout-rate 500]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import aiohttp
from aiohttp import web

from bench._common import free_ports, log, rss_mib

SENT_ATTR = "benchsent"


# --- sink process ---------------------------------------------------------------------


def run_sink(port: int) -> None:
    """A minimal CloudEvents sink: 202 for every POST, records (id, latency)."""
    arrivals: list[tuple[str, int]] = []

    async def receive(request: web.Request) -> web.Response:
        await request.read()
        now = time.monotonic_ns()
        sent = request.headers.get("ce-" + SENT_ATTR)
        if sent is None:  # structured mode
            body = json.loads(await request.read())
            sent = body.get(SENT_ATTR)
        arrivals.append((request.headers.get("ce-id", ""), now - int(sent or now)))
        return web.Response(status=202)

    async def results(request: web.Request) -> web.Response:
        data = {"count": len(arrivals), "latencies_ns": [lat for _, lat in arrivals]}
        if request.query.get("reset"):
            arrivals.clear()
        return web.json_response(data)

    async def count(request: web.Request) -> web.Response:
        return web.json_response({"count": len(arrivals)})

    app = web.Application()
    app.router.add_post("/", receive)
    app.router.add_get("/results", results)
    app.router.add_get("/count", count)
    web.run_app(app, host="127.0.0.1", port=port, access_log=None, print=None)


# --- driver ---------------------------------------------------------------------------


ROUTER_WITH_IN_FLIGHT = """
import asyncio, signal, sys
from event_router.config.loader import load_config
from event_router.core import RouterContext
from event_router.processors import processor_class
from event_router.router import ProcessorSlot, Router

async def main():
    context = RouterContext(load_config(sys.argv[1]))
    proc = processor_class(context.config.eventProcessor.type)(context)
    router = Router(context, processors=[ProcessorSlot(proc, max_in_flight=int(sys.argv[2]))])
    await router.start()
    stop = asyncio.Event()
    asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, stop.set)
    await stop.wait()
    await router.stop(5)

asyncio.run(main())
"""


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def headers_for(n: int) -> dict[str, str]:
    return {
        "ce-specversion": "1.0",
        "ce-id": f"bench-{n}",
        "ce-source": "https://vcenter.bench.local/sdk",
        "ce-type": "com.vmware.event.router/event",
        "ce-subject": "VmPoweredOnEvent",
        "ce-time": "2024-05-01T10:00:00.000Z",
        "ce-" + SENT_ATTR: str(time.monotonic_ns()),
        "content-type": "application/json",
    }


BODY = json.dumps(
    {
        "Key": 12345,
        "ChainId": 12345,
        "CreatedTime": "2024-05-01T10:00:00.000Z",
        "UserName": "VSPHERE.LOCAL\\Administrator",
        "Datacenter": {"Name": "dc-01", "Datacenter": {"Type": "Datacenter", "Value": "dc-1"}},
        "ComputeResource": {"Name": "cluster-01"},
        "Host": {"Name": "esx-01.bench.local", "Host": {"Type": "HostSystem", "Value": "host-9"}},
        "Vm": {"Name": "demo-vm-1", "Vm": {"Type": "VirtualMachine", "Value": "vm-42"}},
        "FullFormattedMessage": "demo-vm-1 on esx-01.bench.local in dc-01 is powered on",
    }
).encode()


async def wait_http(url: str, within: float = 30.0) -> None:
    deadline = time.monotonic() + within
    async with aiohttp.ClientSession() as s:
        while True:
            try:
                async with s.get(url) as r:
                    if r.status < 500:
                        return
            except aiohttp.ClientError:
                pass
            if time.monotonic() > deadline:
                raise TimeoutError(f"{url} not up within {within}s")
            await asyncio.sleep(0.1)


async def sink_count(session: aiohttp.ClientSession, sink: str) -> int:
    async with session.get(sink + "/count") as r:
        return int((await r.json())["count"])


async def wait_count(session: aiohttp.ClientSession, sink: str, n: int, within: float) -> None:
    deadline = time.monotonic() + within
    while await sink_count(session, sink) < n:
        if time.monotonic() > deadline:
            raise TimeoutError(f"sink got {await sink_count(session, sink)} of {n} events")
        await asyncio.sleep(0.02)


#: (headers, body) of the n-th event
Request = Callable[[int], tuple[dict[str, str], bytes]]


def default_request(n: int) -> tuple[dict[str, str], bytes]:
    return headers_for(n), BODY


async def post_all(
    session: aiohttp.ClientSession,
    url: str,
    start: int,
    total: int,
    clients: int,
    request: Request = default_request,
) -> int:
    """``clients`` concurrent posters sharing a counter; returns non-2xx count."""
    counter = iter(range(start, start + total))
    errors = 0

    async def worker() -> None:
        nonlocal errors
        for n in counter:
            headers, body = request(n)
            async with session.post(url, headers=headers, data=body) as r:
                await r.read()
                if r.status >= 300:
                    errors += 1

    await asyncio.gather(*(worker() for _ in range(clients)))
    return errors


async def paced(
    session: aiohttp.ClientSession,
    url: str,
    start: int,
    rate: float,
    seconds: float,
    request: Request = default_request,
    answered_ms: list[float] | None = None,
) -> int:
    """Open loop: one POST every 1/rate s regardless of answers; returns events accepted.
    ``answered_ms`` gets each accepted POST's time to its answer."""
    total = int(rate * seconds)
    interval = 1.0 / rate
    t0 = time.monotonic()
    tasks = []
    errors = 0

    async def one(n: int) -> None:
        nonlocal errors
        headers, body = request(n)
        sent = time.monotonic()
        async with session.post(url, headers=headers, data=body) as r:
            await r.read()
            if r.status >= 300:
                errors += 1
            elif answered_ms is not None:
                answered_ms.append((time.monotonic() - sent) * 1000)

    for i in range(total):
        delay = t0 + i * interval - time.monotonic()
        if delay > 0:
            await asyncio.sleep(delay)
        tasks.append(asyncio.create_task(one(start + i)))
    await asyncio.gather(*tasks)
    if errors:
        log(f"paced phase: {errors} non-2xx answers")
    return total - errors


def pct(values: list[float], p: float) -> float:
    if not values:
        return float("nan")
    values = sorted(values)
    k = min(len(values) - 1, max(0, round(p / 100 * (len(values) - 1))))
    return values[k]


def router_config(name: str, hook_port: int, metrics_port: int, **processors: Any) -> str:
    """A webhook router's config (JSON, which is YAML) with metrics on ``metrics_port``;
    ``processors`` is ``eventProcessor={...}`` or ``eventProcessors=[...]``."""
    return json.dumps(
        {
            "apiVersion": "event-router.vmware.com/v1alpha1",
            "kind": "RouterConfig",
            "metadata": {"name": name},
            "eventProvider": {
                "type": "webhook",
                "name": "bench-webhook",
                "webhook": {"bindAddress": f"127.0.0.1:{hook_port}", "path": "/webhook"},
            },
            **processors,
            "metricsProvider": {
                "type": "default",
                "name": "bench-metrics",
                "default": {"bindAddress": f"127.0.0.1:{metrics_port}"},
            },
        }
    )


def start_sink(port: int, env: dict[str, str]) -> subprocess.Popen[bytes]:
    """A sink process of this module (``--sink PORT``)."""
    return subprocess.Popen(
        [sys.executable, "-m", "bench.webhook_knative", "--sink", str(port)], env=env
    )


def stop_all(procs: list[subprocess.Popen[bytes]]) -> None:
    """SIGTERM each process, then wait up to 15 s for each; kill what is still running."""
    for proc in procs:
        proc.terminate()
    for proc in procs:
        try:
            proc.wait(15)
        except subprocess.TimeoutExpired:
            proc.kill()


# --- fan-out phase: one webhook, three processors with filters ------------------------

FANOUT_TYPE = "com.vmware.event.router/"
#: the n-th fan-out event: FANOUT_SUBJECTS[n % 4], a prod- VM when (n // 4) is even
FANOUT_SUBJECTS = ("VmPoweredOnEvent", "VmPoweredOffEvent", "VmCreatedEvent", "VmRemovedEvent")
FANOUT_BODIES = {
    prod: BODY.replace(b"demo-vm-1", f"{'prod' if prod else 'dev'}-vm-1".encode())
    for prod in (True, False)
}
FANOUT_PROCESSORS: list[dict[str, Any]] = [
    {"name": "powered", "filters": [{"prefix": {"type": FANOUT_TYPE + "VmPowered"}}]},
    {"name": "prod", "pattern": {"data": {"Vm": {"Name": [{"prefix": "prod-"}]}}}},
    {
        "name": "audit",
        "filters": [
            {
                "any": [
                    {"suffix": {"type": "VmCreatedEvent"}},
                    {"exact": {"subject": "VmPoweredOffEvent"}},
                ]
            }
        ],
    },
]


def fanout_request(n: int) -> tuple[dict[str, str], bytes]:
    subject = FANOUT_SUBJECTS[n % 4]
    headers = headers_for(n)
    headers["ce-type"] = FANOUT_TYPE + subject
    headers["ce-subject"] = subject
    return headers, FANOUT_BODIES[(n // 4) % 2 == 0]


def fanout_selected(n: int) -> set[str]:
    """Which processors take the n-th fan-out event (by hand, not by the router's code)."""
    subject, prod = FANOUT_SUBJECTS[n % 4], (n // 4) % 2 == 0
    chosen = set()
    if subject.startswith("VmPowered"):
        chosen.add("powered")
    if prod:
        chosen.add("prod")
    if subject in ("VmCreatedEvent", "VmPoweredOffEvent"):
        chosen.add("audit")
    return chosen


def fanout_expected(starts_totals: list[tuple[int, int]]) -> dict[str, int]:
    counts = dict.fromkeys((p["name"] for p in FANOUT_PROCESSORS), 0)
    for start, total in starts_totals:
        for n in range(start, start + total):
            for name in fanout_selected(n):
                counts[name] += 1
    return counts


def fanout_config(hook_port: int, metrics_port: int, sinks: list[str], encoding: str) -> str:
    processors = [
        {
            "type": "knative",
            **spec,
            "knative": {"destination": {"uri": sink + "/"}, "encoding": encoding},
        }
        for spec, sink in zip(FANOUT_PROCESSORS, sinks, strict=True)
    ]
    return router_config("bench-fanout", hook_port, metrics_port, eventProcessors=processors)


async def fanout_phase(args: argparse.Namespace, first_sink_port: int) -> dict[str, Any]:
    """The fan-out figures: a router of its own, the phase's sink plus two more sinks."""
    events, rate = args.fanout_events, args.fanout_rate
    sink2_port, sink3_port, hook_port, metrics_port = free_ports(4)
    sinks = [f"http://127.0.0.1:{p}" for p in (first_sink_port, sink2_port, sink3_port)]
    hook = f"http://127.0.0.1:{hook_port}/webhook"
    tmp = Path(tempfile.mkdtemp(prefix="bench-er-fanout-"))
    config = tmp / "config.yaml"
    config.write_text(fanout_config(hook_port, metrics_port, sinks, args.encoding))
    env = dict(os.environ, PYTHONUNBUFFERED="1")
    procs = [start_sink(port, env) for port in (sink2_port, sink3_port)]
    router_cmd = [sys.executable, "-m", "event_router.cli", "-config", str(config)]
    router_proc = subprocess.Popen(  # noqa: ASYNC220 - starting a process does not block
        [*router_cmd, "-log-level", "warn"], env=env, stdout=subprocess.DEVNULL
    )
    procs.append(router_proc)
    try:
        for sink in sinks:
            await wait_http(sink + "/count")
        await wait_http(f"http://127.0.0.1:{metrics_port}/readyz")
        connector = aiohttp.TCPConnector(limit=args.clients)
        async with aiohttp.ClientSession(connector=connector) as session:

            async def reset() -> list[int]:
                counts = []
                for sink in sinks:
                    async with session.get(sink + "/results?reset=1") as r:
                        counts.append(int((await r.json())["count"]))
                return counts

            await reset()  # what the earlier phases left at the first sink
            warm = await post_all(session, hook, 0, 400, args.clients, fanout_request)
            await asyncio.sleep(0.2)
            await reset()

            log(f"fan-out: {events} events to 3 filtered processors, {args.clients} clients")
            cpu0 = cpu_seconds(router_proc.pid)
            t0 = time.monotonic()
            refused = await post_all(session, hook, 1000, events, args.clients, fanout_request)
            elapsed = time.monotonic() - t0
            cpu_us = (cpu_seconds(router_proc.pid) - cpu0) / events * 1e6
            events_per_s = (events - refused) / elapsed
            log(
                f"fan-out: {events - refused} answered 202 in {elapsed:.2f}s = "
                f"{events_per_s:.0f} events/s, {refused} refused, router CPU {cpu_us:.0f} "
                "us/event"
            )

            log(f"fan-out latency: {events} events at {rate:.0f} events/s")
            answered: list[float] = []
            start = 30_000_000
            seconds = (events + 0.5) / rate  # paced() sends int(rate * seconds) = events
            accepted = await paced(session, hook, start, rate, seconds, fanout_request, answered)
            refused += events - accepted
            await asyncio.sleep(0.2)  # a delivery the router made twice would be here now
            got = dict(zip((p["name"] for p in FANOUT_PROCESSORS), await reset(), strict=True))
            rss, hwm = rss_mib(router_proc.pid)
        want = fanout_expected([(1000, events), (start, events)])
        if warm or refused:
            log(f"fan-out: {warm + refused} refused: per-sink counts not checked exactly")
        elif got != want:
            raise RuntimeError(f"fan-out: the sinks got {got}, the filters select {want}")
        p50, p99 = pct(answered, 50), pct(answered, 99)
        log(f"fan-out latency: p50 {p50:.2f} ms, p99 {p99:.2f} ms, at the sinks {got}")
        return {
            "fanout_3_events_per_s": round(events_per_s, 1),
            "fanout_3_p50_ms": round(p50, 2),
            "fanout_3_p99_ms": round(p99, 2),
            "fanout_3_refused": refused,
            "fanout_3_events": events,
            "fanout_3_latency_events": len(answered),
            "fanout_3_rate": rate,
            "fanout_3_deliveries": sum(got.values()),
            "fanout_3_router_cpu_us_per_event": round(cpu_us, 1),
            "fanout_3_rss_mib": round(max(rss, hwm), 1),
            "fanout_3_destinations": "3 knative sinks",
            "fanout_3_load_avg_1m": os.getloadavg()[0],
        }
    finally:
        stop_all(procs)
        shutil.rmtree(tmp, ignore_errors=True)


async def drive(args: argparse.Namespace) -> dict[str, Any]:
    sink_port, hook_port, metrics_port = free_ports(3)  # three distinct ports
    sink = f"http://127.0.0.1:{sink_port}"
    hook = f"http://127.0.0.1:{hook_port}/webhook"
    tmp = Path(tempfile.mkdtemp(prefix="bench-er-"))
    config = tmp / "config.yaml"
    config.write_text(
        router_config(
            "bench",
            hook_port,
            metrics_port,
            eventProcessor={
                "type": "knative",
                "name": "bench-sink",
                "knative": {"destination": {"uri": sink + "/"}, "encoding": args.encoding},
            },
        )
    )
    env = dict(os.environ, PYTHONUNBUFFERED="1")
    sink_proc = start_sink(sink_port, env)
    profile = os.environ.get("BENCH_PROFILE")  # a path: cProfile the router into it
    python = [sys.executable, *(["-m", "cProfile", "-o", profile] if profile else [])]
    if args.max_in_flight == 1:
        # the default, ordered delivery: exactly what a user runs
        command = [*python, "-m", "event_router.cli", "-config", str(config), "-log-level", "warn"]
    else:
        # Router with a wider processor slot (not a config field today)
        command = [*python, "-c", ROUTER_WITH_IN_FLIGHT, str(config), str(args.max_in_flight)]
    router_proc = subprocess.Popen(  # noqa: ASYNC220 - starting a process does not block
        command,
        env=env,
        stdout=subprocess.DEVNULL,
    )
    try:
        await wait_http(sink + "/count")
        await wait_http(f"http://127.0.0.1:{metrics_port}/readyz")
        log(f"router pid {router_proc.pid} ready; sink pid {sink_proc.pid}")
        connector = aiohttp.TCPConnector(limit=args.clients)
        async with aiohttp.ClientSession(connector=connector) as session:
            # warm-up
            await post_all(session, hook, 0, 500, args.clients)
            await wait_count(session, sink, 500, 30)
            async with session.get(sink + "/results?reset=1") as r:
                await r.read()
            rss_idle, _ = rss_mib(router_proc.pid)

            # throughput
            log(f"throughput: {args.events} events, {args.clients} concurrent clients")
            cpu0 = cpu_seconds(router_proc.pid)
            t0 = time.monotonic()
            errors = await post_all(session, hook, 1000, args.events, args.clients)
            t_posted = time.monotonic() - t0
            await wait_count(session, sink, args.events - errors, 120)
            elapsed = time.monotonic() - t0
            cpu_per_event_us = (cpu_seconds(router_proc.pid) - cpu0) / args.events * 1e6
            rss_busy, _ = rss_mib(router_proc.pid)
            async with session.get(sink + "/results?reset=1") as r:
                tp = await r.json()
            events_per_s = tp["count"] / elapsed
            log(
                f"throughput: {tp['count']} delivered in {elapsed:.2f}s "
                f"(posted in {t_posted:.2f}s) = {events_per_s:.0f} events/s, {errors} refused, "
                f"router CPU {cpu_per_event_us:.0f} us/event"
            )

            # latency at a fixed rate
            log(f"latency: {args.rate:.0f} events/s for {args.seconds:.0f}s")
            sent = await paced(session, hook, 10_000_000, args.rate, args.seconds)
            await wait_count(session, sink, sent, 60)
            async with session.get(sink + "/results?reset=1") as r:
                lat = await r.json()
            ms = [v / 1e6 for v in lat["latencies_ns"]]
            p50, p99 = pct(ms, 50), pct(ms, 99)
            log(f"latency: p50 {p50:.2f} ms, p99 {p99:.2f} ms, max {max(ms):.2f} ms")
            # 8 clients, a new connection per request, ack after delivery (issue 15's load)
            nc_events = 2000
            log(f"new connections: {nc_events} events, 8 clients, one connection per request")
            fresh = aiohttp.TCPConnector(limit=8, force_close=True)
            async with aiohttp.ClientSession(connector=fresh) as nc_session:
                t0 = time.monotonic()
                nc_errors = await post_all(nc_session, hook, 20_000_000, nc_events, 8)
                nc_elapsed = time.monotonic() - t0
            await wait_count(session, sink, nc_events - nc_errors, 60)
            async with session.get(sink + "/results?reset=1") as r:
                nc = await r.json()
            nc_ms = [v / 1e6 for v in nc["latencies_ns"]]
            nc_rate = nc["count"] / nc_elapsed
            log(
                f"new connections: {nc_rate:.0f} events/s, p50 {pct(nc_ms, 50):.2f} ms, "
                f"p99 {pct(nc_ms, 99):.2f} ms, {nc_errors} refused"
            )
            rss_after, hwm = rss_mib(router_proc.pid)
        figures = {
            "new_conn_8_events_per_s": round(nc_rate, 1),
            "new_conn_8_p50_ms": round(pct(nc_ms, 50), 2),
            "new_conn_8_p99_ms": round(pct(nc_ms, 99), 2),
            "new_conn_8_refused": nc_errors,
            "events_per_s": round(events_per_s, 1),
            "p50_ms": round(p50, 2),
            "p99_ms": round(p99, 2),
            "mean_ms": round(statistics.fmean(ms), 2),
            "max_ms": round(max(ms), 2),
            "rss_mib": round(max(rss_idle, rss_busy, rss_after), 1),
            "rss_idle_mib": round(rss_idle, 1),
            "rss_peak_mib": round(hwm, 1),
            "router_cpu_us_per_event": round(cpu_per_event_us, 1),
            "max_in_flight": args.max_in_flight,
            "load_avg_1m": os.getloadavg()[0],
            "throughput_events": tp["count"],
            "refused": errors,
            "clients": args.clients,
            "rate": args.rate,
            "latency_events": len(ms),
            "encoding": args.encoding,
            "cpus": os.cpu_count(),
        }
        if args.fanout_events > 0:
            router_proc.terminate()  # idle now; the fan-out phase runs a router of its own
            router_proc.wait(15)
            figures.update(await fanout_phase(args, sink_port))
        return figures
    finally:
        stop_all([router_proc, sink_proc])
        shutil.rmtree(tmp, ignore_errors=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sink", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--events", type=int, default=20_000)
    parser.add_argument("--clients", type=int, default=32)
    parser.add_argument("--rate", type=float, default=500.0)
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--encoding", choices=("binary", "structured"), default="binary")
    parser.add_argument(
        "--max-in-flight",
        type=int,
        default=1,
        help="events the knative processor may deliver at once (1 = ordered, the default)",
    )
    parser.add_argument(
        "--fanout-events",
        type=int,
        default=2000,
        help="events of the fan-out phase, once as fast as the clients can, once paced "
        "(0 = no fan-out phase)",
    )
    parser.add_argument(
        "--fanout-rate",
        type=float,
        default=500.0,
        help="events/s of the fan-out phase's latency run",
    )
    args = parser.parse_args()
    if args.sink:
        run_sink(args.sink)
        return
    figures = asyncio.run(drive(args))
    print(json.dumps(figures))


if __name__ == "__main__":
    main()
