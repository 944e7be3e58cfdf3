"""Benchmark: the horizon provider against the Horizon REST test server (one process).

Phases:

1. backlog: ``--events`` audit events spread over the last 30 minutes and a checkpoint
   from before them (a restart after downtime); time until every event was published,
   events/s, and the number of audit-events requests (page size 500, windows of at most
   5000 events, so memory stays bounded).
2. live latency at the default poll settings (``pollIntervalSeconds: 1``, idle back-off to
   5 s): ``--live`` events added every 0.7 s; latency = publish time - time added.
3. first event after ``--idle`` seconds of silence (the back-off has reached 5 s).

The provider and the test server share one event loop (and this 2-core machine), so the
figures are a floor. Progress goes to stderr; the last stdout line is one JSON object.

    .venv/bin/python -m bench.horizon [--events 20000] [--live 10] [--idle 12]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

from cloudevents.http import CloudEvent

from bench._common import log
from event_router.config.models import RouterConfig
from event_router.core import RouterContext
from event_router.providers.horizon import HorizonProvider
from tests.support.horizon_server import HorizonServer, horizon_auth

PASSWORD = "bench-P@ss"


class TimingPublisher:
    def __init__(self) -> None:
        self.published: dict[str, float] = {}
        self.calls = 0
        self.changed = asyncio.Event()

    async def publish(self, event: CloudEvent) -> asyncio.Future[bool]:
        self.calls += 1
        self.published.setdefault(event["id"], time.monotonic())
        self.changed.set()
        ticket: asyncio.Future[bool] = asyncio.get_running_loop().create_future()
        ticket.set_result(True)
        return ticket

    async def wait_for(self, count: int, within: float) -> None:
        deadline = time.monotonic() + within
        while len(self.published) < count:
            self.changed.clear()
            left = deadline - time.monotonic()
            if left <= 0:
                raise TimeoutError(f"published {len(self.published)} of {count}")
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.changed.wait(), left)


def config(url: str, checkpoint_dir: str, poll: float) -> RouterConfig:
    return RouterConfig.model_validate(
        {
            "apiVersion": "event-router.vmware.com/v1alpha1",
            "kind": "RouterConfig",
            "metadata": {"name": "bench"},
            "eventProvider": {
                "type": "horizon",
                "name": "horizon",
                "horizon": {
                    "address": url,
                    "checkpoint": True,
                    "checkpointDir": checkpoint_dir,
                    "pollIntervalSeconds": poll,
                    "auth": horizon_auth(PASSWORD),
                },
            },
            "eventProcessor": {
                "type": "knative",
                "name": "kn",
                "knative": {"destination": {"uri": "http://127.0.0.1:9/"}},
            },
        }
    )


async def drive(args: argparse.Namespace) -> dict[str, Any]:
    figures: dict[str, Any] = {"cpus": os.cpu_count()}
    with tempfile.TemporaryDirectory() as tmp:
        async with HorizonServer(password=PASSWORD) as server:
            now = int(time.time() * 1000)
            start = now - 30 * 60 * 1000
            for i in range(args.events):
                server.add_event(time_ms=start + 1 + (i * 30 * 60 * 1000) // args.events)
            checkpoint = json.dumps({"lastEventTime": start, "idsAtLastTime": []})
            await asyncio.to_thread(Path(tmp, "horizon-127.0.0.1.json").write_text, checkpoint)
            provider = HorizonProvider(RouterContext(config(server.url, tmp, 1.0)))
            publisher = TimingPublisher()
            log(f"backlog: {args.events} events")
            t0 = time.monotonic()
            task = asyncio.create_task(provider.run(publisher))
            try:
                await publisher.wait_for(args.events, 300)
                backlog_s = time.monotonic() - t0
                queries = len(server.event_queries())
                figures |= {
                    "backlog_events": args.events,
                    "backlog_seconds": round(backlog_s, 3),
                    "backlog_events_per_s": round(args.events / backlog_s),
                    "backlog_requests": queries,
                }
                log(f"backlog done in {backlog_s:.2f}s with {queries} requests")

                log(f"live: {args.live} events every 0.7s (poll 1s, idle back-off to 5s)")
                added: dict[str, float] = {}
                for _ in range(args.live):
                    e = server.add_event()
                    added[str(e["id"])] = time.monotonic()
                    await asyncio.sleep(0.7)
                await publisher.wait_for(args.events + args.live, 30)
                lat = [publisher.published[i] - t for i, t in added.items()]
                figures |= {
                    "live_latency_p50_s": round(statistics.median(lat), 3),
                    "live_latency_max_s": round(max(lat), 3),
                }
                log(f"idle {args.idle}s, then one event")
                await asyncio.sleep(args.idle)
                e = server.add_event()
                t_add = time.monotonic()
                await publisher.wait_for(args.events + args.live + 1, 30)
                figures["after_idle_latency_s"] = round(
                    publisher.published[str(e["id"])] - t_add, 3
                )
                figures["duplicates"] = publisher.calls - len(publisher.published)
                figures["idle_backoff_max_s"] = provider.idle_max_delay
            finally:
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task
                await provider.close()
    return figures


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    parser.add_argument("--events", type=int, default=20_000)
    parser.add_argument("--live", type=int, default=10)
    parser.add_argument("--idle", type=float, default=12.0)
    args = parser.parse_args()
    print(json.dumps(asyncio.run(drive(args))))


if __name__ == "__main__":
    main()
