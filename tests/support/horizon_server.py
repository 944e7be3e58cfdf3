"""A Horizon REST API test server (the parts the horizon provider uses), aiohttp on
127.0.0.1:<ephemeral port>, written from the documented Horizon Server REST API (2106+):

- ``POST /rest/login`` ``{domain, username, password}`` -> 200 ``{access_token,
  refresh_token}``; wrong credentials -> 401; a missing field -> 400.
- ``POST /rest/refresh`` ``{refresh_token}`` -> 200 ``{access_token}``; an expired or
  unknown refresh token -> 400 (the client must log in again).
- ``POST /rest/logout`` ``{refresh_token}`` -> 200 and the session's tokens are revoked;
  unknown/expired token -> 400.
- ``GET /rest/external/v1/audit-events`` with ``Authorization: Bearer <access token>``
  (missing/expired/revoked -> 401), optional ``filter`` (URL-encoded JSON: ``Between``
  with ``fromValue``/``toValue`` inclusive, ``Equals``, ``And``; anything else -> 400),
  paging ``page`` (from 1) and ``size`` (1..1000; else 400; no paging parameters: all
  results). Results are AuditEventSummary objects newest first (time, then id,
  descending); a page with more results after it carries the ``HAS_MORE_RECORDS: TRUE``
  header. ``events_db_configured = False`` makes it answer 409 (Conflict), as Horizon does
  when no event database is configured.

Errors use Horizon's body shape ``{"status", "timestamp", "error_messages": [{"error_key",
"error_message"}]}``. Token lifetimes are configurable (Horizon: access 30 min, refresh
8 h). Controls for tests: :meth:`add_event`, :meth:`expire_access_tokens`,
:meth:`expire_refresh_tokens`, :attr:`on_audit_query`, :meth:`stop`/:meth:`start` (same port),
counters.
"""

from __future__ import annotations

import json
import secrets
import socket
import ssl
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web

AUDIT_EVENTS_PATH = "/rest/external/v1/audit-events"
MAX_PAGE_SIZE = 1000


@dataclass
class _Token:
    value: str
    expires: float
    session: int


@dataclass
class Request:
    method: str
    path: str
    query: dict[str, str] = field(default_factory=dict)
    status: int = 0
    #: time.monotonic() when the request arrived
    at: float = field(default_factory=time.monotonic)


