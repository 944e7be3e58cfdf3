"""Checkpoint stores, the original router's format, the tracker and the resume filter."""

from __future__ import annotations

import asyncio
import datetime as dt
import json
import os
from pathlib import Path
from types import SimpleNamespace

import pytest

from event_router.checkpoints import (
    CheckpointTracker,
    FileStore,
    VCenterCheckpoint,
    parse_time,
)
from event_router.providers.vcenter import ResumeFilter
from event_router.timefmt import rfc3339

UTC = dt.UTC

#: a checkpoint file as the original (Go) router wrote it
ORIGINAL_FILE = """{
  "vCenter": "https://vcenter.example.com/sdk",
  "lastEventKey": 103264,
  "lastEventType": "UserLogoutSessionEvent",
  "lastEventKeyTimestamp": "2021-02-23T19:44:39.843783123Z",
  "createdTimestamp": "2021-02-23T19:44:41.364227449Z"
}"""


async def test_file_store_roundtrip_and_atomic_replace(tmp_path: Path) -> None:
    store = FileStore(tmp_path / "sub" / "cp-vc.json")
    assert await store.load() is None
    await store.save({"a": 1})
    await store.save({"a": 2})
    assert await store.load() == {"a": 2}
    # no temp files left behind
    assert [p.name for p in (tmp_path / "sub").iterdir()] == ["cp-vc.json"]


async def test_file_store_rejects_non_object(tmp_path: Path) -> None:
    path = tmp_path / "cp.json"
    path.write_text("[1, 2]")
    with pytest.raises(ValueError, match="expected a JSON object, got list"):
        await FileStore(path).load()


async def test_original_file_is_read(tmp_path: Path) -> None:
    path = tmp_path / "cp-vcenter.example.com.json"
    path.write_text(ORIGINAL_FILE)
    cp = VCenterCheckpoint.from_json(await FileStore(path).load() or {})
    assert cp.vcenter == "https://vcenter.example.com/sdk"
    assert cp.last_event_key == 103264
    assert cp.last_event_type == "UserLogoutSessionEvent"
    # nanoseconds truncated (never rounded up) to microseconds
    assert cp.last_event_time == dt.datetime(2021, 2, 23, 19, 44, 39, 843783, tzinfo=UTC)
    assert cp.created == dt.datetime(2021, 2, 23, 19, 44, 41, 364227, tzinfo=UTC)


def test_written_format_has_the_original_fields() -> None:
    cp = VCenterCheckpoint(
        vcenter="https://vc/sdk",
        last_event_key=-5,
        last_event_type="VmPoweredOnEvent",
        last_event_time=dt.datetime(2024, 1, 1, 0, 0, 0, 100000, tzinfo=UTC),
        created=dt.datetime(2024, 1, 1, 0, 0, 5, tzinfo=UTC),
    )
    data = cp.to_json()
    assert data == {
        "vCenter": "https://vc/sdk",
        "lastEventKey": -5,
        "lastEventType": "VmPoweredOnEvent",
        "lastEventKeyTimestamp": "2024-01-01T00:00:00.1Z",
        "createdTimestamp": "2024-01-01T00:00:05Z",
    }
    assert VCenterCheckpoint.from_json(json.loads(json.dumps(data))) == cp


def test_int32_keys_wrap() -> None:
    cp = VCenterCheckpoint.from_json(
        {"lastEventKey": 2**31, "lastEventKeyTimestamp": "2024-01-01T00:00:00Z"}
    )
    assert cp.last_event_key == -(2**31)


