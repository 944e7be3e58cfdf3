"""The ``event-router`` console script, run as a subprocess: flags of the original (one
dash or two), -validate exit codes and output, -version, JSON logs, and a real run that
is stopped with SIGTERM while events are in flight."""

from __future__ import annotations

import asyncio
import base64
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml

from event_router.cli import checkpoint_store_factory
from event_router.config import ConfigError
from tests.support.net import free_port, free_ports
from tests.support.polling import wait_until
from tests.support.sink import CloudEventSink

ROOT = Path(__file__).resolve().parents[2]
SCRIPT = str(Path(sys.executable).parent / "event-router")
EXAMPLE = ROOT / "examples" / "vcenter-knative.yaml"


def run(*args: str, timeout: float = 30) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "NO_COLOR": "1"}
    return subprocess.run(
        [SCRIPT, *args], capture_output=True, text=True, timeout=timeout, env=env, check=False
    )


def write(tmp_path: Path, data: Any, name: str = "config.yaml") -> Path:
    path = tmp_path / name
    path.write_text(data if isinstance(data, str) else yaml.safe_dump(data))
    return path


def test_console_script_is_installed() -> None:
    assert Path(SCRIPT).is_file()


@pytest.mark.parametrize("flag", ["-version", "--version"])
def test_version(flag: str) -> None:
    result = run(flag)
    assert result.returncode == 0
    assert result.stdout.startswith("event-router 0.")


@pytest.mark.parametrize(
    "args",
    [
        ["-validate", "-config", str(EXAMPLE)],
        ["--validate", "--config", str(EXAMPLE)],
        ["-validate=true", f"-config={EXAMPLE}"],
        [f"--config={EXAMPLE}", "--validate=1"],
    ],
)
def test_validate_valid_config_exits_0(args: list[str]) -> None:
    result = run(*args)
    assert result.returncode == 0, result.stderr
    assert "valid (provider vcenter 'veba-demo-vc-01' -> processor knative" in result.stdout
    assert result.stderr == ""


def test_validate_invalid_config_exits_2_one_line_per_error(tmp_path: Path) -> None:
    data = yaml.safe_load(EXAMPLE.read_text())
    data["eventProvider"]["type"] = "vcentre"
    data["eventProcessor"]["knative"]["encoding"] = "json"
    data["eventProvider"]["vcenter"]["auth"]["basicAuth"]["pasword"] = "ReplaceMe"
    result = run("-validate", "-config", str(write(tmp_path, data)))
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert sorted(line.split(": ")[0] for line in lines) == [
        "eventProcessor.knative.encoding",
        "eventProvider.type",
        "eventProvider.vcenter.auth.basicAuth.pasword",
    ]
    assert "got 'vcentre'; allowed: vcenter, horizon, webhook, vcsim" in result.stderr
    assert "pasword: unknown field; did you mean 'password'?" in result.stderr
    assert "ReplaceMe" not in result.stderr
    assert result.stdout == ""


def test_validate_missing_file_and_bad_yaml(tmp_path: Path) -> None:
    result = run("-validate", "-config", str(tmp_path / "nope.yaml"))
    assert result.returncode == 2
    assert result.stderr.strip() == f"{tmp_path / 'nope.yaml'}: config file not found"
    bad = write(tmp_path, "apiVersion: [1\n", "bad.yaml")
    result = run("-validate", "-config", str(bad))
    assert result.returncode == 2
    assert f"{bad}:line 2, column 1: invalid YAML" in result.stderr


def test_validate_checks_root_ca_files(tmp_path: Path) -> None:
    data = yaml.safe_load(EXAMPLE.read_text())
    data["certificates"] = {"rootCAs": [str(tmp_path / "missing.pem")]}
    result = run("-validate", "-config", str(write(tmp_path, data)))
    assert result.returncode == 2
    assert result.stderr.startswith("certificates.rootCAs[0]: file not found")


