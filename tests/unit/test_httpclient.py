"""event_router.httpclient: the proxy the environment names (as httpx's trust_env did)."""

from __future__ import annotations

import logging

import pytest

from event_router.httpclient import env_proxy

PROXY_VARS = ("http_proxy", "https_proxy", "all_proxy", "no_proxy")


@pytest.fixture(autouse=True)
def no_proxy_env(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in PROXY_VARS:
        monkeypatch.delenv(name, raising=False)
        monkeypatch.delenv(name.upper(), raising=False)


def test_no_proxy_configured() -> None:
    assert env_proxy("https://horizon.corp.local") is None


def test_scheme_proxy_then_all_proxy(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HTTPS_PROXY", "http://proxy.corp:3128")
    monkeypatch.setenv("ALL_PROXY", "other.corp:8080")  # no scheme: http://
    assert env_proxy("https://horizon.corp.local") == "http://proxy.corp:3128"
    assert env_proxy("http://gateway.openfaas:8080") == "http://other.corp:8080"


def test_lower_case_wins_and_credentials_are_kept(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HTTPS_PROXY", "http://upper.corp:3128")
    monkeypatch.setenv("https_proxy", "http://user:p%40ss@proxy.corp:3128")
    # aiohttp sends the credentials of the proxy URL as Proxy-Authorization
    assert env_proxy("https://horizon.corp.local") == "http://user:p%40ss@proxy.corp:3128"


def test_no_proxy_hosts_connect_directly(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HTTPS_PROXY", "http://proxy.corp:3128")
    monkeypatch.setenv("NO_PROXY", ".corp.local, 10.0.0.5, gw:8443")
    assert env_proxy("https://horizon.corp.local") is None
    assert env_proxy("https://10.0.0.5:8443") is None
    assert env_proxy("https://gw:8443") is None
    assert env_proxy("https://gw:9443") is not None
    assert env_proxy("https://horizon.elsewhere") is not None
    monkeypatch.setenv("NO_PROXY", "*")
    assert env_proxy("https://horizon.elsewhere") is None


def test_unsupported_proxy_scheme_is_logged_and_not_used(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING)
    monkeypatch.setenv("HTTPS_PROXY", "socks5://user:secret@proxy.corp:1080")
    assert env_proxy("https://horizon.corp.local") is None
    assert "socks5://proxy.corp:1080" in caplog.text and "not supported" in caplog.text
    assert "secret" not in caplog.text
