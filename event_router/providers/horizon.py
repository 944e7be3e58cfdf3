"""The ``horizon`` provider: polls the Horizon REST API's audit events (Horizon 2106+).

Session: ``POST /rest/login`` ({domain, username, password}) -> access and refresh tokens;
on a 401 the access token is refreshed (``POST /rest/refresh``), and when the refresh
token has expired too (400) the provider logs in again. ``POST /rest/logout`` on close.

Polling: ``GET /rest/external/v1/audit-events`` with a ``Between`` time filter from the
last seen event time to now (+ a day for clock skew), page by page (``page``/``size``).
Results come newest first; the provider delivers them oldest first. The stream position
is the last event time plus the ids seen at that time, so overlapping windows and events
sharing a millisecond are never delivered twice. A window holding more than
``max_window_events`` events is narrowed (to the oldest event of the first pages, then
halved) so a long backlog is streamed in bounded memory.

Checkpoints (``checkpoint: true`` or the operator's ConfigMap store): ``{lastEventTime,
idsAtLastTime, ...}``, advanced only over delivered events, saved every
``checkpoint.periodSeconds`` when it moved and on close; on restart the provider resumes
there (no older than ``checkpoint.maxAgeSeconds``). Without a checkpoint the stream starts
after the newest existing event.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import json
import logging
import ssl
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar
from urllib.parse import urlsplit

import aiohttp

from event_router.checkpoints import Checkpoint, CheckpointStore, CheckpointTracker, FileStore
from event_router.config.models import HorizonConfig
from event_router.core import Provider, Publisher, RouterContext
from event_router.delivery import TRANSPORT_ERRORS
from event_router.events.horizon import rfc3339_millis, to_cloudevent
from event_router.httpclient import Client, Response
from event_router.timefmt import rfc3339

__all__ = [
    "AUDIT_EVENTS_PATH",
    "CheckpointUnavailable",
    "Cursor",
    "HorizonAPIError",
    "HorizonLoginError",
    "HorizonProvider",
    "HorizonSession",
    "HorizonTLSError",
    "between_filter",
    "new_events",
    "validate_config",
]

log = logging.getLogger(__name__)

LOGIN_PATH = "/rest/login"
REFRESH_PATH = "/rest/refresh"
LOGOUT_PATH = "/rest/logout"
AUDIT_EVENTS_PATH = "/rest/external/v1/audit-events"

#: upper bound of a window beyond "now": tolerates a Horizon clock ahead of ours
FUTURE_MS = 24 * 3600 * 1000
FIELD = "eventProvider.horizon"


class HorizonLoginError(Exception):
    """Horizon rejected the credentials (never carries the password)."""


class HorizonAPIError(Exception):
    """An unexpected answer from the Horizon REST API (transient: retried)."""


class HorizonTLSError(Exception):
    """The Horizon certificate is not trusted (at the first connection: not retried)."""


class CheckpointUnavailable(Exception):
    """The checkpoint store could not be read (e.g. the API server is down): retried."""


#: what the provider retries with backoff (aiohttp's transport errors among them)
_RETRIED: tuple[type[BaseException], ...] = (
    *TRANSPORT_ERRORS,
    HorizonAPIError,
    CheckpointUnavailable,
)


# --- pure helpers -----------------------------------------------------------------------


def validate_config(cfg: HorizonConfig | None) -> list[str]:
    """Errors in the ``horizon`` block a user can act on (empty list = valid)."""
    if cfg is None:
        return [f"{FIELD}: required when eventProvider.type is horizon"]
    errors: list[str] = []
    parts = urlsplit(cfg.address)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        errors.append(
            f"{FIELD}.address: not a URL of the Horizon REST API (got {cfg.address!r}; "
            "allowed: https://<host>[:port], e.g. https://api.myhorizon.corp.local)"
        )
    auth = cfg.auth
    if auth.type != "active_directory":
        errors.append(
            f"{FIELD}.auth.type: unsupported for horizon "
            f"(got {auth.type!r}; allowed: active_directory)"
        )
    elif auth.activeDirectoryAuth is None:
        errors.append(
            f"{FIELD}.auth.activeDirectoryAuth: required when auth.type is active_directory"
        )
    else:
        ad = auth.activeDirectoryAuth
        if "@" in ad.username:
            errors.append(
                f"{FIELD}.auth.activeDirectoryAuth.username: UPN logins are not supported "
                f"(got {ad.username!r}; allowed: the plain user name, e.g. "
                f"{ad.username.split('@', 1)[0]!r}, with the domain in activeDirectoryAuth.domain)"
            )
        if "\\" in ad.username:
            errors.append(
                f"{FIELD}.auth.activeDirectoryAuth.username: DOMAIN\\user form is not supported "
                f"(got {ad.username!r}; allowed: the plain user name, with the domain in "
                "activeDirectoryAuth.domain)"
            )
        if not ad.password.get_secret_value():
            errors.append(f"{FIELD}.auth.activeDirectoryAuth.password: must not be empty")
    return errors


def between_filter(from_ms: int, to_ms: int) -> str:
    """The audit-events ``filter`` query value: events with from_ms <= time <= to_ms."""
    return json.dumps(
        {"type": "Between", "name": "time", "fromValue": from_ms, "toValue": to_ms},
        separators=(",", ":"),
    )


@dataclass
class Cursor:
    """Stream position: every event older than ``time`` was seen, and at ``time`` the
    events whose ids are in ``ids``."""

    time: int
    ids: list[int] = field(default_factory=list)


def _event_key(event: Mapping[str, Any]) -> tuple[int, int] | None:
    try:
        t, i = event["time"], event["id"]
        if isinstance(t, bool) or isinstance(i, bool):
            return None
        return int(t), int(i)
    except (KeyError, TypeError, ValueError):
        return None


def new_events(events: list[dict[str, Any]], cursor: Cursor) -> list[dict[str, Any]]:
    """The events of a window not seen at ``cursor``, oldest first, each id once.

    ``events`` may overlap the previous window and repeat ids (pages shifting while new
    events arrive). Ties in time are ordered by id.
    """
    seen = set(cursor.ids)
    fresh: dict[int, tuple[int, int, dict[str, Any]]] = {}
    for event in events:
        key = _event_key(event)
        if key is None:
            continue
        t, i = key
        if t < cursor.time or (t == cursor.time and i in seen) or i in fresh:
            continue
        fresh[i] = (t, i, event)
    return [event for (_t, _i, event) in sorted(fresh.values(), key=lambda p: (p[0], p[1]))]


def _error_text(response: Response) -> str:
    """Status and Horizon's error message(s), short (bodies of data calls only)."""
    text = f"HTTP {response.status_code}"
    try:
        body = response.json()
    except ValueError:
        return text
    messages: list[str] = []
    if isinstance(body, dict):
        for item in body.get("error_messages") or []:
            if isinstance(item, dict) and item.get("error_message"):
                messages.append(str(item["error_message"]))
        if body.get("error_message"):
            messages.append(str(body["error_message"]))
    if messages:
        text += ": " + "; ".join(messages)[:300]
    return text