@pytest.mark.parametrize(
    ("kind", "content", "expected"),
    [
        ("empty", b"", "{path}: the file is empty (expected a RouterConfig)"),
        ("two-documents", b"a: 1\n---\nb: 2\n", "{path}: holds 2 YAML documents"),
        ("not-utf8", b"\xff\xfe", "{path}: not UTF-8 text"),
        ("not-a-mapping", b"[1, 2]\n", "(root): expected a mapping of RouterConfig fields"),
        ("directory", None, "{path}: is a directory (expected a config file)"),
        ("not-pem", "rootCAs", "certificates.rootCAs[0]: not a PEM certificate bundle"),
        ("same-port", "ports", "metricsProvider.default.bindAddress: listens on the same port"),
    ],
)
def test_validate_each_kind_of_error_is_one_line_exit_2(
    tmp_path: Path, kind: str, content: bytes | str | None, expected: str
) -> None:
    path = tmp_path / "config.yaml"
    if content is None:
        path = tmp_path
    elif content == "rootCAs":
        (tmp_path / "ca.pem").write_text("not a certificate\n")
        data = yaml.safe_load(EXAMPLE.read_text())
        data["certificates"] = {"rootCAs": [str(tmp_path / "ca.pem")]}
        write(tmp_path, data)
    elif content == "ports":
        data = yaml.safe_load((ROOT / "examples" / "webhook-to-url.yaml").read_text())
        data["metricsProvider"]["default"]["bindAddress"] = (
            "127.0.0.1:" + (data["eventProvider"]["webhook"]["bindAddress"].rsplit(":", 1)[1])
        )
        write(tmp_path, data)
    else:
        assert isinstance(content, bytes)
        path.write_bytes(content)
    result = run("-validate", "-config", str(path))
    assert result.returncode == 2, (kind, result.stdout)
    lines = result.stderr.splitlines()
    assert len(lines) == 1, lines
    assert lines[0].startswith(expected.format(path=path)), lines
    assert result.stdout == ""


def test_default_config_path_is_the_originals() -> None:
    result = run("-validate")
    assert result.returncode == 2
    assert "/etc/vmware-event-router/config: config file not found" in result.stderr


@pytest.mark.parametrize(
    ("args", "fragment"),
    [
        (
            ["-log-level", "verbose"],
            "'verbose' is not a log level (allowed: debug, info, warn, error)",
        ),
        (["-no-such-flag"], "unrecognized arguments: -no-such-flag"),
        (["-log-json=maybe"], "'maybe' is not a boolean"),
        (["-shutdown-timeout", "0"], "allowed: more than 0"),
    ],
)
def test_bad_flags_exit_2(args: list[str], fragment: str) -> None:
    result = run(*args)
    assert result.returncode == 2
    assert fragment in result.stderr


def test_help_lists_the_original_flags() -> None:
    result = run("-h")
    assert result.returncode == 0
    for flag in ("-config PATH", "-log-json", "-log-level LEVEL", "-validate", "-version"):
        assert flag in result.stdout
    assert "/etc/vmware-event-router/config" in result.stdout


@pytest.mark.parametrize("json_logs", [False, True], ids=["console", "json"])
def test_run_mode_invalid_config_logs_errors_and_exits_2(tmp_path: Path, json_logs: bool) -> None:
    data = yaml.safe_load(EXAMPLE.read_text())
    data["eventProvider"]["vcenter"]["address"] = "vcenter.local"
    args = ["-config", str(write(tmp_path, data))] + (["-log-json"] if json_logs else [])
    result = run(*args)
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    if json_logs:
        entries = [json.loads(line) for line in lines]
        assert all(e["level"] == "error" for e in entries)
        assert any(e["msg"].startswith("eventProvider.vcenter.address: ") for e in entries)
    else:
        assert any(
            "ERROR" in line and "eventProvider.vcenter.address: expected an http" in line
            for line in lines
        )
        assert "\033[" not in result.stderr  # no colour when not a TTY


def test_checkpoint_store_factory_from_env(tmp_path: Path) -> None:
    assert checkpoint_store_factory({}) is None
    factory = checkpoint_store_factory(
        {"EVENT_ROUTER_CHECKPOINT_CONFIGMAP": "rc-cp", "EVENT_ROUTER_NAMESPACE": "vmware"}
    )
    assert factory is not None
    store = factory("vc.corp.local")
    assert store.describe() == "configmap vmware/rc-cp key vc.corp.local"
    with pytest.raises(ConfigError) as info:
        checkpoint_store_factory({"EVENT_ROUTER_CHECKPOINT_CONFIGMAP": "rc-cp"})
    assert info.value.errors[0].startswith("EVENT_ROUTER_NAMESPACE: required")


