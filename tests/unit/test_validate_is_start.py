"""One rule for the whole product: whatever ``-validate`` accepts, the router starts with.

Every config of ``examples/``, ``samples/`` and the test corpus (the malformed configs of
test_config.py, the accepted values of the CRD agreement corpus of test_operator_crd.py,
the ``uri`` forms of the original) goes through ``-validate``'s checks; each one it accepts
is then built into a router the way ``event-router -config`` builds it (provider,
processors, metrics server), and its Knative processor is started (URL built, HTTP session
opened; no event sent). Then the original's ``uri: {scheme, host: 127.0.0.1:<port>}`` (the
port in ``host``) delivers a real event from the webhook to a sink, and the console script's
``-validate`` is run on it.
"""

from __future__ import annotations

import asyncio
import copy
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml

from event_router.cli import build_errors
from event_router.config.loader import ConfigError, check_files, load_config, parse_config
from event_router.config.models import RouterConfig
from event_router.core import RouterContext
from event_router.processors.knative import KnativeProcessor
from event_router.router import Router
from tests.support.net import free_port
from tests.support.sink import CloudEventSink, percent_encoded
from tests.unit import test_config, test_operator_crd

ROOT = Path(__file__).resolve().parents[2]
FILES = sorted([*(ROOT / "examples").glob("*.yaml"), *(ROOT / "samples").glob("*.yaml")])
DEST = "eventProcessor.knative.destination"
HOOK = "eventProvider.webhook"
METRICS = "metricsProvider.default"

#: the original's uri forms and ours (host may carry the port; IPv6 in brackets)
URIS: list[Any] = [
    {"scheme": "http", "host": "gateway.corp.local"},
    {"scheme": "http", "host": "gateway.corp.local:8080"},
    {"scheme": "http", "host": "127.0.0.1:18082", "path": "/events"},
    {"scheme": "https", "host": "[::1]:8443", "path": "in"},
    {"scheme": "http", "host": "[::1]", "port": 8080},
    {"scheme": "http", "host": "sink", "port": 8080},
    {"scheme": "http", "host": "h", "path": "/a b/%"},
    {"scheme": "http", "host": "h:8080", "port": 8080},  # rejected: two ports
    {"scheme": "http", "host": "::1"},  # rejected: IPv6 without brackets
    "http://127.0.0.1:9000/events?x=1",
]


def _corpus() -> Iterator[tuple[str, dict[str, Any]]]:
    for base, edits, _, _ in [m[1:] for m in test_config.MALFORMED]:
        data = copy.deepcopy(test_config.example(base))
        for path, value in edits.items():
            test_config.edit(data, path, value)
        yield f"malformed:{base}:{sorted(edits)}", data
    for n, uri in enumerate(URIS):
        data = test_config.example(test_config.WK)
        test_config.edit(data, DEST, {"uri": uri})
        yield f"uri#{n}", data
    for value, _ in test_operator_crd.URI_HOSTS:
        data = test_config.example(test_config.WK)
        test_config.edit(data, DEST, {"uri": {"scheme": "http", "host": value}})
        yield f"uri.host:{value!r}", data
    for value, _ in test_operator_crd.BIND_ADDRESSES:
        for field in (HOOK, METRICS):
            data = test_config.example(test_config.WK)
            test_config.edit(data, f"{field}.bindAddress", value)
            if field == METRICS:  # never the webhook's port
                test_config.edit(data, f"{HOOK}.bindAddress", "127.0.0.1:1")
            yield f"{field}.bindAddress:{value!r}", data


CORPUS = list(_corpus())


def _validate(load: Any) -> RouterConfig | None:
    """``-validate``'s verdict: the config, or None when it says no."""
    try:
        config: RouterConfig = load()
    except ConfigError:
        return None
    if check_files(config) or build_errors(config):
        return None
    return config


async def _start_like_the_cli(config: RouterConfig) -> None:
    router = Router(RouterContext(config=config))
    for slot in router.slots:
        processor = slot.processor
        if isinstance(processor, KnativeProcessor) and processor.cfg.destination.uri is not None:
            await processor.start()  # builds the URL and the HTTP session, sends nothing
            await processor.close()
        else:
            processor.preflight()