# --- session ----------------------------------------------------------------------------


class HorizonSession:
    """Tokens of one Horizon REST session. Neither tokens nor the password are logged."""

    def __init__(self, http: Client, domain: str, username: str, password: str) -> None:
        self.http = http
        self.domain = domain
        self.username = username
        self._password = password
        self._access: str | None = None
        self._refresh: str | None = None
        self.logins = 0
        self.refreshes = 0

    @property
    def active(self) -> bool:
        return self._access is not None

    def who(self) -> str:
        return f"user {self.username!r} in domain {self.domain!r}"

    async def login(self) -> None:
        body = {"domain": self.domain, "username": self.username, "password": self._password}
        response = await self.http.post(LOGIN_PATH, json=body)
        if response.status_code in (400, 401, 403):
            self._access = self._refresh = None
            raise HorizonLoginError(
                f"horizon login failed for {self.who()} at {self.http.base_url}: "
                f"HTTP {response.status_code} (check {FIELD}.auth.activeDirectoryAuth "
                "domain, username and password)"
            )
        if response.status_code != 200:
            raise HorizonAPIError(f"horizon login: unexpected answer HTTP {response.status_code}")
        try:
            tokens = response.json()
            access, refresh = tokens["access_token"], tokens["refresh_token"]
        except (ValueError, KeyError, TypeError):
            raise HorizonAPIError(
                "horizon login: answer without access_token/refresh_token"
            ) from None
        self._access, self._refresh = str(access), str(refresh)
        self.logins += 1
        log.info("horizon: logged in as %s", self.who())

    async def refresh(self) -> bool:
        """New access token from the refresh token; False when it expired (log in again)."""
        if self._refresh is None:
            return False
        response = await self.http.post(REFRESH_PATH, json={"refresh_token": self._refresh})
        if response.status_code in (400, 401):
            log.info("horizon: refresh token expired, logging in again")
            self._refresh = None
            return False
        if response.status_code != 200:
            raise HorizonAPIError(
                f"horizon token refresh: unexpected answer HTTP {response.status_code}"
            )
        try:
            self._access = str(response.json()["access_token"])
        except (ValueError, KeyError, TypeError):
            raise HorizonAPIError("horizon token refresh: answer without access_token") from None
        self.refreshes += 1
        log.debug("horizon: access token refreshed")
        return True

    async def get(self, path: str, params: Mapping[str, str | int]) -> Response:
        """GET with the access token; on 401 refresh (or log in again) and retry once."""
        if self._access is None:
            await self.login()
        response = await self._get(path, params)
        if response.status_code == 401:
            log.debug("horizon: access token rejected (401), refreshing")
            if not await self.refresh():
                await self.login()
            response = await self._get(path, params)
        return response

    async def _get(self, path: str, params: Mapping[str, str | int]) -> Response:
        headers = {"Authorization": f"Bearer {self._access}"}
        return await self.http.get(path, params=dict(params), headers=headers)

    async def logout(self) -> None:
        if self._refresh is None:
            return
        refresh, self._access, self._refresh = self._refresh, None, None
        response = await self.http.post(LOGOUT_PATH, json={"refresh_token": refresh})
        if response.status_code == 200:
            log.info("horizon: logged out")
        else:
            log.debug(
                "horizon: logout answered HTTP %s (session already expired)", response.status_code
            )