# --- a real run: webhook -> knative(uri) -> local sink, stopped with SIGTERM ------------------


WEBHOOK_PASS = "wh-S3cret-pass"
SINK_PASS = "sink-S3cret-pass"


def router_config(
    sink_url: str, hook_port: int, metrics_port: int, *, ack: str = "delivered"
) -> dict[str, Any]:
    def auth(user: str, password: str) -> dict[str, Any]:
        return {"type": "basic_auth", "basicAuth": {"username": user, "password": password}}

    return {
        "apiVersion": "event-router.vmware.com/v1alpha1",
        "kind": "RouterConfig",
        "metadata": {"name": "cli-e2e"},
        "eventProvider": {
            "type": "webhook",
            "name": "hook",
            "webhook": {
                "bindAddress": f"127.0.0.1:{hook_port}",
                "path": "/webhook",
                "auth": auth("hook", WEBHOOK_PASS),
                "ack": ack,
            },
        },
        "eventProcessor": {
            "type": "knative",
            "name": "sink",
            "knative": {
                "encoding": "structured",
                "destination": {"uri": sink_url},
                "auth": auth("sinkuser", SINK_PASS),
            },
        },
        "metricsProvider": {
            "type": "default",
            "name": "metrics",
            "default": {"bindAddress": f"127.0.0.1:{metrics_port}"},
        },
    }


async def _wait_ready(client: httpx.AsyncClient, url: str, proc: Any, within: float) -> None:
    deadline = time.monotonic() + within
    while time.monotonic() < deadline:
        if proc.returncode is not None:
            raise AssertionError(f"router exited early with {proc.returncode}")
        try:
            if (await client.get(url)).status_code == 200:
                return
        except httpx.TransportError:
            pass
        await asyncio.sleep(0.05)
    raise AssertionError(f"router not ready at {url} within {within}s")


@pytest.mark.timeout(60)
@pytest.mark.parametrize(
    ("json_logs", "signum"),
    [(False, signal.SIGTERM), (True, signal.SIGINT)],
    ids=["console-logs-sigterm", "json-logs-sigint"],
)
async def test_sigterm_with_events_in_flight_delivers_them_and_exits_0(
    tmp_path: Path, json_logs: bool, signum: signal.Signals
) -> None:
    count = 6
    # each delivery takes 0.25 s: when SIGTERM arrives, most events are still queued (ack:
    # queued answers before delivery; with ack: delivered nothing acknowledged is in flight)
    async with CloudEventSink(delay=0.25, auth=("sinkuser", SINK_PASS)) as sink:
        hook_port, metrics_port = free_ports(2)
        path = write(tmp_path, router_config(sink.url, hook_port, metrics_port, ack="queued"))
        args = ["-config", str(path), "-log-level", "debug"] + (["-log-json"] if json_logs else [])
        stderr_path = tmp_path / "stderr.log"
        with stderr_path.open("w") as stderr:
            proc = await asyncio.create_subprocess_exec(
                SCRIPT,
                *args,
                stdout=asyncio.subprocess.DEVNULL,
                stderr=stderr,
                env={**os.environ, "NO_COLOR": "1"},
            )
            try:
                async with httpx.AsyncClient(timeout=10) as client:
                    await _wait_ready(
                        client, f"http://127.0.0.1:{metrics_port}/readyz", proc, within=20
                    )
                    hook = f"http://127.0.0.1:{hook_port}/webhook"
                    denied = await client.post(hook, content=b"{}")
                    assert denied.status_code == 401
                    sent = []
                    for i in range(count):
                        event = {
                            "specversion": "1.0",
                            "id": f"evt-{i}",
                            "source": "/cli-test",
                            "type": "com.example.test",
                            "subject": f"S{i}",
                            "datacontenttype": "application/json",
                            "data": {"n": i, "note": "in flight"},
                        }
                        response = await client.post(
                            hook,
                            json=event,
                            headers={"Content-Type": "application/cloudevents+json"},
                            auth=("hook", WEBHOOK_PASS),
                        )
                        assert response.status_code // 100 == 2, response.text
                        sent.append(event)
                    assert len(sink.events) < count  # still in flight
                    proc.send_signal(signum)
                    code = await asyncio.wait_for(proc.wait(), timeout=20)
            finally:
                if proc.returncode is None:
                    proc.kill()
                    await proc.wait()
        assert code == 0
        assert [e["id"] for e in sink.events] == [e["id"] for e in sent]
        assert [e.data for e in sink.events] == [e["data"] for e in sent]
        assert sink.events[0]["subject"] == "S0"

    log_text = stderr_path.read_text()
    lines = [line for line in log_text.splitlines() if line.strip()]
    assert lines, "the router logged nothing"
    for secret in (
        WEBHOOK_PASS,
        SINK_PASS,
        base64.b64encode(f"hook:{WEBHOOK_PASS}".encode()).decode(),
        base64.b64encode(f"sinkuser:{SINK_PASS}".encode()).decode(),
    ):
        assert secret not in log_text
    if json_logs:
        entries = [json.loads(line) for line in lines]
        assert {"ts", "level", "logger", "msg"} <= set(entries[0])
        messages = [e["msg"] for e in entries]
        assert any(e["level"] == "debug" for e in entries)
    else:
        messages = lines
    assert any(f"received {signum.name}" in m for m in messages)
    assert any("router stopped" in m for m in messages)