class HorizonServer:
    def __init__(
        self,
        *,
        domain: str = "corp",
        username: str = "administrator",
        password: str = "P@ssw0rd",
        access_token_lifetime: float = 1800.0,
        refresh_token_lifetime: float = 8 * 3600.0,
        ssl_context: ssl.SSLContext | None = None,
    ) -> None:
        self.ssl_context = ssl_context
        self.users: dict[tuple[str, str], str] = {(domain.lower(), username.lower()): password}
        self.access_token_lifetime = access_token_lifetime
        self.refresh_token_lifetime = refresh_token_lifetime
        self.events_db_configured = True
        self.events: list[dict[str, Any]] = []
        self.requests: list[Request] = []
        self.logins = 0
        self.failed_logins = 0
        self.refreshes = 0
        self.logouts = 0
        #: every password received at /rest/login (so tests can check it was the right one)
        self.login_bodies: list[dict[str, Any]] = []
        #: called with each audit-events request before it is answered (tests use it to
        #: add events between two pages of one poll, as a busy Horizon would)
        self.on_audit_query: Callable[[Request], None] | None = None
        self._next_id = 1000
        self._sessions = 0
        self._access: dict[str, _Token] = {}
        self._refresh: dict[str, _Token] = {}
        self._runner: web.AppRunner | None = None
        self._sock: socket.socket | None = None
        self.port = 0

    # --- lifecycle --------------------------------------------------------------------

    @property
    def url(self) -> str:
        scheme = "https" if self.ssl_context is not None else "http"
        return f"{scheme}://127.0.0.1:{self.port}"

    @property
    def running(self) -> bool:
        return self._runner is not None

    async def __aenter__(self) -> HorizonServer:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    async def start(self) -> None:
        """Start serving (again on the same port after :meth:`stop`)."""
        if self._runner is not None:
            return
        app = web.Application()
        app.router.add_post("/rest/login", self._login)
        app.router.add_post("/rest/refresh", self._refresh_handler)
        app.router.add_post("/rest/logout", self._logout)
        app.router.add_get(AUDIT_EVENTS_PATH, self._audit_events)
        runner = web.AppRunner(app, handle_signals=False)
        await runner.setup()
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(("127.0.0.1", self.port))
        self.port = sock.getsockname()[1]
        site = web.SockSite(runner, sock, ssl_context=self.ssl_context)
        await site.start()
        self._runner, self._sock = runner, sock

    async def stop(self) -> None:
        """Stop serving: connections are refused until :meth:`start`. State is kept."""
        if self._runner is None:
            return
        runner, self._runner = self._runner, None
        await runner.cleanup()
        if self._sock is not None:
            self._sock.close()
            self._sock = None

    # --- controls ---------------------------------------------------------------------

    def add_event(
        self,
        type_: str = "VLSI_USERLOGGEDIN",
        *,
        time_ms: int | None = None,
        **fields: Any,
    ) -> dict[str, Any]:
        """Record one audit event (time defaults to now); returns its AuditEventSummary."""
        self._next_id += 1
        event: dict[str, Any] = {
            "id": self._next_id,
            "type": type_,
            "time": int(time.time() * 1000) if time_ms is None else time_ms,
            "module": "Broker",
            "severity": "AUDIT_SUCCESS",
            "message": f"User CORP\\user{self._next_id} has logged in",
            "user_id": f"S-1-5-21-1000-{self._next_id}",
        }
        event.update(fields)
        self.events.append(event)
        return event

    def expire_access_tokens(self) -> None:
        for token in self._access.values():
            token.expires = 0.0

    def expire_refresh_tokens(self) -> None:
        for token in self._refresh.values():
            token.expires = 0.0

    def event_queries(self) -> list[Request]:
        return [r for r in self.requests if r.path == AUDIT_EVENTS_PATH]

    # --- handlers ---------------------------------------------------------------------

    def _record(self, request: web.Request) -> Request:
        entry = Request(request.method, request.path, dict(request.query))
        self.requests.append(entry)
        return entry

    @staticmethod
    def _error(status: int, reason: str, key: str, message: str) -> web.Response:
        body = {
            "status": reason,
            "timestamp": int(time.time() * 1000),
            "error_messages": [{"error_key": key, "error_message": message}],
        }
        return web.json_response(body, status=status)

    def _answer(self, entry: Request, response: web.Response) -> web.Response:
        entry.status = response.status
        return response

    async def _json_body(self, request: web.Request) -> dict[str, Any] | None:
        try:
            body = await request.json()
        except (json.JSONDecodeError, UnicodeDecodeError):
            return None
        return body if isinstance(body, dict) else None

    def _issue(self, session: int) -> tuple[str, str]:
        now = time.monotonic()
        access = secrets.token_urlsafe(24)
        refresh = secrets.token_urlsafe(24)
        self._access[access] = _Token(access, now + self.access_token_lifetime, session)
        self._refresh[refresh] = _Token(refresh, now + self.refresh_token_lifetime, session)
        return access, refresh

    async def _login(self, request: web.Request) -> web.Response:
        entry = self._record(request)
        body = await self._json_body(request)
        if body is None or not all(
            isinstance(body.get(k), str) for k in ("domain", "username", "password")
        ):
            return self._answer(
                entry,
                self._error(
                    400,
                    "BAD_REQUEST",
                    "invalid.request",
                    "domain, username and password are required",
                ),
            )
        self.login_bodies.append(body)
        expected = self.users.get((body["domain"].lower(), body["username"].lower()))
        if expected is None or expected != body["password"]:
            self.failed_logins += 1
            return self._answer(
                entry,
                self._error(401, "UNAUTHORIZED", "login.failed", "Authentication failed"),
            )
        self.logins += 1
        self._sessions += 1
        access, refresh = self._issue(self._sessions)
        return self._answer(
            entry, web.json_response({"access_token": access, "refresh_token": refresh})
        )

    async def _refresh_handler(self, request: web.Request) -> web.Response:
        entry = self._record(request)
        body = await self._json_body(request) or {}
        token = self._refresh.get(str(body.get("refresh_token", "")))
        if token is None or token.expires <= time.monotonic():
            return self._answer(
                entry,
                self._error(
                    400,
                    "BAD_REQUEST",
                    "refresh.token.invalid",
                    "Refresh token is invalid or expired",
                ),
            )
        self.refreshes += 1
        access = secrets.token_urlsafe(24)
        self._access[access] = _Token(
            access, time.monotonic() + self.access_token_lifetime, token.session
        )
        return self._answer(entry, web.json_response({"access_token": access}))

    async def _logout(self, request: web.Request) -> web.Response:
        entry = self._record(request)
        body = await self._json_body(request) or {}
        token = self._refresh.get(str(body.get("refresh_token", "")))
        if token is None or token.expires <= time.monotonic():
            return self._answer(
                entry,
                self._error(
                    400,
                    "BAD_REQUEST",
                    "refresh.token.invalid",
                    "Refresh token is invalid or expired",
                ),
            )
        self.logouts += 1
        for tokens in (self._access, self._refresh):
            for value in [v for v, t in tokens.items() if t.session == token.session]:
                del tokens[value]
        return self._answer(entry, web.Response(status=200))

    async def _audit_events(self, request: web.Request) -> web.Response:
        entry = self._record(request)
        if self.on_audit_query is not None:
            self.on_audit_query(entry)
        header = request.headers.get("Authorization", "")
        scheme, _, value = header.partition(" ")
        token = self._access.get(value) if scheme.lower() == "bearer" else None
        if token is None or token.expires <= time.monotonic():
            return self._answer(
                entry,
                self._error(
                    401, "UNAUTHORIZED", "unauthorized", "Access token is invalid or expired"
                ),
            )
        if not self.events_db_configured:
            return self._answer(
                entry,
                self._error(
                    409,
                    "CONFLICT",
                    "event.database.not.configured",
                    "Event database is not configured",
                ),
            )
        try:
            predicate = (
                _compile(json.loads(request.query["filter"])) if "filter" in request.query else None
            )
            page, size = _paging(request.query)
        except (ValueError, KeyError, TypeError) as exc:
            return self._answer(entry, self._error(400, "BAD_REQUEST", "invalid.filter", str(exc)))
        matching = [e for e in self.events if predicate is None or predicate(e)]
        matching.sort(key=lambda e: (e["time"], e["id"]), reverse=True)
        headers: dict[str, str] = {}
        if size is not None:
            start = (page - 1) * size
            if start + size < len(matching):
                headers["HAS_MORE_RECORDS"] = "TRUE"
            matching = matching[start : start + size]
        return self._answer(entry, web.json_response(matching, headers=headers))


