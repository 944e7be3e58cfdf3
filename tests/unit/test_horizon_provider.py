"""The horizon provider against a Horizon REST test server (tests/support/horizon_server.py).

Each test runs the real provider (aiohttp over TCP to 127.0.0.1) with a small Publisher
(tests/support/publisher.py) that collects the CloudEvents and resolves their tickets
(True = delivered, False = not delivered, to check that checkpoints never pass an
undelivered event).
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import json
import logging
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from cloudevents.http import CloudEvent
from pydantic import SecretStr, ValidationError

from event_router.checkpoints import Checkpoint
from event_router.config.models import (
    ActiveDirectoryAuth,
    Auth,
    Certificates,
    HorizonConfig,
    RouterConfig,
)
from event_router.core import RouterContext
from event_router.providers import provider_class
from event_router.providers.horizon import (
    Cursor,
    HorizonLoginError,
    HorizonProvider,
    HorizonTLSError,
    between_filter,
    new_events,
    validate_config,
)
from tests.support.horizon_server import HorizonServer, horizon_auth
from tests.support.polling import wait_until
from tests.support.publisher import CollectingPublisher as BasePublisher
from tests.support.tls import make_tls

pytestmark = pytest.mark.timeout(60)

PASSWORD = "S3cr3t-P@ss!"


def make_config(
    address: str,
    *,
    password: str = PASSWORD,
    username: str = "administrator",
    checkpoint_dir: Path | None = None,
    max_age: float = 3600.0,
    type_style: str = "router",
) -> RouterConfig:
    horizon: dict[str, Any] = {
        "address": address,
        "insecureSSL": False,
        "pollIntervalSeconds": 0.05,
        "typeStyle": type_style,
        "auth": horizon_auth(password, username=username),
    }
    if checkpoint_dir is not None:
        horizon |= {"checkpoint": True, "checkpointDir": str(checkpoint_dir)}
    return RouterConfig.model_validate(
        {
            "apiVersion": "event-router.vmware.com/v1alpha1",
            "kind": "RouterConfig",
            "metadata": {"name": "horizon-test"},
            "eventProvider": {"type": "horizon", "name": "horizon", "horizon": horizon},
            "eventProcessor": {
                "type": "knative",
                "name": "sink",
                "knative": {"destination": {"uri": "http://127.0.0.1:1/"}},
            },
            "checkpoint": {"periodSeconds": 0.1, "maxAgeSeconds": max_age},
        }
    )


class CollectingPublisher(BasePublisher):
    """The shared one, plus waiting for a number of events."""

    @property
    def ids(self) -> list[int]:
        return [int(e["id"]) for e in self.events]

    async def wait_for(self, count: int, within: float = 10.0) -> list[CloudEvent]:
        async def _wait() -> None:
            while len(self.events) < count:
                self.changed.clear()
                await self.changed.wait()

        try:
            await asyncio.wait_for(_wait(), within)
        except TimeoutError:
            raise AssertionError(
                f"got {len(self.events)} events, wanted {count}: {self.ids}"
            ) from None
        return self.events


def make_provider(config: RouterConfig, **context: Any) -> HorizonProvider:
    provider = HorizonProvider(RouterContext(config=config, **context))
    provider.idle_max_delay = 0.2
    provider.error_max_delay = 0.2
    return provider


@contextlib.asynccontextmanager
async def running(
    provider: HorizonProvider, publisher: CollectingPublisher
) -> AsyncIterator[asyncio.Task[None]]:
    task = asyncio.create_task(provider.run(publisher))
    try:
        yield task
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
        await provider.close()


async def quiet_polls(server: HorizonServer, n: int = 3) -> None:
    """Wait until the provider made ``n`` more audit-event queries (so it saw the state)."""
    start = len(server.event_queries())
    await wait_until(lambda: len(server.event_queries()) >= start + n)


# --- pure window logic ------------------------------------------------------------------


def test_new_events_drop_overlap_and_sort_oldest_first() -> None:
    window = [  # newest first, as the API answers, with a repeated id (shifted page)
        {"id": 7, "time": 300},
        {"id": 6, "time": 200},
        {"id": 5, "time": 200},
        {"id": 6, "time": 200},
        {"id": 4, "time": 100},
        {"id": 3, "time": 100},
    ]
    fresh = new_events(window, Cursor(100, [3]))
    assert [e["id"] for e in fresh] == [4, 5, 6, 7]
    assert new_events(window, Cursor(300, [7])) == []


def test_between_filter_is_horizon_json() -> None:
    assert json.loads(between_filter(1, 2)) == {
        "type": "Between",
        "name": "time",
        "fromValue": 1,
        "toValue": 2,
    }


def test_registry_resolves_horizon() -> None:
    assert provider_class("horizon") is HorizonProvider


def _raw_horizon(address: str, username: str) -> HorizonConfig:
    """A HorizonConfig that skipped the model's validation (as a hand-built context could)."""
    ad = ActiveDirectoryAuth.model_construct(
        domain="corp", username=username, password=SecretStr(PASSWORD)
    )
    auth = Auth.model_construct(type="active_directory", activeDirectoryAuth=ad)
    return HorizonConfig.model_construct(address=address, auth=auth)