def _event(i: int) -> dict[str, Any]:
    return {
        "specversion": "1.0",
        "id": f"down-{i}",
        "source": "/cli-test",
        "type": "com.example.test",
        "data": {"n": i},
    }


async def start_router(path: Path, bound: float, stderr: Any) -> asyncio.subprocess.Process:
    """``event-router -config PATH -shutdown-timeout BOUND``, logs to ``stderr``."""
    return await asyncio.create_subprocess_exec(
        SCRIPT,
        "-config",
        str(path),
        "-shutdown-timeout",
        str(bound),
        stdout=asyncio.subprocess.DEVNULL,
        stderr=stderr,
        env={**os.environ, "NO_COLOR": "1"},
    )


@pytest.mark.timeout(60)
@pytest.mark.parametrize("down", ["refused", "hanging"])
async def test_sigterm_with_the_sink_down_stops_within_the_bound_and_exits_0(
    tmp_path: Path, down: str
) -> None:
    """The knative sink is down (nothing listens, or it never answers): SIGTERM stops the
    router within -shutdown-timeout (plus process teardown), exit 0; the undelivered events
    are logged as such, and nothing sent after the signal is acknowledged."""
    bound = 2.0
    hook_port, metrics_port = free_ports(2)
    async with CloudEventSink(delay=300) as hanging:
        sink_url = hanging.url if down == "hanging" else f"http://127.0.0.1:{free_port()}/"
        config = router_config(sink_url, hook_port, metrics_port, ack="queued")
        del config["eventProcessor"]["knative"]["auth"]
        path = write(tmp_path, config)
        log_path = tmp_path / "stderr.log"
        with log_path.open("w") as stderr:
            proc = await start_router(path, bound, stderr)
            try:
                async with httpx.AsyncClient(timeout=10) as client:
                    await _wait_ready(
                        client, f"http://127.0.0.1:{metrics_port}/readyz", proc, within=20
                    )
                    hook = f"http://127.0.0.1:{hook_port}/webhook"
                    auth = ("hook", WEBHOOK_PASS)
                    for i in range(3):
                        r = await client.post(hook, json=_event(i), auth=auth, headers=CE_JSON)
                        assert r.status_code == 202, r.text
                    if down == "hanging":
                        await wait_until(lambda: hanging.in_flight >= 1, 10, "a hanging request")
                    start = time.monotonic()
                    proc.send_signal(signal.SIGTERM)
                    await wait_until(
                        lambda: "received SIGTERM" in log_path.read_text(), 10, "the signal logged"
                    )
                    try:  # intake is closed: refused or 503, never accepted
                        late = await client.post(hook, json=_event(9), auth=auth, headers=CE_JSON)
                        assert late.status_code == 503, late.text
                    except httpx.TransportError:
                        pass
                    code = await asyncio.wait_for(proc.wait(), timeout=20)
                    elapsed = time.monotonic() - start
            finally:
                if proc.returncode is None:
                    proc.kill()
                    await proc.wait()
        assert hanging.events == []
    log_text = log_path.read_text()
    assert code == 0, log_text
    # the drain bound, plus closing the provider, processors and interpreter
    print(f"SIGTERM to exit ({down} sink): {elapsed:.2f}s")
    assert elapsed < bound + 1.5, (elapsed, log_text)
    # all three are left (a sink that is down never makes an event fail for good: it is
    # retried until the router stops)
    assert "3 event(s) not delivered within 2.0s; they stay unacknowledged" in log_text
    assert "router stopped" in log_text
    assert "down-9" not in log_text