@pytest.mark.parametrize("path", FILES, ids=[f"{p.parent.name}/{p.name}" for p in FILES])
def test_every_file_validate_accepts_builds_a_router(path: Path) -> None:
    config = _validate(lambda: load_config(path))
    if config is None:
        # samples/ are operator manifests (Secrets and a RouterConfig with secretRefs)
        assert path.parent.name == "samples", f"{path} must be a valid config"
        return
    asyncio.run(_start_like_the_cli(config))


@pytest.mark.parametrize(("name", "data"), CORPUS, ids=[n for n, _ in CORPUS])
def test_every_corpus_config_validate_accepts_builds_a_router(
    name: str, data: dict[str, Any]
) -> None:
    config = _validate(lambda: parse_config(data))
    if config is not None:
        asyncio.run(_start_like_the_cli(config))


def test_the_corpus_has_both_verdicts() -> None:
    verdicts = [_validate(lambda d=d: parse_config(d)) is not None for _, d in CORPUS]
    assert sum(verdicts) >= 40 and len(verdicts) - sum(verdicts) >= 60, sum(verdicts)


def test_examples_all_pass_validate() -> None:
    examples = [p for p in FILES if p.parent.name == "examples"]
    assert examples and all(_validate(lambda p=p: load_config(p)) for p in examples)


async def test_the_originals_host_with_port_delivers(tmp_path: Path) -> None:
    """The issue's case: ``uri: {scheme: http, host: 127.0.0.1:<port>}`` passed -validate and
    then failed at start (``http://[127.0.0.1:18082]``)."""
    async with CloudEventSink() as sink:
        port = free_port()
        data = {
            "apiVersion": "event-router.vmware.com/v1alpha1",
            "kind": "RouterConfig",
            "metadata": {"name": "original-uri"},
            "eventProvider": {
                "type": "webhook",
                "name": "hook",
                "webhook": {"bindAddress": f"127.0.0.1:{port}", "path": "/webhook"},
            },
            "eventProcessor": {
                "type": "knative",
                "name": "kn",
                "knative": {
                    "destination": {
                        "uri": {"scheme": "http", "host": f"127.0.0.1:{sink.port}", "path": "/"}
                    }
                },
            },
        }
        path = tmp_path / "config.yaml"
        path.write_text(yaml.safe_dump(data))
        script = str(Path(sys.executable).parent / "event-router")
        result = await asyncio.to_thread(
            subprocess.run,
            [script, "-validate", "-config", str(path)],
            capture_output=True,
            text=True,
            env={**os.environ, "NO_COLOR": "1"},
            check=False,
        )
        assert result.returncode == 0, result.stderr
        router = Router(RouterContext(config=load_config(path)))
        await router.start()
        try:
            await router.wait_ready(5)
            headers = percent_encoded(
                {"ce-specversion": "1.0", "ce-id": "u1", "ce-source": "/s", "ce-type": "t"}
            )
            async with httpx.AsyncClient() as client:
                r = await client.post(f"http://127.0.0.1:{port}/webhook", headers=headers)
            assert r.status_code == 202
            (event,) = await sink.wait_for(1, timeout=5)
            assert event["id"] == "u1"
        finally:
            await router.stop(timeout=5)


def test_validate_names_the_field_of_two_ports(tmp_path: Path) -> None:
    data = test_config.example(test_config.WK)
    test_config.edit(data, DEST, {"uri": {"scheme": "http", "host": "sink:8080", "port": 9090}})
    path = tmp_path / "config.yaml"
    path.write_text(yaml.safe_dump(data))
    script = str(Path(sys.executable).parent / "event-router")
    result = subprocess.run(
        [script, "-validate", "-config", str(path)], capture_output=True, text=True, check=False
    )
    assert result.returncode == 2
    assert f"{DEST}.uri.port: not allowed when host carries a port too" in result.stderr