def test_upn_username_is_rejected_with_the_field_name() -> None:
    # the config models reject it at load time ...
    with pytest.raises(ValidationError, match=r"activeDirectoryAuth.username: UPN"):
        make_config("https://horizon.corp.local", username="alice@corp.local")
    # ... and the provider's own check names the field, the value and what is allowed
    (message,) = validate_config(_raw_horizon("https://horizon.corp.local", "alice@corp.local"))
    assert message.startswith("eventProvider.horizon.auth.activeDirectoryAuth.username: UPN")
    assert "'alice@corp.local'" in message and "'alice'" in message
    assert PASSWORD not in message


def test_bad_address_is_rejected() -> None:
    (message,) = validate_config(_raw_horizon("horizon.corp.local", "administrator"))
    assert message.startswith("eventProvider.horizon.address: ")
    assert "'horizon.corp.local'" in message and "https://" in message
    assert validate_config(_raw_horizon("https://horizon.corp.local:8443", "administrator")) == []


# --- against the test server --------------------------------------------------------------


async def test_first_start_streams_only_new_events_in_order() -> None:
    async with HorizonServer(password=PASSWORD) as server:
        old = [server.add_event(time_ms=1_600_000_000_000 + i) for i in range(3)]
        provider = make_provider(make_config(server.url))
        publisher = CollectingPublisher()
        async with running(provider, publisher):
            await wait_until(lambda: provider.ready)
            await quiet_polls(server)
            now = int(time.time() * 1000)
            new = [
                server.add_event("VLSI_USERLOGGEDIN", time_ms=now),
                server.add_event("BROKER_USERLOGGEDOUT", time_ms=now + 1),
                server.add_event("VLSI_USERLOGGEDIN", time_ms=now + 1),
                server.add_event("ADMIN_ADDED", time_ms=now + 5),
            ]
            await publisher.wait_for(4)
            await quiet_polls(server)
        assert publisher.ids == [e["id"] for e in new]
        assert not set(publisher.ids) & {e["id"] for e in old}
        ce = publisher.events[1]
        assert ce["source"] == server.url
        assert ce["subject"] == "BROKER_USERLOGGEDOUT"
        assert ce["type"] == "com.vmware.event.router/horizon.broker_userloggedout.v0"
        assert ce["time"].endswith("Z") and len(ce["time"]) == len("2021-07-01T12:00:00.123Z")
        assert ce.data["id"] == new[1]["id"] and ce.data["time"] == now + 1
        assert server.logins == 1 and server.logouts == 1
        assert len(publisher.events) == 4