CE_JSON = {"Content-Type": "application/cloudevents+json"}


def test_startup_error_exits_1_with_the_reason(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # a knative ref standalone with no Kubernetes API to resolve it: a startup error
    monkeypatch.setenv("KUBECONFIG", str(tmp_path / "no-kubeconfig"))
    data = yaml.safe_load((ROOT / "examples" / "webhook-knative.yaml").read_text())
    data["eventProvider"]["webhook"]["bindAddress"] = f"127.0.0.1:{free_port()}"
    data["metricsProvider"]["default"]["bindAddress"] = f"127.0.0.1:{free_port()}"
    result = run("-config", str(write(tmp_path, data)), "-log-json", timeout=30)
    assert result.returncode == 1, result.stderr
    entries = [json.loads(line) for line in result.stderr.splitlines() if line.strip()]
    failed = [e for e in entries if e["level"] == "error"]
    assert failed and "eventProcessor.knative.destination.ref" in failed[0]["msg"]
    assert "cannot reach the Kubernetes API" in failed[0]["msg"]
    assert "webhook-pass" not in result.stderr


@pytest.mark.timeout(90)
async def test_sigterm_while_vcenter_never_answers_exits_within_the_bound(tmp_path: Path) -> None:
    """vCenter accepts the connection and never answers (a hung appliance): the login blocks
    a pyVmomi worker thread. SIGTERM still ends the process within -shutdown-timeout plus a
    few seconds, not after the 30 s socket timeout of the blocked call."""
    bound = 2.0
    accepted: list[asyncio.StreamWriter] = []

    async def black_hole(_r: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
        accepted.append(w)  # read nothing, answer nothing

    server = await asyncio.start_server(black_hole, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    metrics_port = free_port()
    config = {
        "apiVersion": "event-router.vmware.com/v1alpha1",
        "kind": "RouterConfig",
        "metadata": {"name": "hung-vcenter"},
        "eventProvider": {
            "type": "vcenter",
            "name": "vc",
            "vcenter": {
                "address": f"https://127.0.0.1:{port}/sdk",
                "insecureSSL": True,
                "auth": {"type": "basic_auth", "basicAuth": {"username": "u", "password": "p"}},
            },
        },
        "eventProcessor": {
            "type": "knative",
            "name": "sink",
            "knative": {"destination": {"uri": f"http://127.0.0.1:{free_port()}/"}},
        },
        "metricsProvider": {
            "type": "default",
            "name": "m",
            "default": {"bindAddress": f"127.0.0.1:{metrics_port}"},
        },
    }
    path = write(tmp_path, config)
    log_path = tmp_path / "stderr.log"
    try:
        with log_path.open("w") as stderr:
            proc = await start_router(path, bound, stderr)
            try:
                await wait_until(lambda: len(accepted) >= 1, 20, "the router connecting")
                await asyncio.sleep(1.0)  # the login is blocked in its worker thread now
                start = time.monotonic()
                proc.send_signal(signal.SIGTERM)
                code = await asyncio.wait_for(proc.wait(), timeout=60)
                elapsed = time.monotonic() - start
            finally:
                if proc.returncode is None:
                    proc.kill()
                    await proc.wait()
    finally:
        for w in accepted:
            w.close()
        server.close()
    log_text = log_path.read_text()
    print(f"SIGTERM to exit (hung vCenter): {elapsed:.2f}s, exit {code}")
    assert elapsed < bound + 5.0, (elapsed, log_text)
    assert "received SIGTERM" in log_text, log_text
    assert code in (0, 1), log_text
