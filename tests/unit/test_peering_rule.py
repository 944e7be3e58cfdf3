"""kopf's peering rule as the operator's gate applies it (pure): who acts, who pauses."""

from __future__ import annotations

import asyncio
import datetime as dt
import logging
from typing import Any

from event_router.operator.peering import may_act

NOW = dt.datetime(2026, 12, 1, 12, 0, 0, tzinfo=dt.UTC)


def peer(priority: int, seconds_ago: float, lifetime: int = 60) -> dict[str, object]:
    seen = (NOW - dt.timedelta(seconds=seconds_ago)).isoformat().replace("+00:00", "Z")
    return {"priority": priority, "lastseen": seen, "lifetime": lifetime}


def test_not_registered_yet_means_paused() -> None:
    assert may_act(None, "me", 10, NOW) == (False, "not yet registered in the peering object")
    assert may_act({"other": peer(0, 1)}, "me", 10, NOW)[0] is False


def test_alone_acts() -> None:
    assert may_act({"me": peer(10, 1)}, "me", 10, NOW)[0] is True


def test_higher_priority_peer_pauses_us_lower_does_not() -> None:
    acts, why = may_act({"me": peer(10, 1), "big": peer(100, 1)}, "me", 10, NOW)
    assert not acts and "big" in why and "100 > 10" in why
    assert may_act({"me": peer(100, 1), "small": peer(10, 1)}, "me", 100, NOW)[0] is True


def test_equal_priorities_pause_both_as_kopf_does() -> None:
    status = {"a": peer(5, 1), "b": peer(5, 1)}
    assert may_act(status, "a", 5, NOW)[0] is False
    assert may_act(status, "b", 5, NOW)[0] is False


def test_a_peer_silent_for_longer_than_its_lifetime_is_dead() -> None:
    status = {"me": peer(10, 1), "big": peer(100, 11, lifetime=10)}
    assert may_act(status, "me", 10, NOW)[0] is True
    status["big"] = peer(100, 9, lifetime=10)
    assert may_act(status, "me", 10, NOW)[0] is False


def test_own_entry_older_than_its_lifetime_pauses() -> None:
    """kopf could not keep this replica alive: the others count it dead and take over."""
    assert may_act({"me": peer(10, 61)}, "me", 10, NOW)[0] is False
    assert may_act({"me": peer(10, 59)}, "me", 10, NOW)[0] is True


class FakeAPI:
    """The peering object as the gate reads it; ``fail`` makes the next reads raise."""

    def __init__(self) -> None:
        self.fail: Exception | None = None
        self.status: dict[str, object] = {}

    def get(self, path: str) -> dict[str, object]:
        if self.fail is not None:
            raise self.fail
        return {"status": self.status}


def live(priority: int) -> dict[str, object]:
    seen = dt.datetime.now(dt.UTC).isoformat()
    return {"priority": priority, "lastseen": seen, "lifetime": 60}


async def test_gate_rides_out_a_blip_but_pauses_when_the_api_stays_away() -> None:
    from kubernetes.client.exceptions import ApiException

    from event_router.operator.peering import PeeringGate

    api = FakeAPI()
    api.status = {"me": live(10)}
    changes: list[bool] = []

    async def on_change(active: bool) -> None:
        changes.append(active)

    gate = PeeringGate(api.get, "event-router", [], "me", 10, on_change, lifetime=0.4)
    assert await gate.check() is True and changes == [True]
    api.fail = ApiException(status=503, reason="Service Unavailable")
    assert await gate.check() is True  # a blip: the routers keep running
    assert changes == [True]
    await asyncio.sleep(0.25)  # unread for more than half the lifetime
    assert await gate.check() is False and changes == [True, False]
    assert "unread" in gate.why
    api.fail = None
    assert await gate.check() is True and changes == [True, False, True]
    api.fail = ApiException(status=404, reason="Not Found")  # object or CRD gone: as kopf
    assert await gate.check() is False and changes[-1] is False


async def test_gate_retries_a_failed_state_change() -> None:
    from event_router.operator.peering import PeeringGate

    api = FakeAPI()
    api.status = {"me": live(10)}
    calls: list[bool] = []

    async def on_change(active: bool) -> None:
        calls.append(active)
        if len(calls) == 1:
            raise RuntimeError("resume failed")

    gate = PeeringGate(api.get, "event-router", [], "me", 10, on_change)
    try:
        await gate.check()
    except RuntimeError:
        pass
    assert gate.active is False  # not taken as done
    assert await gate.check() is True and calls == [True, True]


async def test_a_pause_nobody_covers_is_a_problem_a_standby_is_not(caplog: Any) -> None:
    """/readyz and an ERROR say why when this replica cannot act and no other one does;
    a standby behind a live replica of a higher priority is healthy."""
    from kubernetes.client.exceptions import ApiException

    from event_router.operator.peering import PeeringGate

    api = FakeAPI()
    api.status = {"me": live(10), "big": live(100)}

    async def on_change(active: bool) -> None:
        pass

    gate = PeeringGate(api.get, "event-router", [], "me", 10, on_change)
    gate.grace = 0.05
    assert await gate.check() is False and gate.standby and gate.healthy
    await asyncio.sleep(0.1)
    assert gate.problem() is None  # a standby stays healthy however long
    api.status = {"me": live(10), "twin": live(10)}  # equal priorities: kopf pauses both
    assert await gate.check() is False and not gate.standby
    assert gate.healthy  # within the grace
    await asyncio.sleep(0.1)
    with caplog.at_level(logging.ERROR, logger="event_router.operator.peering"):
        await gate.check()
    problem = gate.problem()
    assert problem is not None and "same priority" in problem and not gate.healthy
    assert any(r.levelno == logging.ERROR and "get no status" in r.message for r in caplog.records)
    api.fail = ApiException(status=404, reason="Not Found")
    await gate.check()
    problem = gate.problem()
    assert problem is not None and "does not exist" in problem
    assert "manifests/peering.yaml" in problem and "--standalone" in problem
    api.fail, api.status = None, {"me": live(10)}
    assert await gate.check() is True and gate.healthy


def test_explicit_peering_is_known(monkeypatch: Any) -> None:
    from event_router.operator.main import parse_args

    monkeypatch.delenv("EVENT_ROUTER_OPERATOR_PEERING", raising=False)
    args = parse_args([])
    assert args.peering == "event-router" and not args.peering_explicit
    args = parse_args(["--peering", "team-a"])
    assert args.peering == "team-a" and args.peering_explicit
    monkeypatch.setenv("EVENT_ROUTER_OPERATOR_PEERING", "from-env")
    args = parse_args([])
    assert args.peering == "from-env" and args.peering_explicit


def test_missing_peering_message_names_the_object_and_the_fix() -> None:
    from event_router.operator.peering import missing_peering_message

    text = missing_peering_message("team-a", [])
    assert "ClusterKopfPeering 'team-a'" in text and "manifests/peering.yaml" in text
    text = missing_peering_message("team-a", ["ns1"])
    assert "KopfPeering 'team-a' in namespace ns1" in text
