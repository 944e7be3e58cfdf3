"""Horizon test server -> Router (horizon provider) -> knative processor -> CloudEventSink.

Everything over real HTTP on 127.0.0.1: the provider polls the Horizon REST test server,
the router core hands the events to the knative processor, which posts them to the
aiohttp CloudEvents sink. Checks what a user sees: the events arrive in order with the
documented attributes, a checkpoint is written on stop, and an event the sink refused
(after the processor's retries) is not passed by the checkpoint and is re-sent after a
restart.
"""

from __future__ import annotations

import asyncio
import json
import sys
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import pytest

from event_router.config.loader import parse_config
from event_router.config.models import RouterConfig
from event_router.core import RouterContext
from event_router.delivery import RetryPolicy
from event_router.processors.knative import KnativeProcessor
from event_router.providers.horizon import HorizonProvider
from event_router.router import ProcessorSlot, Router
from tests.support.horizon_server import HorizonServer, horizon_auth
from tests.support.sink import CloudEventSink

pytestmark = pytest.mark.timeout(60)

FAST = RetryPolicy(attempts=2, base_delay=0.01, max_delay=0.02)
PASSWORD = "Horiz0n-e2e!"


def make_config(horizon_url: str, sink_url: str, checkpoint_dir: Path) -> RouterConfig:
    return parse_config(
        {
            "apiVersion": "event-router.vmware.com/v1alpha1",
            "kind": "RouterConfig",
            "metadata": {"name": "horizon-e2e"},
            "eventProvider": {
                "type": "horizon",
                "name": "horizon",
                "horizon": {
                    "address": horizon_url,
                    "checkpoint": True,
                    "checkpointDir": str(checkpoint_dir),
                    "pollIntervalSeconds": 0.05,
                    "auth": horizon_auth(PASSWORD),
                },
            },
            "eventProcessor": {
                "type": "knative",
                "name": "kn",
                "knative": {"destination": {"uri": sink_url}, "encoding": "structured"},
            },
            "checkpoint": {"periodSeconds": 0.1},
        }
    )


@asynccontextmanager
async def running(config: RouterConfig) -> AsyncIterator[Router]:
    context = RouterContext(config)
    provider = HorizonProvider(context)
    provider.idle_max_delay = 0.2
    provider.error_max_delay = 0.2
    router = Router(
        context,
        provider=provider,
        processors=[ProcessorSlot(KnativeProcessor(context, retry=FAST), name="kn")],
    )
    await router.start()
    try:
        await router.wait_ready(10)
        yield router
    finally:
        await router.stop(timeout=5)


async def test_horizon_events_reach_the_sink_in_order(tmp_path: Path) -> None:
    async with HorizonServer(password=PASSWORD) as server, CloudEventSink() as sink:
        server.add_event("VLSI_USERLOGGEDIN", time_ms=1_600_000_000_000)  # history: not sent
        async with running(make_config(server.url, sink.url, tmp_path)) as router:
            t = int(time.time() * 1000)
            sent = [
                server.add_event("VLSI_USERLOGGEDIN", time_ms=t, machine_dns_name="d1.corp"),
                server.add_event("BROKER_MACHINE_ALLOCATED", time_ms=t + 1),
                server.add_event("VLSI_USERLOGGEDOUT", time_ms=t + 1),
            ]
            got = await sink.wait_for(3, timeout=10)
            stats = router.stats()
        assert [e["id"] for e in got] == [str(e["id"]) for e in sent]
        first = got[0]
        assert first["source"] == server.url
        assert first["subject"] == "VLSI_USERLOGGEDIN"
        assert first["type"] == "com.vmware.event.router/horizon.vlsi_userloggedin.v0"
        assert first.data["machine_dns_name"] == "d1.corp" and first.data["time"] == t
        assert json.dumps(stats)  # the /stats document is JSON
        saved = json.loads((tmp_path / "horizon-127.0.0.1.json").read_text())
        assert saved["lastEventTime"] == t + 1
        assert saved["idsAtLastTime"] == [sent[1]["id"], sent[2]["id"]]
        assert server.logouts == 1


async def test_an_event_the_sink_refuses_for_a_while_arrives_without_a_restart(
    tmp_path: Path,
) -> None:
    """The sink answers 503 for two of the processor's retry rounds: the router retries on
    until it takes the event, the stream waits behind it (order kept), and the checkpoint
    moves over it only then; nothing is left for a restart to replay."""
    async with HorizonServer(password=PASSWORD) as server, CloudEventSink() as sink:
        config = make_config(server.url, sink.url, tmp_path)
        async with running(config):
            t = int(time.time() * 1000)
            ok = server.add_event(time_ms=t)
            await sink.wait_for(1, timeout=10)
            sink.fail_next(2 * FAST.attempts, status=503)
            refused = server.add_event(time_ms=t + 5)
            later = server.add_event(time_ms=t + 9)
            got = await sink.wait_for(3, timeout=20)
        assert [e["id"] for e in got] == [str(ok["id"]), str(refused["id"]), str(later["id"])]
        assert sink.requests == 3 + 2 * FAST.attempts
        saved = json.loads((tmp_path / "horizon-127.0.0.1.json").read_text())
        assert saved["lastEventTime"] == t + 9 and saved["idsAtLastTime"] == [later["id"]]


async def test_cli_exits_non_zero_on_wrong_credentials(tmp_path: Path) -> None:
    """What a user running ``event-router -config`` sees: a clear error, no password."""
    wrong = "Wr0ng-Passw0rd!"
    async with HorizonServer(password=PASSWORD) as server:
        config = make_config(server.url, "http://127.0.0.1:9/", tmp_path)
        data = config.model_dump(mode="json", by_alias=True, exclude_none=True)
        auth = data["eventProvider"]["horizon"]["auth"]["activeDirectoryAuth"]
        auth["password"] = wrong
        path = tmp_path / "config.json"
        await asyncio.to_thread(path.write_text, json.dumps(data))
        proc = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "event_router.cli",
            "-config",
            str(path),
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
        )
        out, err = await asyncio.wait_for(proc.communicate(), 30)
    text = (out + err).decode()
    assert proc.returncode not in (0, None), text
    assert "login failed for user 'administrator' in domain 'corp'" in text
    assert wrong not in text and PASSWORD not in text
    assert server.failed_logins == 1