def horizon_auth(
    password: str, *, username: str = "administrator", domain: str = "corp"
) -> dict[str, Any]:
    """The ``auth`` of a RouterConfig's horizon provider (``active_directory``) for a user of
    this server (the defaults are the server's)."""
    return {
        "type": "active_directory",
        "activeDirectoryAuth": {"domain": domain, "username": username, "password": password},
    }


def _paging(query: Any) -> tuple[int, int | None]:
    if "page" not in query and "size" not in query:
        return 1, None
    page = int(query.get("page", "1"))
    size = int(query.get("size", "10"))
    if page < 1:
        raise ValueError(f"page must be >= 1 (got {page})")
    if not 1 <= size <= MAX_PAGE_SIZE:
        raise ValueError(f"size must be between 1 and {MAX_PAGE_SIZE} (got {size})")
    return page, size


def _compile(spec: Any) -> Any:
    """A Horizon filter (JSON) -> predicate over an AuditEventSummary."""
    if not isinstance(spec, dict):
        raise ValueError("filter must be a JSON object")
    kind = spec.get("type")
    if kind == "Between":
        name, low, high = spec["name"], spec["fromValue"], spec["toValue"]
        if not isinstance(low, int) or not isinstance(high, int):
            raise ValueError("Between: fromValue and toValue must be numbers")
        return lambda e: name in e and low <= e[name] <= high
    if kind == "Equals":
        name, value = spec["name"], spec["value"]
        return lambda e: e.get(name) == value
    if kind == "And":
        parts = [_compile(f) for f in spec["filters"]]
        return lambda e: all(p(e) for p in parts)
    raise ValueError(f"unsupported filter type {kind!r} (supported: Between, Equals, And)")
