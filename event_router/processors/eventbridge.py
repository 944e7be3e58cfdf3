"""Processor ``aws_event_bridge``: filter locally with the rule's pattern, PutEvents in batches.

At start the processor finds the configured rule (``ruleARN``) on the event bus, loads its
``EventPattern`` and compiles it (:mod:`event_router.patterns`); it re-reads the rule every
``ruleRefreshSeconds`` so a changed pattern applies without a restart. Events are matched
locally against the EventBridge envelope EventBridge itself would build::

    {"version": "0", "source": <ce source>, "detail-type": <subject or type>,
     "account": <from ruleARN>, "region": <region>, "resources": [], "detail": <CloudEvent>}

Matching events are sent with ``PutEvents`` in batches of up to 10 entries and 256 KB. A
batch leaves at once when no call is in flight, otherwise it waits for the call to finish,
for 10 entries, or at most one second. Entries that come back failed (``FailedEntryCount``)
are retried alone, with backoff; ``process`` returns once its entry was accepted by
EventBridge and raises :class:`DeliveryError` when it was not.

boto3 runs in a small thread pool of its own, never on the event loop.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import json
import logging
import re
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import datetime
from functools import partial
from typing import Any

from cloudevents.conversion import to_json

from event_router.config.models import AWSEventBridgeConfig, EventProcessor
from event_router.core import CloudEvent, DeliveryError, Processor, RouterContext
from event_router.delivery import RetryPolicy
from event_router.patterns import Pattern, PatternError, compile_pattern

log = logging.getLogger(__name__)

__all__ = ["EventBridgeProcessor", "EventBridgeSetupError", "entry_size"]

FIELD = "eventProcessor.awsEventBridge"
#: PutEvents limits (EventBridge quotas)
MAX_BATCH_ENTRIES = 10
MAX_BATCH_BYTES = 256 * 1024
#: a batch waits at most this long for more entries
MAX_BATCH_DELAY = 1.0
#: PutEvents calls in flight at once
SENDERS = 2
#: selected events whose encoding is kept for process() (more than any queue holds)
SELECTED_CACHE = 4096
#: per-entry error codes that will not succeed when retried
PERMANENT_ENTRY_ERRORS = frozenset(
    {
        "AccessDeniedException",
        "InvalidArgument",
        "MalformedDetail",
        "NotAuthorizedForDetailTypeException",
        "NotAuthorizedForSourceException",
        "ResourceNotFoundException",
        "ValidationException",
    }
)
#: whole-call error codes worth retrying (besides HTTP 429 and 5xx)
RETRYABLE_CALL_ERRORS = frozenset(
    {
        "InternalException",
        "InternalFailure",
        "RequestTimeout",
        "ServiceUnavailable",
        "ThrottledException",
        "Throttling",
        "ThrottlingException",
        "TooManyRequestsException",
    }
)

_RULE_ARN = re.compile(
    r"^arn:(?P<partition>[\w-]+):events:(?P<region>[\w-]*):(?P<account>\d*):"
    r"rule/(?:(?P<bus>[^/]+)/)?(?P<name>[^/]+)$"
)
_BUS_ARN = re.compile(r"^arn:[\w-]+:events:[\w-]*:\d*:event-bus/(?P<name>[^/]+)$")


class EventBridgeSetupError(RuntimeError):
    """The rule cannot be used: missing, no pattern, unsupported pattern, no access."""


@dataclass(eq=False)
class _Entry:
    request: dict[str, Any]
    size: int
    future: asyncio.Future[None]
    enqueued: float = field(default_factory=time.monotonic)
    attempts: int = 0
    event_type: str | None = None


def entry_size(request: dict[str, Any]) -> int:
    """An entry's size as EventBridge counts it against the 256 KB limit."""
    size = 14 if "Time" in request else 0
    for key in ("Source", "DetailType", "Detail"):
        if key in request:
            size += len(request[key].encode())
    for resource in request.get("Resources", ()):
        size += len(resource.encode())
    return size