# --- provider ---------------------------------------------------------------------------

# (time, ids list shared by events of that millisecond, how many of those ids count)
Position = tuple[int, list[int], int]


class HorizonProvider(Provider):
    type: ClassVar[str] = "horizon"

    #: audit events per page (the API allows up to 1000)
    page_size: int = 500
    #: a window holding more events than this is narrowed (bounded memory for backlogs)
    max_window_events: int = 5000
    #: longest sleep between polls while idle (the poll interval doubles up to this)
    idle_max_delay: float = 5.0
    #: longest sleep between retries after errors (doubling from 1 s)
    error_max_delay: float = 10.0
    #: seconds between logins after Horizon rejected the credentials of a session that
    #: worked (a tighter loop would trip the domain's account lockout policy)
    login_rejected_delay: float = 300.0
    #: seconds for one HTTP request
    request_timeout: float = 15.0

    def __init__(self, context: RouterContext) -> None:
        super().__init__(context)
        cfg = self.config.eventProvider.horizon
        errors = validate_config(cfg)
        if errors:
            raise ValueError("; ".join(errors))
        assert cfg is not None and cfg.auth.activeDirectoryAuth is not None
        self.cfg: HorizonConfig = cfg
        self._ad = cfg.auth.activeDirectoryAuth
        self.host = urlsplit(cfg.address).hostname or "horizon"
        self.cursor: Cursor | None = None
        #: width (ms) of the next window while streaming a backlog; None = up to now
        self._span: int | None = None
        #: while in a backlog: time of the newest event known to exist
        self._backlog_until: int | None = None
        self.tracker: CheckpointTracker[Position] = CheckpointTracker()
        self.store: CheckpointStore | None = self._make_store()
        if self.store is not None:
            self.checkpoint_tracker = self.tracker
        self.checkpoint: Checkpoint | None = None
        self._saved: Checkpoint | None = None
        self._save_lock = asyncio.Lock()
        self._http: Client | None = None
        self.session: HorizonSession | None = None
        self._ever_logged_in = False
        self._closed = False
        self._blocked_logged: Position | None = None

    def address(self) -> str:
        cfg = self.config.eventProvider.horizon
        return cfg.address.rstrip("/") if cfg else ""

    def _make_store(self) -> CheckpointStore | None:
        """``checkpoint: true``: the runtime's store (ConfigMap under the operator), else a
        file in ``checkpointDir``. ``checkpoint: false``: none."""
        if not self.cfg.checkpoint:
            return None
        factory = self.context.checkpoint_store_factory
        if factory is not None:
            return factory(f"horizon-{self.host}")
        return FileStore(Path(self.cfg.checkpointDir) / f"horizon-{self.host}.json")

    # --- run --------------------------------------------------------------------------

    async def run(self, publisher: Publisher) -> None:
        timeout = self.request_timeout
        self._http = Client(
            self.address(),
            ssl_context=self.context.ssl_context(self.cfg.insecureSSL),
            # each of connecting, waiting for a pooled connection, and every read
            timeout=aiohttp.ClientTimeout(
                total=None, connect=timeout, sock_connect=timeout, sock_read=timeout
            ),
            headers={"Accept": "application/json"},
        )
        if self.cfg.insecureSSL:
            log.warning("horizon: TLS verification disabled (insecureSSL) for %s", self.address())
        self.session = HorizonSession(
            self._http, self._ad.domain, self._ad.username, self._ad.password.get_secret_value()
        )
        saver = asyncio.create_task(self._checkpoint_loop(), name="horizon-checkpoints")
        try:
            await self._stream(publisher)
        finally:
            saver.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await saver

    async def _stream(self, publisher: Publisher) -> None:
        assert self.session is not None
        interval = self.cfg.pollIntervalSeconds
        idle_max = max(self.idle_max_delay, interval)
        delay = interval
        error_delay = 1.0
        failing = False
        while True:
            try:
                if not self.session.active:
                    await self.session.login()
                    self._ever_logged_in = True
                if self.cursor is None:
                    await self._start_cursor()
                published, caught_up = await self._poll(publisher)
            except HorizonLoginError as exc:
                if not self._ever_logged_in:
                    raise
                self.ready = False
                wait = max(error_delay, self.login_rejected_delay)
                log.error("%s; retrying in %.0fs, not sooner (account lockout)", exc, wait)
                await asyncio.sleep(wait)
                continue
            except _RETRIED as exc:
                tls = _cert_error(exc)
                if tls is not None and not self._ever_logged_in:
                    raise HorizonTLSError(
                        f"horizon {self.address()}: TLS certificate not trusted ({tls}); add "
                        "its CA to certificates.rootCAs, or set eventProvider.horizon."
                        "insecureSSL: true"
                    ) from exc
                self.ready = False
                level = logging.DEBUG if failing else logging.WARNING
                log.log(
                    level,
                    "horizon %s: %s; retrying in %.1fs",
                    self.address(),
                    _describe(exc),
                    error_delay,
                )
                failing = True
                await asyncio.sleep(error_delay)
                error_delay = min(error_delay * 2, max(self.error_max_delay, 1.0))
                continue
            if failing:
                log.info("horizon %s: reachable again, resuming", self.address())
                failing = False
            error_delay = 1.0
            self.ready = True
            if not caught_up:
                delay = 0.0  # a backlog remains: next window right away
            elif published:
                delay = interval
            else:
                delay = min(max(delay, interval) * 2, idle_max)
            await asyncio.sleep(delay)

    async def _start_cursor(self) -> None:
        """From the checkpoint (within maxAgeSeconds), else after the newest event."""
        checkpoint = await self._load_checkpoint()
        now_ms = int(time.time() * 1000)
        if checkpoint is not None:
            cursor = Cursor(
                int(checkpoint["lastEventTime"]), [int(i) for i in checkpoint["idsAtLastTime"]]
            )
            oldest = now_ms - int(self.config.checkpoint.maxAgeSeconds * 1000)
            if cursor.time < oldest:
                log.warning(
                    "horizon: checkpoint at %s is older than checkpoint.maxAgeSeconds=%s; "
                    "resuming from %s (older events are not replayed)",
                    rfc3339_millis(cursor.time),
                    self.config.checkpoint.maxAgeSeconds,
                    rfc3339_millis(oldest),
                )
                cursor = Cursor(oldest, [])
            else:
                log.info(
                    "horizon: resuming after %s (%d event(s) at that time already delivered)",
                    rfc3339_millis(cursor.time),
                    len(cursor.ids),
                )
            self.checkpoint = dict(checkpoint)
            self._saved = dict(checkpoint)
            self.cursor = cursor
            return
        newest = await self._fetch_page(None, page=1, size=1)
        if not newest or _event_key(newest[0]) is None:
            cursor = Cursor(0, [])
            log.info("horizon: no audit events yet; streaming from the first one")
        else:
            t = int(newest[0]["time"])
            at_t, _, _ = await self._fetch_window(t, t)
            cursor = Cursor(t, sorted({k[1] for e in at_t if (k := _event_key(e)) and k[0] == t}))
            log.info("horizon: no checkpoint; streaming events after %s", rfc3339_millis(t))
        self.cursor = cursor
        if self.store is not None:
            self.checkpoint = self._checkpoint_for(cursor.time, list(cursor.ids))
            try:
                await self._save()
            except Exception as exc:  # the periodic save retries
                log.warning("horizon: checkpoint save to %s failed: %s", self.store.describe(), exc)

    async def _load_checkpoint(self) -> Checkpoint | None:
        if self.store is None:
            return None
        try:
            data = await self.store.load()
        except ValueError as exc:  # corrupt JSON: a restart cannot fix it
            raise RuntimeError(
                f"horizon checkpoint {self.store.describe()}: unreadable ({exc}); "
                "fix or delete it to start after the newest event"
            ) from exc
        except Exception as exc:
            raise CheckpointUnavailable(
                f"checkpoint {self.store.describe()} not readable yet: {_describe(exc)}"
            ) from exc
        if data is None:
            return None
        t, ids = data.get("lastEventTime"), data.get("idsAtLastTime", [])
        if isinstance(t, bool) or not isinstance(t, int) or not isinstance(ids, list):
            raise RuntimeError(
                f"horizon checkpoint {self.store.describe()}: lastEventTime must be epoch "
                f"milliseconds and idsAtLastTime a list (got {t!r}, {ids!r}); "
                "fix or delete it to start after the newest event"
            )
        return data

    async def _poll(self, publisher: Publisher) -> tuple[int, bool]:
        """One window: fetch, de-duplicate, publish oldest first. Returns how many were
        published and whether the window reached "now" (False: a backlog remains)."""
        cursor = self.cursor
        assert cursor is not None
        upper = int(time.time() * 1000) + FUTURE_MS
        # in a backlog, windows stay below the newest event known to exist (Horizon's
        # clock, not ours); the last window of a backlog reaches up to "now" again
        wanted = upper
        if self._span is not None and self._backlog_until is not None:
            if cursor.time + self._span < self._backlog_until:
                wanted = cursor.time + self._span
        events, to_ms, newest = await self._fetch_window(cursor.time, wanted)
        if newest is not None:
            self._backlog_until = max(self._backlog_until or newest, newest)
        caught_up = to_ms >= upper
        if caught_up:
            self._span = self._backlog_until = None
        else:  # in a backlog: next window as wide as this one (twice, if it was not full)
            span = max(1, to_ms - cursor.time)
            self._span = span * 2 if to_ms == wanted else span
        fresh = new_events(events, cursor)
        for event in fresh:
            await self._publish(publisher, event)
        if not fresh and self._backlog_until is not None and to_ms < self._backlog_until:
            # a window of the backlog held nothing new, and newer events exist: everything
            # up to to_ms was seen (the same guarantee as moving past a delivered event)
            self.cursor = Cursor(to_ms + 1, [])
        if fresh:
            log.debug(
                "horizon: %d new event(s) up to %s", len(fresh), rfc3339_millis(fresh[-1]["time"])
            )
        return len(fresh), caught_up

    async def _publish(self, publisher: Publisher, event: dict[str, Any]) -> None:
        cursor = self.cursor
        assert cursor is not None
        t, i = int(event["time"]), int(event["id"])
        if t != cursor.time:
            cursor = self.cursor = Cursor(t, [])
        cursor.ids.append(i)
        position: Position = (t, cursor.ids, len(cursor.ids))
        try:
            ce = to_cloudevent(event, self.address(), self.cfg.typeStyle)
        except ValueError as exc:
            self.stats.events_err += 1
            log.error("horizon: skipping event %s: %s", i, exc)
            skipped: asyncio.Future[bool] = asyncio.get_running_loop().create_future()
            skipped.set_result(True)
            self.tracker.add(position, skipped)
            return
        ticket = await publisher.publish(ce)  # the router counts it in stats.events_total
        self.tracker.add(position, ticket)

    # --- fetching ---------------------------------------------------------------------

    async def _fetch_page(
        self, filter_: str | None, *, page: int, size: int
    ) -> list[dict[str, Any]]:
        assert self.session is not None
        params: dict[str, str | int] = {"page": page, "size": size}
        if filter_ is not None:
            params["filter"] = filter_
        response = await self.session.get(AUDIT_EVENTS_PATH, params)
        if response.status_code == 409:
            raise HorizonAPIError(
                f"audit events unavailable ({_error_text(response)}; "
                "is the Horizon event database configured?)"
            )
        if response.status_code != 200:
            raise HorizonAPIError(f"audit events: {_error_text(response)}")
        try:
            body = response.json()
        except ValueError:
            raise HorizonAPIError("audit events: answer is not JSON") from None
        if not isinstance(body, list):
            raise HorizonAPIError(f"audit events: expected a JSON array, got {type(body).__name__}")
        return [e for e in body if isinstance(e, dict)]

    async def _fetch_window(
        self, from_ms: int, to_ms: int
    ) -> tuple[list[dict[str, Any]], int, int | None]:
        """All events with from_ms <= time <= to_ms (to_ms narrowed while the window holds
        more than max_window_events). Returns the events (newest first), the to_ms used,
        and the time of the newest event seen when it had to narrow (else None)."""
        newest: int | None = None
        while True:
            events, more = await self._fetch_pages(
                between_filter(from_ms, to_ms), self.max_window_events
            )
            if not more:
                return events, to_ms, newest
            times = [k[0] for e in events if (k := _event_key(e))]
            if times:
                newest = max(newest or max(times), max(times))
            if to_ms <= from_ms:  # one millisecond holds more: take it all
                events, _ = await self._fetch_pages(between_filter(from_ms, to_ms), None)
                return events, to_ms, newest
            oldest = min(times, default=to_ms)
            narrowed = oldest if from_ms <= oldest < to_ms else from_ms + (to_ms - from_ms) // 2
            log.debug(
                "horizon: window %s..%s holds > %d events, narrowing", from_ms, to_ms, len(events)
            )
            to_ms = narrowed

    async def _fetch_pages(
        self, filter_: str, limit: int | None
    ) -> tuple[list[dict[str, Any]], bool]:
        """Pages of one filter; stops after ``limit`` events. Returns (events, more)."""
        events: list[dict[str, Any]] = []
        page = 1
        while True:
            batch = await self._fetch_page(filter_, page=page, size=self.page_size)
            events.extend(batch)
            if len(batch) < self.page_size:
                return events, False
            if limit is not None and len(events) >= limit:
                return events, True
            page += 1

    # --- checkpoints ------------------------------------------------------------------

    def _checkpoint_for(self, t: int, ids: list[int]) -> Checkpoint:
        return {
            "address": self.address(),
            "lastEventTime": t,
            "lastEventTimeRFC3339": rfc3339_millis(t),
            "idsAtLastTime": list(ids),
            "savedAt": rfc3339(dt.datetime.now(dt.UTC), 3),
        }

    def _advance(self) -> None:
        position = self.tracker.advance()
        if position is not None:
            t, ids, n = position
            self.checkpoint = self._checkpoint_for(t, ids[:n])
        blocked = self.tracker.blocked_by
        if blocked is not None and blocked is not self._blocked_logged:
            self._blocked_logged = blocked
            log.warning(
                "horizon: checkpoint held before the event %s at %s: it was not delivered",
                blocked[1][blocked[2] - 1],
                rfc3339_millis(blocked[0]),
            )

    async def _save(self) -> None:
        if self.store is None or self.checkpoint is None:
            return
        async with self._save_lock:
            checkpoint = self.checkpoint
            if self._saved is not None and _same_position(self._saved, checkpoint):
                return
            await self.store.save(checkpoint)
            self.checkpoint_advanced_at = time.time()
            self._saved = checkpoint
            log.debug(
                "horizon: checkpoint %s saved to %s",
                checkpoint["lastEventTimeRFC3339"],
                self.store.describe(),
            )

    async def _checkpoint_loop(self) -> None:
        if self.store is None:
            return
        while True:
            await asyncio.sleep(self.config.checkpoint.periodSeconds)
            self._advance()
            try:
                await self._save()
            except Exception as exc:
                log.warning("horizon: checkpoint save to %s failed: %s", self.store.describe(), exc)

    async def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        self.ready = False
        try:
            self._advance()
            await self._save()
        except Exception as exc:
            log.error("horizon: final checkpoint save failed: %s", exc)
        if self.session is not None:
            try:
                await self.session.logout()
            except TRANSPORT_ERRORS as exc:
                log.debug("horizon: logout failed: %s", _describe(exc))
        if self._http is not None:
            await self._http.aclose()


def _same_position(a: Checkpoint, b: Checkpoint) -> bool:
    keys = ("lastEventTime", "idsAtLastTime")
    return all(a.get(k) == b.get(k) for k in keys)


def _cert_error(exc: BaseException) -> str | None:
    """The certificate verification failure behind ``exc``, if that is what it is."""
    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        if isinstance(current, aiohttp.ClientConnectorCertificateError):
            current = current.certificate_error  # aiohttp's wrapper is one too
        if isinstance(current, ssl.SSLCertVerificationError):
            return current.verify_message or str(current)
        current = current.__cause__ or current.__context__
    return None


def _describe(exc: BaseException) -> str:
    text = str(exc)
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__