async def test_paging_and_equal_timestamps_across_polls_no_duplicates() -> None:
    async with HorizonServer(password=PASSWORD) as server:
        provider = make_provider(make_config(server.url, type_style="sources"))
        provider.page_size = 3
        publisher = CollectingPublisher()
        t = int(time.time() * 1000)
        async with running(provider, publisher):
            await wait_until(lambda: provider.ready)
            first = [server.add_event(time_ms=t) for _ in range(7)]
            await publisher.wait_for(7)
            await quiet_polls(server)
            # more events in the same millisecond, and one later: overlapping windows
            second = [server.add_event(time_ms=t) for _ in range(4)]
            second.append(server.add_event(time_ms=t + 2))
            await publisher.wait_for(12)
            await quiet_polls(server, 5)
        assert publisher.ids == [e["id"] for e in first + second]
        assert publisher.events[0]["type"] == "com.vmware.horizon.vlsi_userloggedin.v0"
        pages = {q.query.get("page") for q in server.event_queries()}
        assert {"1", "2", "3", "4"} <= pages  # paging used (12 events at the same time, size 3)


async def test_events_added_between_pages_of_one_poll_are_neither_lost_nor_repeated() -> None:
    """Newest first: events that arrive while the provider pages through a window push
    older ones to later pages, so the next page repeats some; none is delivered twice, none
    is lost, the order stays oldest first."""
    async with HorizonServer(password=PASSWORD) as server:
        provider = make_provider(make_config(server.url))
        provider.page_size = 3
        publisher = CollectingPublisher()
        t = int(time.time() * 1000)
        late: list[dict[str, Any]] = []

        def busy_horizon(request: Any) -> None:
            if request.query.get("page") == "2" and not late:
                late.extend(server.add_event(time_ms=t + 10 + i) for i in range(2))
                late.append(server.add_event(time_ms=t + 5))  # same ms as an earlier one

        async with running(provider, publisher):
            await wait_until(lambda: provider.ready)
            await quiet_polls(server)
            server.on_audit_query = busy_horizon
            early = [server.add_event(time_ms=t + i) for i in range(6)]
            await publisher.wait_for(9)
            await quiet_polls(server)
        assert late, "events were added between two pages"
        expected = sorted(early + late, key=lambda e: (e["time"], e["id"]))
        assert publisher.ids == [e["id"] for e in expected]


async def test_access_token_expiry_refreshes_without_login() -> None:
    async with HorizonServer(password=PASSWORD) as server:
        provider = make_provider(make_config(server.url))
        publisher = CollectingPublisher()
        async with running(provider, publisher):
            await wait_until(lambda: provider.ready)
            server.expire_access_tokens()
            e = server.add_event()
            await publisher.wait_for(1)
        assert publisher.ids == [e["id"]]
        assert server.refreshes >= 1
        assert server.logins == 1
        assert [q.status for q in server.event_queries()].count(401) >= 1


async def test_refresh_token_expiry_logs_in_again() -> None:
    async with HorizonServer(password=PASSWORD) as server:
        provider = make_provider(make_config(server.url))
        publisher = CollectingPublisher()
        async with running(provider, publisher):
            await wait_until(lambda: provider.ready)
            server.expire_access_tokens()
            server.expire_refresh_tokens()
            e = server.add_event()
            await publisher.wait_for(1)
            await quiet_polls(server)
        assert publisher.ids == [e["id"]]
        assert server.logins == 2
        assert any(r.path == "/rest/refresh" and r.status == 400 for r in server.requests)