class EventBridgeProcessor(Processor):
    type = "aws_event_bridge"
    #: events handed to ``process`` at once; enough to fill several batches
    max_in_flight = 50

    def __init__(
        self,
        context: RouterContext,
        spec: EventProcessor | None = None,
        index: int = 0,
        *,
        retry: RetryPolicy | None = None,
    ) -> None:
        super().__init__(context, spec, index)
        self.field = f"{self.field_prefix}.awsEventBridge"
        cfg = self.spec.awsEventBridge
        if cfg is None:
            raise EventBridgeSetupError(f"{self.field}: required when type is aws_event_bridge")
        self.cfg: AWSEventBridgeConfig = cfg
        m = _RULE_ARN.match(cfg.ruleARN)
        if m is None:
            raise EventBridgeSetupError(
                f"{self.field}.ruleARN: not an EventBridge rule ARN (got {cfg.ruleARN!r}; expected "
                "arn:aws:events:<region>:<account-id>:rule/[<event-bus>/]<rule-name>)"
            )
        bus_match = _BUS_ARN.match(cfg.eventBus)
        self.bus_name = bus_match.group("name") if bus_match else cfg.eventBus
        self.rule_name = m.group("name")
        self.account = m.group("account")
        rule_bus = m.group("bus") or "default"
        if rule_bus != self.bus_name:
            raise EventBridgeSetupError(
                f"{self.field}.ruleARN: the rule belongs to event bus {rule_bus!r} but eventBus is "
                f"{self.bus_name!r} (got {cfg.ruleARN!r}); use the rule of the configured bus"
            )
        auth = cfg.auth
        if auth.type == "aws_access_key":
            if auth.awsAccessKeyAuth is None:
                raise EventBridgeSetupError(
                    f"{self.field}.auth.awsAccessKeyAuth: required when auth.type is aws_access_key"
                )
        elif auth.type != "aws_iam_role":
            raise EventBridgeSetupError(
                f"{self.field}.auth.type: {auth.type!r} is not supported here "
                "(allowed: aws_access_key, aws_iam_role)"
            )
        self.retry = retry or RetryPolicy.of(
            self.spec.delivery, RetryPolicy(attempts=6, base_delay=0.2, max_delay=10.0)
        )
        #: the router sets this to count retries in its metrics
        self.pattern: Pattern | None = None
        self.pattern_text: str | None = None
        self.counters: collections.Counter[str] = collections.Counter()
        self._client: Any = None
        self._executor: ThreadPoolExecutor | None = None
        self._pending: collections.deque[_Entry] = collections.deque()
        self._outstanding: set[_Entry] = set()
        self._kick = asyncio.Event()
        self._busy = 0
        self._slots = asyncio.Semaphore(SENDERS)
        self._tasks: set[asyncio.Task[None]] = set()
        self._flusher: asyncio.Task[None] | None = None
        self._refresher: asyncio.Task[None] | None = None
        self._closing = False
        #: id(event) -> (event, Detail) of the events ``selects`` let through, until processed
        self._selected: dict[int, tuple[CloudEvent, str]] = {}

    def address(self) -> str:
        where = self.cfg.endpoint or f"events.{self.cfg.region}"
        return f"{where} bus={self.bus_name} rule={self.rule_name}"

    @property
    def mean_batch(self) -> float:
        """Mean number of entries per PutEvents call so far."""
        calls = self.counters["put_events_calls"]
        return self.counters["put_events_entries"] / calls if calls else 0.0

    # --- lifecycle -------------------------------------------------------------------

    async def start(self) -> None:
        self._executor = ThreadPoolExecutor(
            max_workers=SENDERS + 1, thread_name_prefix="eventbridge"
        )
        self._client = await self._call(self._make_client)
        self.pattern_text, self.pattern = await self._load_rule()
        log.info(
            "eventbridge: rule %s on bus %s, pattern %s",
            self.cfg.ruleARN,
            self.bus_name,
            self.pattern_text,
        )
        self._flusher = asyncio.create_task(self._flush_loop(), name="eventbridge-flush")
        self._refresher = asyncio.create_task(self._refresh_loop(), name="eventbridge-refresh")

    async def close(self, timeout: float = 10.0) -> None:  # noqa: ASYNC109
        """Send what is queued (within ``timeout``), then fail the rest and stop."""
        self._closing = True
        if self._refresher is not None:
            self._refresher.cancel()
        futures = [e.future for e in self._outstanding]
        if futures:
            self._kick.set()
            await asyncio.wait(futures, timeout=timeout)
        for entry in list(self._outstanding):
            self._settle(entry, DeliveryError("processor closed before the event was sent"))
        for task in (self._flusher, self._refresher, *self._tasks):
            if task is not None:
                task.cancel()
        for task in (self._flusher, self._refresher, *self._tasks):
            if task is not None:
                with contextlib.suppress(asyncio.CancelledError, Exception):
                    await task
        if self._executor is not None:
            self._executor.shutdown(wait=False, cancel_futures=True)
            self._executor = None

    # --- process ---------------------------------------------------------------------

    def _envelope(self, event: CloudEvent) -> tuple[dict[str, Any], str]:
        """The event as EventBridge matches it (the envelope) and its ``Detail`` text."""
        detail = to_json(event).decode()
        envelope = {
            "version": "0",
            "detail-type": event.get("subject") or event["type"],
            "source": event["source"],
            "account": self.account,
            "region": self.cfg.region,
            "resources": [],
            "detail": json.loads(detail),
        }
        return envelope, detail

    def selects(self, event: CloudEvent) -> bool:
        """The rule's pattern, as of now, against the event's envelope: the router counts
        the events it rejects as filtered (``event_router_events_filtered_total``) and never
        queues them. ``process`` reuses the encoding of a selected event."""
        if self.pattern is None:
            return True  # not started: process() says so
        envelope, detail = self._envelope(event)
        if not self.pattern.matches(envelope):
            self.counters["filtered"] += 1
            return False
        if len(self._selected) >= SELECTED_CACHE:
            self._selected.clear()  # events never processed (a stop): recomputed if needed
        self._selected[id(event)] = (event, detail)
        return True

    async def process(self, event: CloudEvent) -> None:
        if self.pattern is None or self._flusher is None:
            raise DeliveryError("eventbridge processor not started")
        cached = self._selected.pop(id(event), None)
        if cached is not None and cached[0] is event:
            detail = cached[1]  # selected at intake under the rule's pattern of then
        else:
            envelope, detail = self._envelope(event)
            if not self.pattern.matches(envelope):
                self.counters["filtered"] += 1
                return
        detail_type = event.get("subject") or event["type"]
        request: dict[str, Any] = {
            "Source": event["source"],
            "DetailType": detail_type,
            "Detail": detail,
            "EventBusName": self.cfg.eventBus,
        }
        when = _parse_time(event.get("time"))
        if when is not None:
            request["Time"] = when
        size = entry_size(request)
        if size > MAX_BATCH_BYTES:
            self.counters["failed"] += 1
            raise DeliveryError(
                f"event {event['id']} is {size} bytes as a PutEvents entry "
                f"(EventBridge allows at most {MAX_BATCH_BYTES})"
            )
        if self._closing:
            raise DeliveryError("eventbridge processor is closing")
        entry = _Entry(
            request, size, asyncio.get_running_loop().create_future(), event_type=event.get("type")
        )
        self._outstanding.add(entry)
        self._pending.append(entry)
        self._kick.set()
        try:
            await entry.future
        except asyncio.CancelledError:
            # the caller gave up; the entry may still be sent, its outcome is not awaited
            entry.future.add_done_callback(_consume)
            raise

    # --- batching --------------------------------------------------------------------

    async def _flush_loop(self) -> None:
        while True:
            while not self._pending:
                self._kick.clear()
                await self._kick.wait()
            # linger while a call is in flight: the batch fills meanwhile
            while (
                self._busy
                and not self._batch_full()
                and (wait := MAX_BATCH_DELAY - (time.monotonic() - self._pending[0].enqueued)) > 0
            ):
                self._kick.clear()
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._kick.wait(), wait)
            await self._slots.acquire()
            batch = self._take_batch()
            if not batch:
                self._slots.release()
                continue
            self._busy += 1
            task = asyncio.create_task(self._send(batch))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)

    def _batch_full(self) -> bool:
        total = 0
        for i, entry in enumerate(self._pending):
            if i >= MAX_BATCH_ENTRIES:
                return True
            total += entry.size
            if total > MAX_BATCH_BYTES:
                return True
        return len(self._pending) >= MAX_BATCH_ENTRIES

    def _take_batch(self) -> list[_Entry]:
        batch: list[_Entry] = []
        total = 0
        while self._pending and len(batch) < MAX_BATCH_ENTRIES:
            entry = self._pending[0]
            if entry.future.done():  # settled meanwhile (closing)
                self._pending.popleft()
                continue
            if batch and total + entry.size > MAX_BATCH_BYTES:
                break
            batch.append(self._pending.popleft())
            total += entry.size
        return batch

    async def _send(self, batch: list[_Entry]) -> None:
        try:
            self.counters["put_events_calls"] += 1
            self.counters["put_events_entries"] += len(batch)
            try:
                response = await self._call(
                    partial(self._client.put_events, Entries=[e.request for e in batch])
                )
            except Exception as err:
                retryable, reason = _classify_call_error(err)
                for entry in batch:
                    self._failed(entry, reason, retryable)
                return
            results = response.get("Entries", [])
            for i, entry in enumerate(batch):
                result = results[i] if i < len(results) else {}
                code = result.get("ErrorCode")
                if result.get("EventId") and not code:
                    self.counters["sent"] += 1
                    self._settle(entry, None)
                else:
                    code = code or "MissingResult"
                    reason = f"{code}: {result.get('ErrorMessage', 'no result for the entry')}"
                    self._failed(entry, reason, code not in PERMANENT_ENTRY_ERRORS)
        finally:
            self._busy -= 1
            self._slots.release()
            self._kick.set()

    def _failed(self, entry: _Entry, reason: str, retryable: bool) -> None:
        entry.attempts += 1
        if not retryable or entry.attempts >= self.retry.attempts or self._closing:
            self.counters["failed"] += 1
            tries = f"after {entry.attempts} attempt(s)" if retryable else "(not retryable)"
            self._settle(
                entry,
                DeliveryError(
                    f"PutEvents rejected the entry {tries}: {reason}", retryable=retryable
                ),
            )
            return
        self.counters["retried"] += 1
        on_retry = self.on_retry(entry.event_type)
        if on_retry is not None:
            on_retry(entry.attempts, reason)
        delay = self.retry.backoff(entry.attempts)
        log.debug("eventbridge: entry failed (%s); retrying in %.2fs", reason, delay)
        asyncio.get_running_loop().call_later(delay, self._requeue, entry)

    def _requeue(self, entry: _Entry) -> None:
        if entry.future.done():
            return
        entry.enqueued = time.monotonic()
        self._pending.appendleft(entry)
        self._kick.set()

    def _settle(self, entry: _Entry, error: Exception | None) -> None:
        self._outstanding.discard(entry)
        if entry.future.done():
            return
        if error is None:
            entry.future.set_result(None)
        else:
            entry.future.set_exception(error)

    # --- the rule --------------------------------------------------------------------

    async def _refresh_loop(self) -> None:
        while True:
            await asyncio.sleep(self.cfg.ruleRefreshSeconds)
            try:
                text, pattern = await self._load_rule()
            except EventBridgeSetupError as err:
                log.error("eventbridge: rule re-read failed, keeping the previous pattern: %s", err)
                continue
            except Exception as err:
                log.warning("eventbridge: rule re-read failed (%s), will try again", err)
                continue
            if text != self.pattern_text:
                log.info("eventbridge: rule %s pattern changed to %s", self.rule_name, text)
                self.pattern_text, self.pattern = text, pattern
                self.counters["pattern_changes"] += 1

    async def _load_rule(self) -> tuple[str, Pattern]:
        rule = await self._call(self._find_rule)
        text = rule.get("EventPattern")
        if not text:
            raise EventBridgeSetupError(
                f"{self.field}.ruleARN: rule {self.cfg.ruleARN} has no EventPattern (a schedule "
                "rule cannot select events); use a rule with an event pattern"
            )
        try:
            return text, compile_pattern(text)
        except PatternError as err:
            raise EventBridgeSetupError(
                f"{self.field}.ruleARN: the EventPattern of rule {self.cfg.ruleARN} cannot be "
                f"applied: {err}"
            ) from None

    def _find_rule(self) -> dict[str, Any]:
        from botocore.exceptions import BotoCoreError

        try:
            return self._find_rule_unguarded()
        except BotoCoreError as err:  # no credentials, endpoint unreachable, ...
            raise EventBridgeSetupError(
                f"{self.field}: cannot read rule {self.cfg.ruleARN} from "
                f"{self.cfg.endpoint or 'AWS'} ({type(err).__name__}: {err})"
            ) from None

    def _find_rule_unguarded(self) -> dict[str, Any]:
        """DescribeRule by name; if the ARN differs, search ListRules (paginated) by ARN."""
        from botocore.exceptions import ClientError

        client = self._client
        try:
            rule: dict[str, Any] = client.describe_rule(
                Name=self.rule_name, EventBusName=self.bus_name
            )
            if rule.get("Arn") == self.cfg.ruleARN:
                return rule
        except ClientError as err:
            code = err.response.get("Error", {}).get("Code", "")
            if code != "ResourceNotFoundException":
                raise EventBridgeSetupError(
                    f"{self.field}: cannot read rule {self.cfg.ruleARN} on bus {self.bus_name!r}: "
                    f"{code or err}"
                ) from None
        names: list[str] = []
        token: str | None = None
        while True:
            kwargs: dict[str, Any] = {"EventBusName": self.bus_name, "Limit": 100}
            if token:
                kwargs["NextToken"] = token
            try:
                page = client.list_rules(**kwargs)
            except ClientError as err:
                code = err.response.get("Error", {}).get("Code", "")
                raise EventBridgeSetupError(
                    f"{self.field}.eventBus: cannot list the rules of bus {self.bus_name!r}: "
                    f"{code or err}"
                ) from None
            for found in page.get("Rules", []):
                if found.get("Arn") == self.cfg.ruleARN:
                    return dict(found)
                names.append(found.get("Name", "?"))
            token = page.get("NextToken")
            if not token:
                break
        shown = ", ".join(names[:20]) + (" ..." if len(names) > 20 else "") if names else "none"
        raise EventBridgeSetupError(
            f"{self.field}.ruleARN: rule {self.cfg.ruleARN} not found on event bus "
            f"{self.bus_name!r} in {self.cfg.region} (rules on that bus: {shown})"
        )

    # --- boto3, in threads -----------------------------------------------------------

    def _make_client(self) -> Any:
        import boto3
        from botocore.config import Config

        cfg = self.cfg
        kwargs: dict[str, Any] = {"region_name": cfg.region}
        keys = cfg.auth.awsAccessKeyAuth
        if cfg.auth.type == "aws_access_key" and keys is not None:
            kwargs["aws_access_key_id"] = keys.accessKey
            kwargs["aws_secret_access_key"] = keys.secretKey.get_secret_value()
        session = boto3.session.Session(**kwargs)
        return session.client(
            "events",
            endpoint_url=cfg.endpoint or None,
            config=Config(
                retries={"total_max_attempts": 1, "mode": "standard"},
                connect_timeout=5,
                read_timeout=15,
                max_pool_connections=SENDERS + 2,
            ),
        )

    async def _call(self, fn: Callable[[], Any]) -> Any:
        return await asyncio.get_running_loop().run_in_executor(self._executor, fn)


def _classify_call_error(err: Exception) -> tuple[bool, str]:
    from botocore.exceptions import BotoCoreError, ClientError, NoCredentialsError

    if isinstance(err, ClientError):
        code = err.response.get("Error", {}).get("Code", "")
        status = err.response.get("ResponseMetadata", {}).get("HTTPStatusCode", 0)
        retryable = code in RETRYABLE_CALL_ERRORS or status == 429 or status >= 500
        return retryable, f"PutEvents failed: {code or 'HTTP ' + str(status)}"
    if isinstance(err, NoCredentialsError):
        return False, "PutEvents failed: no AWS credentials found"
    if isinstance(err, BotoCoreError):
        return True, f"PutEvents failed: {type(err).__name__}: {err}"
    return False, f"PutEvents failed: {type(err).__name__}: {err}"


def _consume(future: asyncio.Future[None]) -> None:
    if not future.cancelled():
        future.exception()


def _parse_time(value: Any) -> datetime | None:
    if not isinstance(value, str) or not value:
        return None
    try:
        return datetime.fromisoformat(value)
    except ValueError:
        return None