@pytest.mark.parametrize(
    ("data", "message"),
    [
        ({"lastEventKeyTimestamp": "2024-01-01T00:00:00Z"}, "'lastEventKey' is missing"),
        (
            {"lastEventKey": "12", "lastEventKeyTimestamp": "2024-01-01T00:00:00Z"},
            "'lastEventKey' has the wrong type",
        ),
        (
            {"lastEventKey": 1, "lastEventKeyTimestamp": "yesterday"},
            "'lastEventKeyTimestamp' is not an RFC 3339 time",
        ),
    ],
)
def test_bad_checkpoint_names_the_field(data: dict[str, object], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        VCenterCheckpoint.from_json(data, where="checkpoint /x/cp.json")


def test_parse_time_offsets() -> None:
    assert parse_time("2024-03-01T10:00:00+02:00") == dt.datetime(2024, 3, 1, 8, tzinfo=UTC)
    assert parse_time("2024-03-01T10:00:00.5-0100") == dt.datetime(
        2024, 3, 1, 11, 0, 0, 500000, tzinfo=UTC
    )
    assert rfc3339(parse_time("2024-03-01T10:00:00.123456789Z")) == ("2024-03-01T10:00:00.123456Z")


async def test_tracker_never_passes_an_undelivered_event() -> None:
    loop = asyncio.get_running_loop()
    tickets = [loop.create_future() for _ in range(4)]
    tracker: CheckpointTracker[int] = CheckpointTracker()
    for i, t in enumerate(tickets):
        tracker.add(i, t)
    assert tracker.advance() is None
    tickets[1].set_result(True)
    assert tracker.advance() is None  # 0 still in flight
    tickets[0].set_result(True)
    assert tracker.advance() == 1
    tickets[2].set_result(False)
    tickets[3].set_result(True)
    assert tracker.advance() is None
    assert tracker.blocked_by == 2


async def test_tracker_keeps_nothing_after_an_undelivered_event() -> None:
    """A sink that rejects one event for good must not make the router grow without end:
    the checkpoint stays before that event, and what comes after it is no longer kept."""
    loop = asyncio.get_running_loop()
    tracker: CheckpointTracker[int] = CheckpointTracker()
    failed = loop.create_future()
    tracker.add(0, failed)
    failed.set_result(False)
    assert tracker.advance() is None and tracker.blocked_by == 0
    for i in range(1, 10_001):
        t = loop.create_future()
        t.set_result(True)
        tracker.add(i, t)
    assert len(tracker) == 0
    assert tracker.advance() is None and tracker.blocked_by == 0


def ev(key: int, second: int) -> SimpleNamespace:
    return SimpleNamespace(key=key, createdTime=dt.datetime(2024, 1, 1, 0, 0, second, tzinfo=UTC))


def keys(events: list[SimpleNamespace]) -> list[int]:
    return [e.key for e in events]


def test_resume_filter_skips_up_to_the_key_at_the_same_time() -> None:
    f = ResumeFilter(key=11, created=ev(0, 5).createdTime)
    out: list[SimpleNamespace] = []
    for e in [ev(10, 5), ev(11, 5), ev(12, 5), ev(13, 6)]:
        out += f.feed(e)
    assert keys(out) == [12, 13]


def test_resume_filter_passes_everything_when_the_key_is_gone() -> None:
    # vCenter restarted: the same second holds other events; deliver them (at least once)
    f = ResumeFilter(key=99, created=ev(0, 5).createdTime)
    out: list[SimpleNamespace] = []
    for e in [ev(1, 5), ev(2, 5)]:
        out += f.feed(e)
    assert out == []
    out += f.release()  # caught up
    out += f.feed(ev(3, 5))
    assert keys(out) == [1, 2, 3]


def test_resume_filter_with_negative_wrapped_keys() -> None:
    f = ResumeFilter(key=-2147483648, created=ev(0, 5).createdTime)
    out: list[SimpleNamespace] = []
    for e in [ev(2147483647, 5), ev(-2147483648, 5), ev(-2147483647, 5)]:
        out += f.feed(e)
    assert keys(out) == [-2147483647]


def test_file_store_write_is_atomic_under_crash(tmp_path: Path) -> None:
    """A failing write (disk full, crash) leaves the previous checkpoint intact."""
    path = tmp_path / "cp.json"
    store = FileStore(path)
    store._save({"v": 1})

    with pytest.raises(TypeError):
        store._save({"v": object()})  # json.dump fails half way
    assert json.loads(path.read_text()) == {"v": 1}
    assert os.listdir(tmp_path) == ["cp.json"]


async def test_corrupt_file_names_the_path(tmp_path: Path) -> None:
    path = tmp_path / "cp-vc.json"
    path.write_text('{"vCenter": ')
    with pytest.raises(ValueError, match=r"cp-vc\.json: not valid JSON .*fix or delete the file"):
        await FileStore(path).load()
