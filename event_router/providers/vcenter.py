"""The vCenter event provider (type ``vcenter``; ``vcsim`` is a deprecated alias).

One EventHistoryCollector over the root folder (recursion ``all``), read with
``ReadNextEvents`` pages back to back while there is a backlog. When caught up it waits
for the collector's ``latestPage`` to change with ``WaitForUpdatesEx`` (push: an event is
read as soon as vCenter has it), polling only if the server does not support that. While
events keep coming it reads once per ``batchWindowSeconds`` instead of waking on each one.

pyVmomi is blocking and its stubs are not thread-safe, so every vSphere call runs in one
dedicated thread per provider. On NotAuthenticated, a lost connection or a restarted
vCenter the provider logs in again with exponential backoff and resumes after the last
event it published; ``ready`` is False meanwhile and the process keeps running.

Checkpoints (``checkpoint: true``): the original router's JSON (``cp-<host>.json`` in
``checkpointDir``, or the runtime's store, e.g. a ConfigMap), advanced only over events
every processor delivered, written every ``checkpoint.periodSeconds`` when something new
was delivered and on shutdown. A fresh start writes its first checkpoint at once.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import http.client
import logging
import random
import ssl
import time
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, TypeVar
from urllib.parse import urlsplit

from pyVim import connect
from pyVmomi import vim, vmodl

from event_router.checkpoints import (
    CheckpointStore,
    CheckpointTracker,
    FileStore,
    VCenterCheckpoint,
)
from event_router.config.models import VCenterConfig
from event_router.core import Provider, Publisher, RouterContext
from event_router.events.vcenter import event_name, rfc3339, to_cloudevent
from event_router.workers import DaemonWorker

log = logging.getLogger(__name__)

T = TypeVar("T")

#: how long one WaitForUpdatesEx may block (also bounds shutdown and keeps the session alive)
WAIT_SECONDS = 2
#: empty reads in a row after which a live stream goes back to waiting for a push
QUIET_READS = 3
#: polling interval when the server does not support WaitForUpdatesEx
POLL_SECONDS = 0.5
#: socket timeout of every vSphere call (must exceed WAIT_SECONDS)
HTTP_TIMEOUT_SECONDS = 30
#: how long a stop waits to log out (a hung vCenter must not hold up the shutdown)
LOGOUT_TIMEOUT_SECONDS = 2.0
BACKOFF_INITIAL = 0.5
BACKOFF_MAX = 30.0
#: after vCenter rejected the password of a session that worked: seconds between login tries
#: (vCenter SSO locks an account after 5 failures in 180 s by default; one a minute or more
#: often would lock the service account for everyone)
LOGIN_REJECTED_RETRY_SECONDS = 300.0


class VCenterStartupError(Exception):
    """A problem a restart cannot fix (wrong credentials, untrusted certificate)."""


@dataclass(frozen=True)
class Position:
    """Where the stream is: the last event published (or delivered, for checkpoints)."""

    key: int
    created: dt.datetime
    type: str


@dataclass(frozen=True)
class Step:
    """One round of the stream: the events read, the property collector's version, whether
    the page was short (caught up: wait before the next read), push or poll."""

    events: list[Any]
    version: str
    caught_up: bool
    push: bool
    count: int = 100
    #: empty reads left before waiting for a push again (0: wait now; see _next_page)
    hot: int = 0
    #: key of the last event read (equality only: int32 keys may wrap)
    last_key: int | None = None


class ResumeFilter:
    """Skips the events already delivered at a resume point.

    The collector starts at the resume point's ``createdTime`` (inclusive), so events that
    share that timestamp come again. Those up to and including the resume key are dropped;
    if the key is not among them (vCenter restarted, history pruned) they are all passed
    on: at least once. Keys are compared for equality only, never for order (int32 keys
    may wrap to negative values).
    """

    def __init__(self, key: int, created: dt.datetime) -> None:
        self.key = key
        self.created = created
        self.active = True
        self._held: list[Any] = []

    def feed(self, event: Any) -> list[Any]:
        if not self.active:
            return [event]
        created = event.createdTime
        if created < self.created:
            return [event]
        if created == self.created:
            if event.key == self.key:
                self._held.clear()
                self.active = False
                return []
            self._held.append(event)
            return []
        return [*self.release(), event]

    def release(self) -> list[Any]:
        """Caught up without meeting the key: pass on what was held."""
        self.active = False
        held, self._held = self._held, []
        return held


def _split_address(address: str, field: str = "eventProvider.vcenter") -> tuple[str, str, int, str]:
    """``https://host[:port][/sdk]`` (or a bare host) -> scheme, host, port, path."""
    text = address.strip()
    if "://" not in text:
        text = "https://" + text
    parts = urlsplit(text)
    scheme = parts.scheme.lower()
    if scheme not in ("http", "https"):
        raise ValueError(f"{field}.address: scheme must be https or http (got {address!r})")
    host = parts.hostname
    if not host:
        raise ValueError(f"{field}.address: no host in {address!r}")
    try:
        port = parts.port or (443 if scheme == "https" else 80)
    except ValueError:
        raise ValueError(f"{field}.address: bad port in {address!r}") from None
    path = parts.path.rstrip("/") or "/sdk"
    return scheme, host, port, path