async def test_tokens_expiring_by_lifetime_while_streaming_lose_nothing() -> None:
    """Short token lifetimes (Horizon: 30 min / 8 h): the provider refreshes and logs in
    again as they run out, with no error backoff, no lost or repeated event."""
    async with HorizonServer(
        password=PASSWORD, access_token_lifetime=0.2, refresh_token_lifetime=0.7
    ) as server:
        provider = make_provider(make_config(server.url))
        provider.error_max_delay = 5.0  # an error path would show as a stall
        publisher = CollectingPublisher()
        async with running(provider, publisher):
            await wait_until(lambda: provider.ready)
            added = []
            for _ in range(25):
                added.append(server.add_event())
                await asyncio.sleep(0.1)
                assert provider.ready
            await publisher.wait_for(len(added), within=2.0)
            await quiet_polls(server)
        assert publisher.ids == [e["id"] for e in added]
        assert server.refreshes >= 2 and server.logins >= 3, (server.refreshes, server.logins)
        statuses = [q.status for q in server.event_queries()]
        assert 401 in statuses  # tokens did expire under the provider
        # apart from those 401s every query succeeded: no error answers, no error path
        assert set(statuses) == {200, 401}, statuses


async def test_restart_with_checkpoint_loses_nothing(tmp_path: Path) -> None:
    async with HorizonServer(password=PASSWORD) as server:
        config = make_config(server.url, checkpoint_dir=tmp_path)
        first = CollectingPublisher()
        provider = make_provider(config)
        async with running(provider, first):
            await wait_until(lambda: provider.ready)
            t = int(time.time() * 1000)
            delivered = [server.add_event(time_ms=t), server.add_event(time_ms=t + 1)]
            delivered.append(server.add_event(time_ms=t + 1))
            await first.wait_for(3)
        assert server.logouts == 1
        path = tmp_path / "horizon-127.0.0.1.json"
        saved = json.loads(path.read_text())
        assert saved["lastEventTime"] == t + 1
        assert saved["idsAtLastTime"] == [delivered[1]["id"], delivered[2]["id"]]
        assert saved["address"] == server.url

        # while the router is down: one more in the checkpoint's millisecond, then later ones
        missed = [
            server.add_event(time_ms=t + 1),
            server.add_event(time_ms=t + 3),
            server.add_event(time_ms=t + 3),
            server.add_event(time_ms=t + 9),
        ]
        second = CollectingPublisher()
        provider = make_provider(config)
        async with running(provider, second):
            await second.wait_for(4)
            await quiet_polls(server)
        assert second.ids == [e["id"] for e in missed]
        assert json.loads(path.read_text())["lastEventTime"] == t + 9


async def test_checkpoint_never_passes_an_undelivered_event(tmp_path: Path) -> None:
    async with HorizonServer(password=PASSWORD) as server:
        config = make_config(server.url, checkpoint_dir=tmp_path)
        t = int(time.time() * 1000)
        events: list[dict[str, Any]] = []
        failing = CollectingPublisher(deliver=lambda ce: int(ce["id"]) != events[1]["id"])
        provider = make_provider(config)
        async with running(provider, failing):
            await wait_until(lambda: provider.ready)
            events.extend(server.add_event(time_ms=t + i) for i in range(3))
            await failing.wait_for(3)
            await asyncio.sleep(0.3)  # several checkpoint periods
        saved = json.loads((tmp_path / "horizon-127.0.0.1.json").read_text())
        assert saved["lastEventTime"] == t  # held before the undelivered event
        assert saved["idsAtLastTime"] == [events[0]["id"]]

        retry = CollectingPublisher()
        provider = make_provider(config)
        async with running(provider, retry):
            await retry.wait_for(2)
            await quiet_polls(server)
        assert retry.ids == [events[1]["id"], events[2]["id"]]


async def test_checkpoint_store_factory_is_used_when_set() -> None:
    class MemoryStore:
        def __init__(self) -> None:
            self.saved: list[Checkpoint] = []

        async def load(self) -> Checkpoint | None:
            return self.saved[-1] if self.saved else None

        async def save(self, checkpoint: Checkpoint) -> None:
            self.saved.append(checkpoint)

        def describe(self) -> str:
            return "memory"

    stores: dict[str, MemoryStore] = {}

    def factory(key: str) -> MemoryStore:
        return stores.setdefault(key, MemoryStore())

    async with HorizonServer(password=PASSWORD) as server:
        # checkpoint: false -> no store at all, even with a factory
        unused = make_provider(make_config(server.url), checkpoint_store_factory=factory)
        assert unused.store is None and not stores
        config = make_config(server.url, checkpoint_dir=Path("/nonexistent/not-used"))
        provider = make_provider(config, checkpoint_store_factory=factory)
        publisher = CollectingPublisher()
        async with running(provider, publisher):
            await wait_until(lambda: provider.ready)
            e = server.add_event()
            await publisher.wait_for(1)
    assert list(stores) == ["horizon-127.0.0.1"]
    assert stores["horizon-127.0.0.1"].saved[-1]["idsAtLastTime"] == [e["id"]]


