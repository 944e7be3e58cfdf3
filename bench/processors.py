"""Benchmark: events/s through the openfaas and aws_event_bridge processors to local peers.

Peers run in their own processes so they do not share the driver's event loop:

* OpenFaaS: the gateway test server (``tests/support/openfaas_gateway.py``) with one
  function subscribed to the events' subject; sync mode, then async mode.
* EventBridge: ``moto_server`` on 127.0.0.1 with a bus and a rule whose pattern matches
  every event. First a few hundred events with an SQS queue as the rule's target: the
  queue must hold every one of them (checked). Then the throughput run without the target,
  because moto's own in-process SQS delivery costs ~10 ms per entry and would dominate.

The driver hands events to ``process`` the way the router does: in order, at most
``max_in_flight`` at once. events/s = events settled / wall time. For EventBridge the
PutEvents batch sizes actually used are reported (mean and histogram), and the queue's
message count is checked against the events sent.

Progress goes to stderr; the last stdout line is one JSON object of figures.

    .venv/bin/python -m bench.processors [--events 3000]
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import json
import multiprocessing
import os
import shutil
import socket
import subprocess
import sys
import time
import uuid
from pathlib import Path
from typing import Any

from cloudevents.http import CloudEvent

from bench._common import free_port, log
from event_router.core import Processor, RouterContext
from event_router.processors.eventbridge import EventBridgeProcessor
from event_router.processors.openfaas import OpenFaaSProcessor
from tests.support.configs import webhook_context

REGION = "us-west-1"


def config(processor: dict[str, Any]) -> RouterContext:
    return webhook_context("bench", processor)


def make_events(n: int) -> list[CloudEvent]:
    return [
        CloudEvent(
            {
                "id": str(i),
                "source": "https://vcenter.local/sdk",
                "type": "com.vmware.event.router/event",
                "subject": "VmPoweredOnEvent",
                "time": "2026-11-25T12:00:00Z",
            },
            {
                "Key": i,
                "CreatedTime": "2026-11-25T12:00:00Z",
                "UserName": "VSPHERE.LOCAL\\Administrator",
                "Vm": {"Name": f"Linux-{i % 50:02d}", "Vm": {"Type": "VirtualMachine"}},
                "FullFormattedMessage": f"Linux-{i % 50:02d} on esx-01 is powered on",
            },
        )
        for i in range(n)
    ]


async def drive(proc: Processor, events: list[CloudEvent]) -> tuple[float, int]:
    """Hand events to ``process`` like the router: in order, max_in_flight at once."""
    sem = asyncio.Semaphore(max(1, proc.max_in_flight))
    failures = 0
    tasks: list[asyncio.Task[None]] = []

    async def one(e: CloudEvent) -> None:
        nonlocal failures
        try:
            await proc.process(e)
        except Exception:
            failures += 1
        finally:
            sem.release()

    start = time.perf_counter()
    for e in events:
        await sem.acquire()
        tasks.append(asyncio.create_task(one(e)))
    await asyncio.gather(*tasks)
    return time.perf_counter() - start, failures


# --- OpenFaaS -------------------------------------------------------------------------


def run_gateway(port_queue: Any) -> None:
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
    from tests.support.openfaas_gateway import OpenFaaSGateway

    async def main() -> None:
        async with OpenFaaSGateway() as gw:
            gw.deploy("bench-fn", "VmPoweredOnEvent,VmPoweredOffEvent")
            port_queue.put(gw.url)
            while True:
                gw.invocations.clear()  # keep memory flat
                await asyncio.sleep(1)

    asyncio.run(main())


async def bench_openfaas(n: int, async_: bool) -> dict[str, Any]:
    ctx = multiprocessing.get_context("spawn")
    q = ctx.Queue()
    peer = ctx.Process(target=run_gateway, args=(q,), daemon=True)
    peer.start()
    try:
        url = q.get(timeout=30)
        proc = OpenFaaSProcessor(
            config(
                {"type": "openfaas", "name": "faas", "openfaas": {"address": url, "async": async_}}
            )
        )
        await proc.start()
        try:
            await drive(proc, make_events(min(200, n)))  # warm-up
            elapsed, failures = await drive(proc, make_events(n))
        finally:
            await proc.close()
    finally:
        peer.terminate()
        peer.join(5)
    rate = n / elapsed
    log(f"openfaas {'async' if async_ else 'sync'}: {n} events in {elapsed:.2f}s = {rate:.0f}/s")
    return {"events_per_s": round(rate, 1), "failures": failures}


# --- EventBridge (moto server) --------------------------------------------------------


def start_moto(port: int) -> subprocess.Popen[bytes]:
    exe = shutil.which("moto_server", path=str(Path(sys.executable).parent)) or "moto_server"
    peer = subprocess.Popen(
        [exe, "-H", "127.0.0.1", "-p", str(port)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    for _ in range(400):
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.2):
                return peer
        except OSError:
            time.sleep(0.05)
    peer.terminate()
    raise RuntimeError("moto_server did not start")


async def bench_eventbridge(n: int, delivered: int) -> dict[str, Any]:
    import boto3

    port = free_port()
    url = f"http://127.0.0.1:{port}"
    peer = await asyncio.to_thread(start_moto, port)
    try:
        events_api = boto3.client(
            "events",
            region_name=REGION,
            endpoint_url=url,
            aws_access_key_id="bench",
            aws_secret_access_key="bench",
        )
        sqs = boto3.client(
            "sqs",
            region_name=REGION,
            endpoint_url=url,
            aws_access_key_id="bench",
            aws_secret_access_key="bench",
        )
        bus = f"bench-{uuid.uuid4().hex[:6]}"
        events_api.create_event_bus(Name=bus)
        queue_url = sqs.create_queue(QueueName=bus)["QueueUrl"]
        queue_arn = sqs.get_queue_attributes(QueueUrl=queue_url, AttributeNames=["QueueArn"])[
            "Attributes"
        ]["QueueArn"]
        pattern = {"detail": {"subject": [{"prefix": "VmPowered"}]}}
        arn = events_api.put_rule(Name="bench", EventBusName=bus, EventPattern=json.dumps(pattern))[
            "RuleArn"
        ]
        events_api.put_targets(
            Rule="bench", EventBusName=bus, Targets=[{"Id": "q", "Arn": queue_arn}]
        )
        proc = EventBridgeProcessor(
            config(
                {
                    "type": "aws_event_bridge",
                    "name": "eb",
                    "awsEventBridge": {
                        "region": REGION,
                        "eventBus": bus,
                        "ruleARN": arn,
                        "endpoint": url,
                        "auth": {
                            "type": "aws_access_key",
                            "awsAccessKeyAuth": {"accessKey": "bench", "secretKey": "bench"},
                        },
                    },
                }
            )
        )
        await proc.start()
        batches: collections.Counter[int] = collections.Counter()
        original = proc._send

        async def counting(batch: list[Any]) -> None:
            batches[len(batch)] += 1
            await original(batch)

        proc._send = counting  # type: ignore[method-assign]
        try:
            # phase 1: with the SQS target, check every entry was matched and delivered
            _, check_failures = await drive(proc, make_events(delivered))
            attrs = sqs.get_queue_attributes(
                QueueUrl=queue_url, AttributeNames=["ApproximateNumberOfMessages"]
            )["Attributes"]
            in_queue = int(attrs["ApproximateNumberOfMessages"])
            log(f"eventbridge: {delivered} events sent, {in_queue} arrived in the SQS queue")
            # phase 2: throughput; without a target moto only accepts and matches entries
            # (moto's in-process SQS delivery costs ~10 ms per entry and would be measured)
            events_api.remove_targets(Rule="bench", EventBusName=bus, Ids=["q"])
            # idle latency: one event at a time, no batch to wait for
            lat = []
            for e in make_events(30):
                t0 = time.perf_counter()
                await proc.process(e)
                lat.append(time.perf_counter() - t0)
            idle_ms = 1000 * sum(lat) / len(lat)
            log(f"eventbridge: one event at a time takes {idle_ms:.1f} ms (no lingering)")
            batches.clear()
            calls_before = proc.counters["put_events_calls"]
            elapsed, failures = await drive(proc, make_events(n))
            calls = proc.counters["put_events_calls"] - calls_before
        finally:
            await proc.close()
    finally:
        peer.terminate()
        await asyncio.to_thread(peer.wait, 5)
    rate = n / elapsed
    mean = n / calls if calls else 0.0
    log(
        f"eventbridge: {n} events in {elapsed:.2f}s = {rate:.0f}/s, {calls} PutEvents calls, "
        f"mean batch {mean:.2f}, in queue {in_queue}"
    )
    return {
        "events_per_s": round(rate, 1),
        "mean_batch": round(mean, 2),
        "idle_latency_ms": round(idle_ms, 2),
        "put_events_calls": calls,
        "batch_histogram": {str(k): v for k, v in sorted(batches.items())},
        "delivered_to_queue": in_queue,
        "expected_in_queue": delivered,
        "failures": failures + check_failures,
    }


async def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=3000)
    args = parser.parse_args(argv)
    n = args.events
    log(f"{n} events per run; cpus={os.cpu_count()}")
    sync = await bench_openfaas(n, async_=False)
    async_ = await bench_openfaas(n, async_=True)
    eb = await bench_eventbridge(n, delivered=min(n, 300))
    return {
        "events": n,
        "openfaas_events_per_s": sync["events_per_s"],
        "openfaas_async_events_per_s": async_["events_per_s"],
        "openfaas_failures": sync["failures"] + async_["failures"],
        "openfaas_max_in_flight": OpenFaaSProcessor.max_in_flight,
        "eventbridge_events_per_s": eb["events_per_s"],
        "eventbridge_mean_batch": eb["mean_batch"],
        "eventbridge_idle_latency_ms": eb["idle_latency_ms"],
        "eventbridge_put_events_calls": eb["put_events_calls"],
        "eventbridge_batch_histogram": eb["batch_histogram"],
        "eventbridge_delivered_to_queue": eb["delivered_to_queue"],
        "eventbridge_expected_in_queue": eb["expected_in_queue"],
        "eventbridge_failures": eb["failures"],
        "eventbridge_max_in_flight": EventBridgeProcessor.max_in_flight,
    }


def problems(figures: dict[str, Any]) -> list[str]:
    """What makes the run invalid: failed events, or events missing from the SQS target."""
    found = []
    for key in ("openfaas_failures", "eventbridge_failures"):
        if figures[key]:
            found.append(f"{key} = {figures[key]}")
    if figures["eventbridge_delivered_to_queue"] != figures["eventbridge_expected_in_queue"]:
        found.append(
            f"{figures['eventbridge_delivered_to_queue']} events in the SQS queue, "
            f"expected {figures['eventbridge_expected_in_queue']}"
        )
    return found


if __name__ == "__main__":
    figures = asyncio.run(main())
    print(json.dumps(figures))
    if bad := problems(figures):
        log("FAILED: " + "; ".join(bad))
        sys.exit(1)
