"""A router loads only what its config uses: the heavy modules of the other providers,
processors and runtimes (the Kubernetes client, boto3/botocore, kopf) stay unloaded, and no
config loads a second HTTP client stack (httpx: aiohttp is the product's only one).

Each case imports the CLI and builds the router of one config in a fresh interpreter
(``python -c``), as ``event-router -config`` does before it starts, and lists which of the
heavy modules ended up in ``sys.modules``.
"""

from __future__ import annotations

import json
import subprocess
import sys
from typing import Any

import pytest

#: never needed by a vcenter/webhook -> knative router with file (or no) checkpoints
NOT_FOR_KNATIVE = (
    "kubernetes",  # only ConfigMap checkpoints and `ref` sinks
    "boto3",  # only aws_event_bridge
    "botocore",
    "httpx",  # no processor or provider uses a second HTTP client stack (aiohttp only)
    "httpcore",
    "kopf",  # the operator only
    "requests",
    "urllib3",
    "jsonschema",
)

PROBE = """
import json, sys
from event_router import cli
from event_router.config.models import RouterConfig
from event_router.core import RouterContext
from event_router.router import Router

config = RouterConfig.model_validate(json.loads(sys.argv[1]))
Router(RouterContext(config=config))
print(json.dumps(sorted({name.split(".")[0] for name in sys.modules})))
"""

KNATIVE = {
    "type": "knative",
    "name": "k",
    "knative": {"destination": {"uri": "http://127.0.0.1:9/"}},
}


def loaded_after_building(
    provider: dict[str, Any], processor: dict[str, Any] = KNATIVE
) -> set[str]:
    config = {
        "apiVersion": "event-router.vmware.com/v1alpha1",
        "kind": "RouterConfig",
        "metadata": {"name": "footprint"},
        "eventProvider": provider,
        "eventProcessor": processor,
    }
    done = subprocess.run(
        [sys.executable, "-c", PROBE, json.dumps(config)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    return set(json.loads(done.stdout.splitlines()[-1]))


VCENTER = {
    "type": "vcenter",
    "name": "vc",
    "vcenter": {
        "address": "https://127.0.0.1:9/sdk",
        "insecureSSL": True,
        "checkpoint": True,
        "checkpointDir": "/tmp",
        "auth": {"type": "basic_auth", "basicAuth": {"username": "u", "password": "p"}},
    },
}

WEBHOOK = {
    "type": "webhook",
    "name": "hook",
    "webhook": {"bindAddress": "127.0.0.1:8080", "path": "/webhook"},
}


HORIZON = {
    "type": "horizon",
    "name": "hz",
    "horizon": {
        "address": "https://127.0.0.1:9",
        "checkpoint": True,
        "checkpointDir": "/tmp",
        "auth": {
            "type": "active_directory",
            "activeDirectoryAuth": {"domain": "corp", "username": "u", "password": "p"},
        },
    },
}

OPENFAAS = {
    "type": "openfaas",
    "name": "faas",
    "openfaas": {
        "address": "http://127.0.0.1:9",
        "auth": {"type": "basic_auth", "basicAuth": {"username": "u", "password": "p"}},
    },
}

NOT_VSPHERE = ("pyVmomi", "pyVim")


@pytest.mark.parametrize(
    ("provider", "processor", "unwanted"),
    [
        (VCENTER, KNATIVE, NOT_FOR_KNATIVE),
        (WEBHOOK, KNATIVE, (*NOT_FOR_KNATIVE, *NOT_VSPHERE)),
        # the horizon provider and the openfaas processor talk HTTP with aiohttp too
        (HORIZON, KNATIVE, (*NOT_FOR_KNATIVE, *NOT_VSPHERE)),
        (WEBHOOK, OPENFAAS, (*NOT_FOR_KNATIVE, *NOT_VSPHERE)),
        (HORIZON, OPENFAAS, (*NOT_FOR_KNATIVE, *NOT_VSPHERE)),
    ],
    ids=[
        "vcenter-knative",
        "webhook-knative",
        "horizon-knative",
        "webhook-openfaas",
        "horizon-openfaas",
    ],
)
def test_router_loads_no_module_its_config_does_not_use(
    provider: dict[str, Any], processor: dict[str, Any], unwanted: tuple[str, ...]
) -> None:
    loaded = loaded_after_building(provider, processor)
    assert "event_router" in loaded and "aiohttp" in loaded  # the probe did build a router
    assert sorted(loaded & set(unwanted)) == []


def test_vcenter_router_loads_the_vsphere_sdk() -> None:
    """The probe sees what a config does load (so an empty answer above means something)."""
    assert {"pyVmomi", "pyVim"} <= loaded_after_building(VCENTER)