async def test_checkpoint_store_outage_at_startup_is_retried(tmp_path: Path) -> None:
    class FlakyStore:
        def __init__(self) -> None:
            self.loads = 0
            self.saved: list[Checkpoint] = []

        async def load(self) -> Checkpoint | None:
            self.loads += 1
            if self.loads <= 2:
                raise ConnectionRefusedError("API server not reachable")
            return None

        async def save(self, checkpoint: Checkpoint) -> None:
            self.saved.append(checkpoint)

        def describe(self) -> str:
            return "configmap test/flaky"

    store = FlakyStore()
    async with HorizonServer(password=PASSWORD) as server:
        config = make_config(server.url, checkpoint_dir=tmp_path)
        provider = make_provider(config, checkpoint_store_factory=lambda _key: store)
        publisher = CollectingPublisher()
        async with running(provider, publisher) as task:
            await wait_until(lambda: provider.ready)
            assert not task.done()
            e = server.add_event()
            await publisher.wait_for(1)
        assert store.loads == 3
        assert store.saved[-1]["idsAtLastTime"] == [e["id"]]


async def test_resume_is_limited_to_max_age(tmp_path: Path) -> None:
    async with HorizonServer(password=PASSWORD) as server:
        now = int(time.time() * 1000)
        too_old = server.add_event(time_ms=now - 7_200_000 + 10)
        recent = server.add_event(time_ms=now - 30_000)
        (tmp_path / "horizon-127.0.0.1.json").write_text(
            json.dumps({"lastEventTime": now - 7_200_000, "idsAtLastTime": []})
        )
        config = make_config(server.url, checkpoint_dir=tmp_path, max_age=60)
        publisher = CollectingPublisher()
        provider = make_provider(config)
        async with running(provider, publisher):
            await publisher.wait_for(1)
            await quiet_polls(server)
        assert publisher.ids == [recent["id"]]
        assert too_old["id"] not in publisher.ids


async def test_backlog_larger_than_a_window_is_streamed_in_order(tmp_path: Path) -> None:
    async with HorizonServer(password=PASSWORD) as server:
        base = int(time.time() * 1000) - 1_800_000  # downtime of 30 minutes
        (tmp_path / "horizon-127.0.0.1.json").write_text(
            json.dumps({"lastEventTime": base, "idsAtLastTime": []})
        )
        backlog = [server.add_event(time_ms=base + 1 + i * 50_000) for i in range(30)]
        backlog += [server.add_event(time_ms=base + 500) for _ in range(6)]  # one busy ms
        provider = make_provider(make_config(server.url, checkpoint_dir=tmp_path))
        provider.page_size = 2
        provider.max_window_events = 4
        publisher = CollectingPublisher()
        async with running(provider, publisher):
            await publisher.wait_for(len(backlog))
            await quiet_polls(server)
            # caught up: live events (now, well after the backlog) still arrive
            live = [server.add_event(), server.add_event()]
            await publisher.wait_for(len(backlog) + 2)
            await quiet_polls(server)
        in_order = sorted(backlog, key=lambda e: (e["time"], e["id"])) + live
        assert publisher.ids == [e["id"] for e in in_order]
        # no page ever held more than the window allowed, so memory stayed bounded
        assert all(int(q.query.get("size", 0)) <= 2 for q in server.event_queries())


