"""The vcenter provider's configuration handling (no vCenter needed)."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import pytest

from event_router.checkpoints import FileStore
from event_router.config.models import RouterConfig
from event_router.core import RouterContext
from event_router.providers import provider_class
from event_router.providers.vcenter import VCenterProvider


def make(vc: dict[str, Any], type_: str = "vcenter", **extra: Any) -> RouterConfig:
    spec = {
        "auth": {"type": "basic_auth", "basicAuth": {"username": "u", "password": "s3cret"}},
        **vc,
    }
    return RouterConfig.model_validate(
        {
            "apiVersion": "event-router.vmware.com/v1alpha1",
            "kind": "RouterConfig",
            "metadata": {"name": "t"},
            "eventProvider": {"type": type_, "name": "vc", type_: spec},
            "eventProcessor": {
                "type": "knative",
                "name": "k",
                "knative": {"destination": {"uri": "http://127.0.0.1:9/"}},
            },
            **extra,
        }
    )


@pytest.mark.parametrize(
    ("address", "expected"),
    [
        ("https://vc.example.com/sdk", "https://vc.example.com/sdk"),
        ("https://vc.example.com", "https://vc.example.com/sdk"),
        ("https://vc.example.com:443/sdk/", "https://vc.example.com/sdk"),
        ("https://10.0.0.1:8443/sdk", "https://10.0.0.1:8443/sdk"),
    ],
)
def test_address_and_source(address: str, expected: str) -> None:
    p = VCenterProvider(RouterContext(make({"address": address})))
    assert p.address() == expected
    assert p.stats.address == expected
    assert "s3cret" not in repr(p.cfg)


def test_vcsim_is_a_deprecated_alias(caplog: pytest.LogCaptureFixture) -> None:
    assert provider_class("vcsim") is VCenterProvider
    with caplog.at_level(logging.WARNING):
        p = VCenterProvider(RouterContext(make({"address": "https://sim/sdk"}, type_="vcsim")))
    assert p.address() == "https://sim/sdk"
    assert p.stats.type == "vcsim"
    assert "deprecated" in caplog.text
    # /stats keeps the configured type, as the original's vcsim provider did
    from event_router.router import Router

    router = Router(RouterContext(make({"address": "https://sim/sdk"}, type_="vcsim")))
    assert "vcsim" in router.stats()["vmware.event.router.stats"]


def test_checkpoint_store_file_or_factory(tmp_path: Path) -> None:
    vc = {
        "address": "https://vc.example.com/sdk",
        "checkpoint": True,
        "checkpointDir": str(tmp_path),
    }
    store = VCenterProvider(RouterContext(make(vc))).checkpoint_store()
    assert isinstance(store, FileStore)
    assert store.path == tmp_path / "cp-vc.example.com.json"
    keys: list[str] = []

    def factory(key: str) -> FileStore:
        keys.append(key)
        return FileStore(tmp_path / "x.json")

    VCenterProvider(RouterContext(make(vc), checkpoint_store_factory=factory)).checkpoint_store()
    assert keys == ["vc.example.com"]
    no_cp = VCenterProvider(RouterContext(make({"address": "https://vc/sdk"})))
    assert no_cp.checkpoint_store() is None
