"""kopf's peering rule as the operator's gate applies it (pure): who acts, who pauses."""

from __future__ import annotations

import datetime as dt

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