async def test_server_down_for_a_while_then_resumes(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    async with HorizonServer(password=PASSWORD) as server:
        provider = make_provider(make_config(server.url))
        publisher = CollectingPublisher()
        async with running(provider, publisher) as task:
            await wait_until(lambda: provider.ready)
            before = server.add_event()
            await publisher.wait_for(1)
            await server.stop()
            await wait_until(lambda: not provider.ready)
            await asyncio.sleep(0.5)  # several failed polls
            assert not task.done()  # never exits on network errors
            during = [server.add_event(), server.add_event()]
            await server.start()
            await publisher.wait_for(3)
            await wait_until(lambda: provider.ready)
            after = server.add_event()
            await publisher.wait_for(4)
            await quiet_polls(server)
        assert publisher.ids == [e["id"] for e in [before, *during, after]]
        assert "reachable again" in caplog.text


async def test_idle_polls_back_off_and_the_first_event_resets_the_interval() -> None:
    """Nothing new: the pause between polls doubles from pollIntervalSeconds up to the
    idle bound (5 s by default) and no further; an event brings it back to the interval."""
    assert HorizonConfig.model_fields["pollIntervalSeconds"].default == 1.0
    assert HorizonProvider.idle_max_delay == 5.0
    async with HorizonServer(password=PASSWORD) as server:
        provider = make_provider(make_config(server.url))  # interval 0.05 s
        provider.idle_max_delay = 0.4
        publisher = CollectingPublisher()
        async with running(provider, publisher):
            await wait_until(lambda: provider.ready)
            start = len(server.event_queries())
            await asyncio.sleep(2.0)  # idle
            idle = [q.at for q in server.event_queries()[start:]]
            gaps = [b - a for a, b in itertools.pairwise(idle)]
            assert len(gaps) >= 3, gaps
            assert all(g >= 0.09 for g in gaps), gaps  # never the 0.05 s interval when idle
            assert max(gaps) >= 0.35, gaps  # grew to the bound ...
            assert all(g <= 0.4 + 0.25 for g in gaps), gaps  # ... and not beyond it
            assert len(gaps) <= 2.0 / 0.1, gaps
            server.add_event()
            await publisher.wait_for(1)
            delivered_at = time.monotonic()
            await wait_until(lambda: server.event_queries()[-1].at > delivered_at + 0.01)
            after = [q.at for q in server.event_queries() if q.at > delivered_at]
        # the poll right after the one that found the event comes after the short interval
        assert after[0] - delivered_at < 0.2, after[0] - delivered_at


async def test_malformed_events_are_skipped_and_the_stream_goes_on(tmp_path: Path) -> None:
    """An event without a type cannot become a CloudEvent: skipped, counted in events_err,
    and the checkpoint moves past it; one without an integer id cannot be placed in the
    stream and is ignored. The events around them are delivered in order."""
    async with HorizonServer(password=PASSWORD) as server:
        provider = make_provider(make_config(server.url, checkpoint_dir=tmp_path))
        publisher = CollectingPublisher()
        t = int(time.time() * 1000)
        async with running(provider, publisher):
            await wait_until(lambda: provider.ready)
            first = server.add_event(time_ms=t)
            untyped = server.add_event("", time_ms=t + 1)
            server.add_event(time_ms=t + 2, id="not-a-number")
            last = server.add_event(time_ms=t + 3)
            await publisher.wait_for(2)
            await quiet_polls(server)
        assert publisher.ids == [first["id"], last["id"]]
        assert untyped["id"] not in publisher.ids
        assert provider.stats.events_err == 1
        saved = json.loads((tmp_path / "horizon-127.0.0.1.json").read_text())
        assert (saved["lastEventTime"], saved["idsAtLastTime"]) == (t + 3, [last["id"]])


async def test_event_database_not_configured_409_is_retried() -> None:
    async with HorizonServer(password=PASSWORD) as server:
        server.events_db_configured = False
        provider = make_provider(make_config(server.url))
        publisher = CollectingPublisher()
        async with running(provider, publisher):
            await wait_until(lambda: any(q.status == 409 for q in server.event_queries()))
            assert not provider.ready
            server.events_db_configured = True
            await wait_until(lambda: provider.ready)
            e = server.add_event()
            await publisher.wait_for(1)
        assert publisher.ids == [e["id"]]


async def test_wrong_credentials_fail_clearly_without_the_password(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.DEBUG)
    async with HorizonServer(password="the-right-one") as server:
        provider = make_provider(make_config(server.url, password=PASSWORD))
        with pytest.raises(HorizonLoginError) as info:
            await asyncio.wait_for(provider.run(CollectingPublisher()), 10)
        await provider.close()
        message = str(info.value)
        assert "login failed" in message
        assert "'administrator'" in message and "'corp'" in message
        assert "activeDirectoryAuth" in message
        assert PASSWORD not in message and PASSWORD not in caplog.text
        assert server.failed_logins == 1  # not retried: a restart cannot fix it


async def test_secrets_never_logged(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    async with HorizonServer(password=PASSWORD) as server:
        provider = make_provider(make_config(server.url))
        publisher = CollectingPublisher()
        async with running(provider, publisher):
            await wait_until(lambda: provider.ready)
            server.expire_access_tokens()
            server.add_event()
            await publisher.wait_for(1)
            tokens = list(server._access) + list(server._refresh)
        assert server.login_bodies[0]["password"] == PASSWORD  # it was sent, to the server only
        assert tokens
        for secret in [PASSWORD, *tokens]:
            assert secret not in caplog.text
        assert PASSWORD not in repr(provider.cfg)


async def test_tls_with_root_cas_insecure_and_untrusted(tmp_path: Path) -> None:
    ca, server_tls = make_tls(tmp_path)
    async with HorizonServer(password=PASSWORD, ssl_context=server_tls) as server:
        assert server.url.startswith("https://")
        # certificates.rootCAs: verified, events flow
        config = make_config(server.url)
        config.certificates = Certificates(rootCAs=[str(ca)])
        publisher = CollectingPublisher()
        provider = make_provider(config)
        async with running(provider, publisher):
            await wait_until(lambda: provider.ready)
            e = server.add_event()
            await publisher.wait_for(1)
        assert publisher.ids == [e["id"]]

        # insecureSSL: not verified, works
        insecure = make_config(server.url)
        assert insecure.eventProvider.horizon is not None
        insecure.eventProvider.horizon.insecureSSL = True
        provider = make_provider(insecure)
        async with running(provider, CollectingPublisher()):
            await wait_until(lambda: provider.ready)

        # neither: a clear startup error naming both fields, no retry loop
        provider = make_provider(make_config(server.url))
        with pytest.raises(HorizonTLSError) as info:
            await asyncio.wait_for(provider.run(CollectingPublisher()), 10)
        await provider.close()
        assert "certificates.rootCAs" in str(info.value)
        assert "insecureSSL" in str(info.value)


async def test_password_changed_while_running_is_retried_slowly_not_locking_the_account(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """The service account's password changes under a running router: every login is now
    rejected. The provider says so and waits before it tries again (a domain lockout policy
    counts failures), instead of its fast error backoff."""
    async with HorizonServer(password=PASSWORD) as server:
        provider = make_provider(make_config(server.url))
        provider.login_rejected_delay = 2.0  # 300 s in production
        publisher = CollectingPublisher()
        async with running(provider, publisher):
            await wait_until(lambda: provider.ready)
            server.users = {k: "rotated-password" for k in server.users}
            server.expire_refresh_tokens()
            server.expire_access_tokens()
            await wait_until(lambda: server.failed_logins >= 1, 10)
            await asyncio.sleep(1.5)
            assert server.failed_logins == 1  # not hammering (the error backoff is 0.2 s here)
            assert "retrying in 2s, not sooner (account lockout)" in caplog.text
            assert PASSWORD not in caplog.text
