"""An aiohttp client session bound to a base URL, for the horizon provider and the openfaas
processor (the product's one HTTP client stack is aiohttp; the knative processor posts with
a session of its own).

* Requests go to ``base_url`` + path (joined as strings: a base URL with a path keeps it).
* Redirects are not followed; every answer is read whole into a :class:`Response`
  (``status_code``, ``headers``, ``content``, ``text``, ``json()``), which is what
  :func:`event_router.delivery.send_with_retry` looks at.
* Failures raise aiohttp's exceptions (:class:`aiohttp.ClientError`, and
  :class:`TimeoutError`): :data:`event_router.delivery.TRANSPORT_ERRORS` holds them.
* A proxy from the environment is used as before (``HTTPS_PROXY``/``HTTP_PROXY``/
  ``ALL_PROXY``, lower case first, except the hosts in ``NO_PROXY``), read once when the
  client is made; ``.netrc`` is not read.
"""

from __future__ import annotations

import json
import logging
import ssl
import urllib.request
from collections.abc import Mapping
from typing import Any
from urllib.parse import urlsplit

import aiohttp

__all__ = ["Client", "Response", "env_proxy"]

log = logging.getLogger(__name__)


class Response:
    """A read answer: status, headers and body."""

    __slots__ = ("content", "headers", "status_code")

    def __init__(self, status_code: int, headers: Mapping[str, str], content: bytes) -> None:
        self.status_code = status_code
        self.headers = headers
        self.content = content

    @property
    def text(self) -> str:
        return self.content.decode("utf-8", "replace")

    def json(self) -> Any:
        """The body as JSON; ValueError when it is not."""
        return json.loads(self.content)


def env_proxy(url: str) -> str | None:
    """The proxy the environment names for ``url`` (credentials in it kept), or None.

    Only ``http://`` proxies are supported (aiohttp's limit); another one is logged and not
    used."""
    parts = urlsplit(url)
    proxies = urllib.request.getproxies_environment()
    host = parts.hostname or ""
    # NO_PROXY entries match the host, or the host and port
    if host and urllib.request.proxy_bypass(
        f"{host}:{parts.port}" if parts.port else host, proxies
    ):
        return None
    value = proxies.get(parts.scheme) or proxies.get("all")
    if not value:
        return None
    proxy = value if "://" in value else f"http://{value}"
    found = urlsplit(proxy)
    if found.scheme != "http":
        where = found.hostname or ""
        if found.port:
            where = f"{where}:{found.port}"
        log.warning(
            "proxy %s://%s from the environment is not supported for %s (only http:// "
            "proxies); connecting directly",
            found.scheme,
            where,
            url,
        )
        return None
    return proxy


class Client:
    """A pooled keep-alive session for requests to one base URL. Make it inside the event
    loop; :meth:`aclose` it."""

    def __init__(
        self,
        base_url: str,
        *,
        ssl_context: ssl.SSLContext,
        timeout: aiohttp.ClientTimeout,
        headers: Mapping[str, str] | None = None,
        limit: int = 100,
        keepalive_timeout: float = 5.0,
    ) -> None:
        self.base_url = base_url.rstrip("/")
        #: the proxy from the environment (aiohttp sends the credentials in it)
        self.proxy = env_proxy(self.base_url)
        self.session = aiohttp.ClientSession(
            connector=aiohttp.TCPConnector(
                limit=limit, ssl=ssl_context, keepalive_timeout=keepalive_timeout
            ),
            timeout=timeout,
            headers=headers,
            proxy=self.proxy,
            # cookies for IP-address hosts too, as for names (a load balancer's affinity)
            cookie_jar=aiohttp.CookieJar(unsafe=True),
            trust_env=False,  # the proxy is read above, once; no .netrc
        )

    async def request(
        self,
        method: str,
        path: str,
        *,
        params: Mapping[str, str | int] | None = None,
        headers: Mapping[str, str] | None = None,
        json: Any = None,
        data: bytes | None = None,
    ) -> Response:
        async with self.session.request(
            method,
            self.base_url + path,
            params=params,
            headers=headers,
            json=json,
            data=data,
            allow_redirects=False,
        ) as response:
            return Response(response.status, response.headers, await response.read())

    async def get(
        self,
        path: str,
        *,
        params: Mapping[str, str | int] | None = None,
        headers: Mapping[str, str] | None = None,
    ) -> Response:
        return await self.request("GET", path, params=params, headers=headers)

    async def post(
        self,
        path: str,
        *,
        json: Any = None,
        data: bytes | None = None,
        headers: Mapping[str, str] | None = None,
    ) -> Response:
        return await self.request("POST", path, json=json, data=data, headers=headers)

    async def aclose(self) -> None:
        await self.session.close()