def _is_transient(exc: BaseException) -> bool:
    """Errors after which logging in again may help."""
    return isinstance(
        exc,
        vim.fault.NotAuthenticated
        | vmodl.fault.ManagedObjectNotFound
        | vmodl.fault.RequestCanceled
        | vmodl.fault.HostCommunication
        | vmodl.fault.SystemError
        | vim.fault.InvalidState
        | OSError
        | http.client.HTTPException
        | EOFError,
    )


def _latest_key(update: Any) -> int | None:
    """The key of the newest event on the collector's latest page in a WaitForUpdatesEx
    update, or None (no such change, an empty page). vCenter sends the page's current
    value; vcsim sends one change per event since the version, so the last one counts."""
    key = None
    for filter_update in update.filterSet or []:
        for object_update in filter_update.objectSet or []:
            for change in object_update.changeSet or []:
                if change.name == "latestPage":
                    key = int(change.val[-1].key) if change.val else None
    return key


def _msg(exc: BaseException) -> str:
    return str(getattr(exc, "msg", None) or exc)


class VCenterProvider(Provider):
    type = "vcenter"

    def __init__(self, context: RouterContext) -> None:
        ep = context.config.eventProvider
        cfg: VCenterConfig | None = ep.vcsim or ep.vcenter if ep.type == "vcsim" else ep.vcenter
        if cfg is None:
            raise ValueError(
                f"eventProvider.{ep.type}: missing (type {ep.type!r} needs a "
                f"'{ep.type}:' section with address and auth)"
            )
        self.cfg = cfg
        #: where this provider's fields are in the config, for errors
        block = "vcsim" if ep.type == "vcsim" and ep.vcsim is not None else "vcenter"
        self.field = f"eventProvider.{block}"
        self.scheme, self.host, self.port, self.path = _split_address(cfg.address, self.field)
        super().__init__(context)
        self.stats.type = ep.type
        if ep.type == "vcsim":
            log.warning("eventProvider.type 'vcsim' is deprecated; use 'vcenter' (same fields)")
        auth = cfg.auth
        if auth.type != "basic_auth" or auth.basicAuth is None:
            raise ValueError(
                f"{self.field}.auth.type: must be basic_auth with basicAuth "
                f"username/password (got {auth.type!r})"
            )
        self._username = auth.basicAuth.username
        self._password = auth.basicAuth.password
        self._executor = DaemonWorker(f"vc-{self.host}")
        self._si: Any = None
        self._content: Any = None
        self._instance_uuid = ""
        self._api_version = ""
        self._collector: Any = None
        self._filter: Any = None
        #: the session's PropertyCollector (``si.content`` is a round trip on every access)
        self._pc: Any = None
        #: last event handed to the publisher (resume point after a reconnect)
        self._last_published: Position | None = None
        self._resume: ResumeFilter | None = None
        self._tracker: CheckpointTracker[Position] = CheckpointTracker()
        self._store: CheckpointStore | None = None
        self._checkpointed: Position | None = None
        self._checkpoint_task: asyncio.Task[None] | None = None
        self._closed = False
        #: where the collector began on the first connect
        self._begin: dt.datetime | None = None
        self._blocked_logged: Position | None = None
        #: events published / skipped by the resume filter (for tests and /stats)
        self.skipped = 0

    # --- identity ------------------------------------------------------------------------

    def address(self) -> str:
        default = 443 if self.scheme == "https" else 80
        port = "" if self.port == default else f":{self.port}"
        return f"{self.scheme}://{self.host}{port}{self.path}"

    def checkpoint_store(self) -> CheckpointStore | None:
        if not self.cfg.checkpoint:
            return None
        factory = self.context.checkpoint_store_factory
        if factory is not None:
            return factory(self.host)
        return FileStore(Path(self.cfg.checkpointDir) / f"cp-{self.host}.json")

    # --- thread plumbing -------------------------------------------------------------------

    async def _call(self, fn: Callable[..., T], *args: Any) -> T:
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._executor, fn, *args)

    # --- session -------------------------------------------------------------------------

    def _login(self) -> None:
        ssl_context = self.context.ssl_context(self.cfg.insecureSSL)
        si = connect.SmartConnect(
            protocol=self.scheme,
            host=self.host,
            port=self.port,
            path=self.path,
            user=self._username,
            pwd=self._password.get_secret_value(),
            sslContext=ssl_context if self.scheme == "https" else None,
            disableSslCertValidation=self.cfg.insecureSSL,
            httpConnectionTimeout=HTTP_TIMEOUT_SECONDS,
        )
        content = si.content
        about = content.about
        self._si = si
        self._content = content
        self._instance_uuid = str(about.instanceUuid or self.address())
        self._api_version = str(about.apiVersion or "")

    def _logout(self) -> None:
        si, self._si = self._si, None
        collector, prop_filter = self._collector, self._filter
        self._collector = self._filter = self._pc = None
        if si is None:
            return
        # vCenter limits collectors (32 by default): release ours when the session still works
        with contextlib.suppress(Exception):
            if prop_filter is not None:
                prop_filter.Destroy()
            if collector is not None:
                collector.DestroyCollector()
        with contextlib.suppress(Exception):
            connect.Disconnect(si)

    def _now(self) -> dt.datetime:
        now: dt.datetime = self._si.CurrentTime()
        return now.astimezone(dt.UTC)

    def _open_collector(self, begin: dt.datetime) -> None:
        content = self._content
        spec = vim.event.EventFilterSpec(
            entity=vim.event.EventFilterSpec.ByEntity(entity=content.rootFolder, recursion="all"),
            time=vim.event.EventFilterSpec.ByTime(beginTime=begin),
        )
        collector = content.eventManager.CreateCollectorForEvents(filter=spec)
        # latestPage is only our wake-up signal: keep it (and each update) small
        with contextlib.suppress(vmodl.MethodFault):
            collector.SetCollectorPageSize(1)
        pc = content.propertyCollector
        filter_spec = vmodl.query.PropertyCollector.FilterSpec(
            objectSet=[vmodl.query.PropertyCollector.ObjectSpec(obj=collector, skip=False)],
            propSet=[
                vmodl.query.PropertyCollector.PropertySpec(
                    type=vim.event.EventHistoryCollector, pathSet=["latestPage"], all=False
                )
            ],
        )
        self._filter = pc.CreateFilter(filter_spec, partialUpdates=False)
        self._collector = collector
        self._pc = pc

    def _read(self, count: int) -> list[Any]:
        return list(self._collector.ReadNextEvents(maxCount=count) or [])

    def _wait(self, version: str) -> tuple[str, int | None] | None:
        """Block until ``latestPage`` changes after ``version`` (or WAIT_SECONDS pass: None).
        The new version and the key of the newest event (the one-event latest page), if any."""
        options = vmodl.query.PropertyCollector.WaitOptions(maxWaitSeconds=WAIT_SECONDS)
        update = self._pc.WaitForUpdatesEx(version, options)
        if update is None:
            return None
        return str(update.version), _latest_key(update)

    def _next_page(self, step: Step) -> Step:
        """One round in the worker thread (one hand-off to the event loop per round).

        - Backlog (the last page was full): read the next page at once.
        - Caught up and quiet: block in WaitForUpdatesEx until vCenter has a new event,
          then read. If the latest page shows the event last read (the change was one
          already read), wait again instead of reading an empty page.
        - Caught up while events flow (a read in the last ``QUIET_READS`` rounds found
          some): sleep ``batchWindowSeconds``, then read what came meanwhile. A steady
          stream costs one read per window instead of a wait and a read per event; the
          first event after a quiet spell still wakes the wait at once.
        """
        version = step.version
        if step.caught_up:
            if not step.push:
                time.sleep(POLL_SECONDS)
            elif step.hot and self.cfg.batchWindowSeconds > 0:
                time.sleep(self.cfg.batchWindowSeconds)
            else:
                changed = self._wait(version)
                if changed is None:  # nothing new within WAIT_SECONDS
                    return replace(step, events=[])
                version, latest = changed
                if latest is not None and latest == step.last_key:
                    return replace(step, events=[], version=version, hot=0)
        events = self._read(step.count)
        return replace(
            step,
            events=events,
            version=version,
            caught_up=len(events) < step.count,
            hot=QUIET_READS if events else max(step.hot - 1, 0),
            last_key=int(events[-1].key) if events else step.last_key,
        )

    # --- run -------------------------------------------------------------------------------

    async def _load_checkpoint(self) -> VCenterCheckpoint | None:
        """The saved checkpoint; an unreadable store is retried with backoff (never a crash
        loop), a checkpoint that is not one is a startup error naming the file or ConfigMap."""
        assert self._store is not None
        delay = BACKOFF_INITIAL
        while True:
            try:
                raw = await self._store.load()
                break
            except ValueError:
                raise
            except Exception as e:
                log.error(
                    "vcenter %s: cannot read checkpoint %s (%s: %s); retrying in %.1fs",
                    self.address(),
                    self._store.describe(),
                    type(e).__name__,
                    _msg(e),
                    delay,
                )
                await asyncio.sleep(delay * random.uniform(0.8, 1.2))
                delay = min(delay * 2, BACKOFF_MAX)
        if raw is None:
            return None
        saved = VCenterCheckpoint.from_json(raw, where=f"checkpoint {self._store.describe()}")
        log.info(
            "vcenter %s: checkpoint %s: last event %d (%s) at %s",
            self.address(),
            self._store.describe(),
            saved.last_event_key,
            saved.last_event_type or "-",
            rfc3339(saved.last_event_time),
        )
        return saved

    async def prepare(self) -> None:
        """A standby logs in once (wrong credentials or an untrusted certificate fail it at
        once, not at takeover), then logs out: a session idle for hours would expire."""
        try:
            await self._call(self._login)
        except vim.fault.InvalidLogin as e:
            raise VCenterStartupError(
                f"{self.field}.auth.basicAuth: vCenter {self.address()} "
                f"rejected the login of user {self._username!r}: {_msg(e)}"
            ) from None
        except ssl.SSLCertVerificationError as e:
            raise VCenterStartupError(
                f"{self.field}.address: the TLS certificate of {self.address()} is not "
                f"trusted ({e.verify_message}); add its CA to certificates.rootCAs or set "
                "insecureSSL: true"
            ) from None
        except Exception as e:
            # unreachable now: the standby still waits (it retries at takeover)
            log.warning("vcenter %s: standby login check failed: %s", self.address(), _msg(e))
            return
        await self._call(self._logout)
        log.info("vcenter %s: standby: login checked", self.address())

    async def run(self, publisher: Publisher) -> None:
        self._store = self.checkpoint_store()
        if self._store is not None:
            self.checkpoint_tracker = self._tracker
        saved = await self._load_checkpoint() if self._store is not None else None
        first = True
        delay = BACKOFF_INITIAL
        try:
            while True:
                try:
                    await self._call(self._login)
                    if self._begin is None:
                        # once: a retry of the first connect must not move the start forward
                        begin = self._begin = await self._start_point(saved)
                    else:
                        begin = self._resume_point()
                    await self._call(self._open_collector, begin)
                    if first:
                        if self._store is not None and saved is None:
                            # before any event is read: a failure here is retried like a
                            # lost connection, so the first checkpoint always exists
                            await self._save(Position(0, begin, ""), force=True)
                        first = False
                        if self._store is not None and self._checkpoint_task is None:
                            self._checkpoint_task = asyncio.create_task(
                                self._checkpoint_loop(), name=f"checkpoints {self.address()}"
                            )
                    self.ready = True
                    delay = BACKOFF_INITIAL
                    log.info("vcenter %s: connected, streaming events", self.address())
                    await self._stream(publisher)
                except asyncio.CancelledError:
                    raise
                except vim.fault.InvalidLogin as e:
                    if first:
                        raise VCenterStartupError(
                            f"{self.field}.auth.basicAuth: vCenter {self.address()} "
                            f"rejected the login of user {self._username!r}: {_msg(e)}"
                        ) from None
                    delay = max(delay, LOGIN_REJECTED_RETRY_SECONDS)
                    log.error(
                        "vcenter %s: login of user %r rejected (%s); retrying in %.0fs, not "
                        "sooner, so the account is not locked (fix the password and restart, or "
                        "update the Secret under the operator)",
                        self.address(),
                        self._username,
                        _msg(e),
                        delay,
                    )
                except ssl.SSLCertVerificationError as e:
                    if first:
                        raise VCenterStartupError(
                            f"{self.field}.address: the TLS certificate of "
                            f"{self.address()} is not trusted ({e.verify_message}); add its CA "
                            "to certificates.rootCAs or set insecureSSL: true"
                        ) from None
                    log.error("vcenter %s: TLS verification failed: %s", self.address(), e)
                except Exception as e:
                    if not _is_transient(e):
                        log.exception("vcenter %s: unexpected error, reconnecting", self.address())
                    else:
                        log.warning(
                            "vcenter %s: %s: %s; reconnecting in %.1fs",
                            self.address(),
                            type(e).__name__,
                            _msg(e),
                            delay,
                        )
                self.ready = False
                await self._call(self._logout)
                await asyncio.sleep(delay * random.uniform(0.8, 1.2))
                delay = min(delay * 2, BACKOFF_MAX)
        finally:
            self.ready = False

    async def _start_point(self, saved: VCenterCheckpoint | None) -> dt.datetime:
        """Where the collector begins on the first connect (and the resume filter)."""
        now = await self._call(self._now)
        max_age = self.config.checkpoint.maxAgeSeconds
        if saved is None:
            return now
        if max_age == 0:
            log.info("vcenter %s: checkpoint.maxAgeSeconds is 0: no replay", self.address())
            return now
        oldest = now - dt.timedelta(seconds=max_age)
        if saved.last_event_time < oldest:
            log.warning(
                "vcenter %s: checkpoint at %s is older than checkpoint.maxAgeSeconds (%gs); "
                "replaying from %s only",
                self.address(),
                rfc3339(saved.last_event_time),
                max_age,
                rfc3339(oldest),
            )
            return oldest
        pos = Position(saved.last_event_key, saved.last_event_time, saved.last_event_type)
        if saved.last_event_type:
            self._resume = ResumeFilter(saved.last_event_key, saved.last_event_time)
        if saved.last_event_time > now:
            # vCenter's clock was stepped back since the checkpoint: from the checkpoint's
            # time on, every event until the clock catches up would be skipped. Begin at
            # vCenter's now instead (events between now and the checkpoint come again:
            # at least once, with their ids)
            log.warning(
                "vcenter %s: checkpoint at %s is ahead of vCenter's clock (%s); resuming "
                "from vCenter's current time",
                self.address(),
                rfc3339(saved.last_event_time),
                rfc3339(now),
            )
            return now
        self._checkpointed = pos
        return saved.last_event_time

    def _resume_point(self) -> dt.datetime:
        last = self._last_published or self._checkpointed
        if last is None:
            assert self._begin is not None
            return self._begin
        if last.type:
            self._resume = ResumeFilter(last.key, last.created)
        return last.created

    async def _stream(self, publisher: Publisher) -> None:
        step = Step([], "", caught_up=False, push=True, count=self.cfg.pageSize)
        while True:
            try:
                step = await self._call(self._next_page, step)
            except (vmodl.fault.NotSupported, vmodl.fault.MethodNotFound) as e:
                log.warning(
                    "vcenter %s: WaitForUpdatesEx unavailable (%s); polling every %ss",
                    self.address(),
                    type(e).__name__,
                    POLL_SECONDS,
                )
                step = Step([], step.version, caught_up=True, push=False, count=step.count)
                continue
            for event in step.events:
                for ready_event in self._resume.feed(event) if self._resume else [event]:
                    await self._publish(publisher, ready_event)
            if step.caught_up and self._resume is not None and self._resume.active:
                for held in self._resume.release():
                    await self._publish(publisher, held)

    async def _publish(self, publisher: Publisher, event: Any) -> None:
        pos = Position(int(event.key), event.createdTime, event_name(event))
        try:
            ce = to_cloudevent(
                event,
                source=self.address(),
                instance_uuid=self._instance_uuid,
                api_version=self._api_version,
                type_style=self.cfg.typeStyle,
            )
        except Exception:
            self.stats.events_err += 1
            log.exception("vcenter %s: cannot convert event %d; skipped", self.address(), pos.key)
            self._last_published = pos
            return
        ticket = await publisher.publish(ce)  # the router counts it in stats.events_total
        self._last_published = pos
        if self._store is not None:
            self._tracker.add(pos, ticket)

    # --- checkpoints ---------------------------------------------------------------------

    async def _save(self, pos: Position, *, force: bool = False) -> None:
        if self._store is None or (not force and pos == self._checkpointed):
            return
        cp = VCenterCheckpoint(
            vcenter=self.address(),
            last_event_key=pos.key,
            last_event_type=pos.type,
            last_event_time=pos.created,
            created=dt.datetime.now(dt.UTC),
        )
        await self._store.save(cp.to_json())
        self.checkpoint_advanced_at = time.time()
        self._checkpointed = pos
        log.debug("vcenter %s: checkpoint at event %d", self.address(), pos.key)

    async def _checkpoint_now(self) -> None:
        pos = self._tracker.advance()
        blocked = self._tracker.blocked_by
        if blocked is not None and blocked is not self._blocked_logged:
            self._blocked_logged = blocked
            log.error(
                "vcenter %s: event %d (%s) was not delivered: the checkpoint stays before it, "
                "so a restart replays from there (at most checkpoint.maxAgeSeconds)",
                self.address(),
                blocked.key,
                blocked.type or "-",
            )
        if pos is not None:
            await self._save(pos)

    async def _checkpoint_loop(self) -> None:
        period = self.config.checkpoint.periodSeconds
        while True:
            await asyncio.sleep(period)
            try:
                await self._checkpoint_now()
            except Exception:
                log.exception("vcenter %s: writing the checkpoint failed", self.address())

    async def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        self.ready = False
        if self._checkpoint_task is not None:
            self._checkpoint_task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._checkpoint_task
        if self._store is not None:
            try:
                await self._checkpoint_now()
            except Exception:
                log.exception("vcenter %s: final checkpoint failed", self.address())
        try:
            await asyncio.wait_for(self._call(self._logout), LOGOUT_TIMEOUT_SECONDS)
        except TimeoutError:
            log.warning(
                "vcenter %s: vCenter did not answer within %gs; stopping without logging out",
                self.address(),
                LOGOUT_TIMEOUT_SECONDS,
            )
        except Exception as e:
            log.debug("vcenter %s: logout failed: %s", self.address(), e)
        self._executor.shutdown(wait=False, cancel_futures=True)
