"""Logging of the CLI: console and JSON formats, levels, colour only on a TTY, and the
redaction of every configured credential at debug level, wherever it would appear."""

from __future__ import annotations

import base64
import io
import json
import logging
import urllib.parse
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml

from event_router.cli import register_secrets
from event_router.config import parse_config
from event_router.logsetup import REDACTED, setup_logging

ROOT = Path(__file__).resolve().parents[2]


class TTY(io.StringIO):
    def isatty(self) -> bool:
        return True


@pytest.fixture
def capture() -> Iterator[list[logging.Handler]]:
    handlers: list[logging.Handler] = []
    root = logging.getLogger()
    level = root.level
    yield handlers
    for h in handlers:
        root.removeHandler(h)
    root.setLevel(level)


def config_with_secrets() -> tuple[object, dict[str, str]]:
    data = yaml.safe_load((ROOT / "examples" / "vcenter-aws-eventbridge.yaml").read_text())
    vc = data["eventProvider"]["vcenter"]["auth"]["basicAuth"]
    vc["password"] = "vc-Pa55word!"
    keys = data["eventProcessor"]["awsEventBridge"]["auth"]["awsAccessKeyAuth"]
    keys["accessKey"] = "AKIAEXAMPLEKEY123"
    keys["secretKey"] = "wJalrXUtnFEMI/K7MDENG+bPxRfiCY"
    data["metricsProvider"]["default"]["auth"] = {
        "type": "basic_auth",
        "basicAuth": {"username": "metrics", "password": "m3trics-pass"},
    }
    secrets = {
        "vcenter": "vc-Pa55word!",
        "access": "AKIAEXAMPLEKEY123",
        "secret": "wJalrXUtnFEMI/K7MDENG+bPxRfiCY",
        "metrics": "m3trics-pass",
        "basic": base64.b64encode(b"administrator@vsphere.local:vc-Pa55word!").decode(),
    }
    return parse_config(data), secrets


@pytest.mark.parametrize("json_logs", [False, True], ids=["console", "json"])
def test_secrets_never_reach_a_log_line_at_debug(
    capture: list[logging.Handler], json_logs: bool
) -> None:
    config, secrets = config_with_secrets()
    out = io.StringIO()
    capture.append(setup_logging("debug", json_logs, stream=out))
    register_secrets(config)  # type: ignore[arg-type]
    log = logging.getLogger("event_router.providers.test")
    s = secrets
    log.debug("login with password %s", s["vcenter"])
    quoted = urllib.parse.quote(s["secret"], safe="")
    log.debug(f"inline {s['secret']} and in a query string ?key={quoted}")
    log.info("headers %s", {"Authorization": f"Basic {s['basic']}"})
    log.warning("extra fields", extra={"creds": {"key": s["access"], "pw": s["metrics"]}})
    try:
        raise RuntimeError(f"login failed for {s['vcenter']}")
    except RuntimeError:
        log.exception("boom")
    logging.getLogger("aiohttp.access").debug("third party logger: %s", s["metrics"])
    text = out.getvalue()
    for name, secret in secrets.items():
        assert secret not in text, name
    assert quoted not in text
    assert text.count(REDACTED) >= 8
    if json_logs:
        entries = [json.loads(line) for line in text.splitlines() if line.startswith("{")]
        assert len(entries) == 6
        assert entries[0]["level"] == "debug" and entries[0]["logger"] == log.name
        assert entries[0]["msg"] == f"login with password {REDACTED}"
        assert entries[3]["creds"] == {"key": REDACTED, "pw": REDACTED}
        assert entries[4]["level"] == "error" and "RuntimeError" in entries[4]["error"]
        assert entries[5]["logger"] == "aiohttp.access"
    else:
        assert f"login with password {REDACTED}" in text
        assert "Traceback" in text and "RuntimeError: login failed for [REDACTED]" in text


def test_levels_and_format(capture: list[logging.Handler]) -> None:
    out = io.StringIO()
    capture.append(setup_logging("warn", False, stream=out))
    log = logging.getLogger("event_router.x")
    log.info("hidden")
    log.warning("shown %d", 1, extra={"provider": "vcenter", "note": "two words"})
    lines = out.getvalue().splitlines()
    assert len(lines) == 1
    assert "WARN" in lines[0] and "event_router.x" in lines[0]
    assert lines[0].endswith('shown 1  provider=vcenter note="two words"')
    assert "\033[" not in lines[0]


def test_colour_only_on_a_tty(
    capture: list[logging.Handler], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("NO_COLOR", raising=False)
    monkeypatch.delenv("FORCE_COLOR", raising=False)
    tty = TTY()
    capture.append(setup_logging("info", False, stream=tty))
    logging.getLogger("event_router.x").error("red")
    assert "\033[31m" in tty.getvalue()
    monkeypatch.setenv("NO_COLOR", "1")
    plain = TTY()
    capture.append(setup_logging("info", False, stream=plain))
    logging.getLogger("event_router.x").error("plain")
    assert "\033[" not in plain.getvalue()


def test_json_lines_parse(capture: list[logging.Handler]) -> None:
    out = io.StringIO()
    capture.append(setup_logging("info", True, stream=out))
    logging.getLogger("event_router.x").info('quotes " and\nnewlines', extra={"n": 3})
    (line,) = out.getvalue().splitlines()
    entry = json.loads(line)
    assert entry["msg"] == 'quotes " and\nnewlines' and entry["n"] == 3
    assert entry["ts"].endswith("Z") and entry["level"] == "info"


def test_unknown_level_is_an_error() -> None:
    with pytest.raises(ValueError, match="allowed: debug, info, warn, error"):
        setup_logging("trace")
