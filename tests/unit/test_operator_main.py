"""The operator's command line."""

from __future__ import annotations

import pytest

from event_router.operator.main import main, parse_args


def test_defaults_watch_all_namespaces_with_the_deployment_runtime(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.delenv("EVENT_ROUTER_OPERATOR_RUNTIME", raising=False)
    args = parse_args([])
    assert args.runtime == "deployment" and args.namespace == [] and not args.standalone
    assert args.peering == "event-router" and args.resync_seconds == 30.0


def test_runtime_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("EVENT_ROUTER_OPERATOR_RUNTIME", "inprocess")
    assert parse_args([]).runtime == "inprocess"


def test_namespaces_repeat_and_exclude_all_namespaces(capsys: pytest.CaptureFixture[str]) -> None:
    assert parse_args(["-n", "a", "--namespace", "b"]).namespace == ["a", "b"]
    with pytest.raises(SystemExit):
        parse_args(["-n", "a", "-A"])
    assert "not allowed with argument" in capsys.readouterr().err


def test_bad_values_name_the_flag(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        parse_args(["--resync-seconds", "0"])
    assert "--resync-seconds: must be > 0 (got 0.0)" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        parse_args(["--runtime", "pods"])
    assert "invalid choice: 'pods'" in capsys.readouterr().err


def test_version(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["--version"]) == 0
    assert capsys.readouterr().out.startswith("event-router-operator ")


def test_new_flags_are_checked(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        parse_args(["--peering-lifetime", "1"])
    assert "--peering-lifetime: must be >= 2 seconds (got 1)" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        parse_args(["--metrics-bind-address", "nonsense"])
    assert "--metrics-bind-address" in capsys.readouterr().err
    args = parse_args(["--metrics-bind-address", "127.0.0.1:8081", "--peering-lifetime", "10"])
    assert args.metrics_bind_address == "127.0.0.1:8081" and args.peering_lifetime == 10
