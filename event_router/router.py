r"""The router core: one provider, its processors, their queues, and the lifecycle.

::

    provider --publish()--> [queue A] --worker--> processor A --\
                       \--> [queue B] --worker--> processor B ---+--> ticket (True/False)

* Each processor has its own bounded queue and an optional filter (``filters`` and
  ``pattern``). ``publish`` waits while a queue is full (backpressure): nothing is ever
  dropped there.
* Per processor, events are dispatched in the order they were published. For an ordered
  provider (vCenter, Horizon) each processor delivers one event at a time, in that order;
  for the webhook (separate clients, no order between them) several are in flight.
* Settling: an event is settled by a processor when it was delivered, filtered out,
  dead-lettered (``delivery.deadLetterSink``) after it failed for good, or dropped (a
  non-retryable answer and no dead-letter sink: logged at ERROR, counted). A retryable
  failure is never given up: the router retries it with capped exponential backoff until
  the sink takes it (the processor's queue waits behind it: the stream stalls, the checkpoint
  holds, the ``stalled`` metric and ``/stats`` say so), and so it does when the dead-letter
  sink itself fails.
* ``publish`` returns a ticket (a future) that resolves True once every processor settled
  the event, False only when the router stopped before that. Checkpointing providers
  advance only over True (``CheckpointTracker``).
* ``stop``: intake stops (publishers get :class:`RouterClosed`, the webhook answers 503),
  queued events are delivered within the timeout (what is left resolves False), then the
  provider is closed (its final checkpoint), then the processors.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import logging
import random
import time
from collections.abc import Callable, Sequence
from typing import Any

from cloudevents.http import CloudEvent

from event_router.core import DeliveryError, Processor, Provider, RouterContext
from event_router.filters import compile_event_filter
from event_router.metrics import InvocationStats, MetricsServer, RouterMetrics, rfc3339
from event_router.processors import processor_class
from event_router.providers import provider_class

log = logging.getLogger(__name__)

__all__ = [
    "DEFAULT_QUEUE_SIZE",
    "EventFilter",
    "ProcessorSlot",
    "Router",
    "RouterClosed",
    "dead_letter_event",
]

DEFAULT_QUEUE_SIZE = 1000
#: deliveries in flight per processor when the provider's events have no order (webhook)
UNORDERED_IN_FLIGHT = 64
#: the router's own retries of a retryable failure (after the processor's): the first delay,
#: and the cap of the exponential backoff (how long a recovered sink waits at most)
STALL_FIRST_DELAY = 0.5
STALL_MAX_DELAY = 10.0
#: knativeerrordata: at most this many bytes of the failed answer's body (Knative's limit)
ERROR_DATA_MAX_BYTES = 1024

EventFilter = Callable[[CloudEvent], bool]


class RouterClosed(Exception):
    """The router is stopping and accepts no more events (a client retry will cover it)."""


class _Entry:
    __slots__ = ("accepted", "event", "ok", "pending", "ticket")

    def __init__(self, event: CloudEvent, ticket: asyncio.Future[bool], pending: int) -> None:
        self.event = event
        self.ticket = ticket
        self.pending = pending
        self.ok = True
        self.accepted = time.perf_counter()


def _with_selects(filter: EventFilter | None, processor: Processor) -> EventFilter | None:
    """``filter`` and then ``processor.selects`` as one filter; ``filter`` itself for a
    processor without a filter of its own (no call per event). An error in ``selects`` lets
    the event through, so that ``process`` meets it and settles it as a delivery error
    (never lost at intake)."""
    if type(processor).selects is Processor.selects:
        return filter

    def selected(event: CloudEvent) -> bool:
        if filter is not None and not filter(event):
            return False
        try:
            return processor.selects(event)
        except Exception:
            log.exception("processor %s: selects() failed; handing the event on", processor.type)
            return True

    return selected


class ProcessorSlot:
    """One processor with its queue, filter and statistics."""

    def __init__(
        self,
        processor: Processor,
        *,
        queue_size: int = DEFAULT_QUEUE_SIZE,
        filter: EventFilter | None = None,
        name: str | None = None,
        max_in_flight: int | None = None,
        dead_letter: Processor | None = None,
    ) -> None:
        if queue_size < 1:
            raise ValueError(f"queue_size: must be >= 1 (got {queue_size})")
        limit = processor.max_in_flight if max_in_flight is None else max_in_flight
        if limit < 1:
            raise ValueError(f"max_in_flight: must be >= 1 (got {limit})")
        #: events handed to the processor at once; 1 keeps delivery order
        self.max_in_flight = limit
        self.processor = processor
        self.name = name or processor.type
        #: which events this slot takes: ``filter`` (the config's ``filters``/``pattern``),
        #: then the processor's own :meth:`~event_router.core.Processor.selects`
        self.filter = _with_selects(filter, processor)
        self.queue_size = queue_size
        self.queue: asyncio.Queue[_Entry] = asyncio.Queue(queue_size)
        self.stats = InvocationStats(processor.type, processor.address(), time.time())
        self.worker: asyncio.Task[None] | None = None
        self.in_flight: set[asyncio.Task[None]] = set()
        #: 1 while the ordered worker (max_in_flight 1) is delivering an event
        self.delivering = 0
        #: where events go that failed for good (``delivery.deadLetterSink``), or None
        self.dead_letter = dead_letter
        #: events being retried until the sink recovers, and since when (``time.time()``)
        self.stalled = 0
        self.stalled_since: float | None = None
        self.dropped = 0
        self.dead_lettered = 0
        #: events this processor's filters did not select (settled without a delivery)
        self.filtered = 0


class Router:
    """Wires one provider to its processors. Also the :class:`~event_router.core.Publisher`
    the provider publishes into."""

    def __init__(
        self,
        context: RouterContext,
        *,
        provider: Provider | None = None,
        processors: Sequence[ProcessorSlot] | None = None,
        queue_size: int = DEFAULT_QUEUE_SIZE,
    ) -> None:
        self.context = context
        config = context.config
        self.provider: Provider = provider or provider_class(config.eventProvider.type)(context)
        if processors is None:
            processors = build_slots(context, ordered=self.provider.ordered, queue_size=queue_size)
        if not processors:
            raise ValueError("a router needs at least one processor")
        self.slots: list[ProcessorSlot] = list(processors)
        self.metrics = RouterMetrics(context.labels)
        # the configured type: a deprecated alias (vcsim) keeps its own name in /stats
        self._provider_type = self.provider.stats.type
        self._metrics_server: MetricsServer | None = None
        mp = config.metricsProvider
        if mp is not None:
            self._metrics_server = MetricsServer(
                mp.default.bindAddress,
                self.metrics,
                stats=self.stats,
                ready=lambda: self.ready,
                auth=mp.default.auth,
                role=lambda: self.role,
            )
        for slot in self.slots:
            m = self.metrics
            m.child(m.queue_capacity, slot.name).set(slot.queue_size)
            m.child(m.queue_depth, slot.name).set_function(slot.queue.qsize)
            m.child(m.stalled, slot.name).set_function(_getter(slot))
            # processors that retry report each retry here (see docs/router.md)
            slot.processor.retry_hook = self._retry_hook(slot)
        m = self.metrics
        m.child(m.ready).set_function(lambda: 1.0 if self.ready else 0.0)
        m.child(m.leader).set_function(lambda: 0.0 if self.role == "standby" else 1.0)
        m.watch_provider(self._provider_type, self.provider)
        self._closing = False
        self._closed = asyncio.Event()
        self._started = False
        self._stopped = False
        self._provider_task: asyncio.Task[None] | None = None
        self._started_processors: list[Processor] = []
        #: None without leader election; "standby" until :meth:`lead`, then "leader"
        self.role: str | None = None
        self._led = asyncio.Event()
        #: extra /stats entry (the leader election's view), set by the runtime
        self.election_stats: Callable[[], dict[str, Any]] | None = None
        #: called when a processor starts or stops stalling (the pod's stall report)
        self.stall_listener: Callable[[], None] | None = None

    # --- lifecycle -------------------------------------------------------------------

    @property
    def ready(self) -> bool:
        """The provider is connected and every processor started (a standby: every
        processor started; it connects when it leads)."""
        if not self._started or self._closing:
            return False
        return self.role == "standby" or bool(self.provider.ready)

    @property
    def metrics_url(self) -> str | None:
        return self._metrics_server.url if self._metrics_server else None

    async def start(self, *, lead: bool = True) -> None:
        """Start the processors (raising their startup errors), the metrics server if
        configured, the workers, and the provider task (``lead=False``: a standby; the
        provider starts at :meth:`lead`)."""
        if self._started:
            raise RuntimeError("router already started")
        try:
            for slot in self.slots:
                await slot.processor.start()
                self._started_processors.append(slot.processor)
                if slot.dead_letter is not None:
                    await slot.dead_letter.start()
                    self._started_processors.append(slot.dead_letter)
            if self._metrics_server is not None:
                await self._metrics_server.start()
        except BaseException:
            await self._close_processors()
            raise
        for slot in self.slots:
            slot.worker = asyncio.create_task(self._work(slot), name=f"router-{slot.name}")
        self._started = True
        if lead:
            self._start_provider()
        else:
            self.role = "standby"
        log.info(
            "router started%s: provider %s (%s) -> %s",
            "" if lead else " as a standby (the provider starts when it leads)",
            self.provider.type,
            self.provider.address(),
            ", ".join(
                f"{s.name}: {s.processor.type} ({s.processor.address()})" for s in self.slots
            ),
        )

    def _start_provider(self) -> None:
        self._provider_task = asyncio.create_task(
            self.provider.run(self), name=f"provider-{self.provider.type}"
        )
        self._led.set()

    def lead(self) -> None:
        """A standby takes over: its provider starts (resuming from the checkpoint)."""
        if not self._started or self._closing or self._provider_task is not None:
            return
        self.role = "leader"
        self._start_provider()
        log.info("router leads: provider %s started", self.provider.type)

    def fence(self) -> None:
        """Stop delivering now (the Lease is lost: another replica may lead soon). Nothing
        more is read, every delivery in flight is cancelled; :meth:`stop` does the rest."""
        self._closing = True
        self._closed.set()
        if self._provider_task is not None:
            self._provider_task.cancel()
        for slot in self.slots:
            if slot.worker is not None:
                slot.worker.cancel()
            for task in list(slot.in_flight):
                task.cancel()
        log.warning("router fenced: intake stopped, deliveries in flight cancelled")

    async def wait_ready(self, timeout: float = 30.0) -> None:  # noqa: ASYNC109
        """Wait until :attr:`ready`; TimeoutError naming the provider otherwise; the
        provider's error if its task ended first."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while not self.ready:  # readiness is a plain flag of the provider
            task = self._provider_task
            if task is not None and task.done():
                await self.wait()
                raise RuntimeError(f"provider {self.provider.type} ended before it was ready")
            if loop.time() >= deadline:
                raise TimeoutError(
                    f"provider {self.provider.type} ({self.provider.address()}) not ready "
                    f"within {timeout}s"
                )
            await asyncio.sleep(0.01)

    async def wait(self) -> None:
        """Return when the provider task ends (normally only after stop); raise its error."""
        if self._provider_task is None:
            if not self._started:
                raise RuntimeError("router not started")
            # a standby: until it leads or stops
            led = asyncio.ensure_future(self._led.wait())
            closed = asyncio.ensure_future(self._closed.wait())
            try:
                await asyncio.wait({led, closed}, return_when=asyncio.FIRST_COMPLETED)
            finally:
                led.cancel()
                closed.cancel()
            if self._provider_task is None:
                return
        with contextlib.suppress(asyncio.CancelledError):
            await asyncio.shield(self._provider_task)
        if self._provider_task.done() and not self._provider_task.cancelled():
            exc = self._provider_task.exception()
            if exc is not None:
                raise exc

    async def stop(self, timeout: float = 10.0) -> None:  # noqa: ASYNC109 - contract
        """Stop intake, deliver what is queued within ``timeout`` seconds (the rest resolves
        False), close the provider (final checkpoint), then the processors."""
        if self._stopped:
            return
        self._stopped = True
        self._closing = True
        self._closed.set()
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        if self._provider_task is not None and not self._provider_task.done():
            self._provider_task.cancel()
            try:
                await asyncio.wait_for(
                    asyncio.shield(self._provider_task), max(0.1, deadline - loop.time())
                )
            except asyncio.CancelledError:
                me = asyncio.current_task()
                if me is not None and me.cancelling():
                    raise  # our stop was cancelled (a second signal): stop at once
            except Exception:
                pass  # the provider's own error or the bound: stopping anyway
        if self._started:
            await self._drain(max(0.0, deadline - loop.time()))
        try:
            await self.provider.close()
        except Exception:
            log.exception("provider %s: close failed", self.provider.type)
        await self._close_processors()
        if self._metrics_server is not None:
            await self._metrics_server.stop()
        log.info("router stopped")

    async def _drain(self, bound: float) -> None:
        joins = [asyncio.ensure_future(self._join(slot)) for slot in self.slots]
        _, pending = await asyncio.wait(joins, timeout=bound)
        for task in pending:
            task.cancel()
        left = sum(
            slot.queue.qsize() + len(slot.in_flight) + slot.delivering for slot in self.slots
        )
        if pending:
            log.warning(
                "stop: %d event(s) not delivered within %.1fs; they stay unacknowledged",
                left,
                bound,
            )
        for slot in self.slots:
            if slot.worker is not None:
                slot.worker.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await slot.worker
            for task in list(slot.in_flight):
                task.cancel()
            if slot.in_flight:
                await asyncio.gather(*slot.in_flight, return_exceptions=True)
            while not slot.queue.empty():
                entry = slot.queue.get_nowait()
                slot.queue.task_done()
                self._settle(entry, False)

    @staticmethod
    async def _join(slot: ProcessorSlot) -> None:
        await slot.queue.join()

    async def _close_processors(self) -> None:
        while self._started_processors:
            proc = self._started_processors.pop()
            try:
                await proc.close()
            except Exception:
                log.exception("processor %s: close failed", proc.type)

    # --- intake ----------------------------------------------------------------------

    async def publish(self, event: CloudEvent) -> asyncio.Future[bool]:
        """Accept one event. Waits while a processor queue is full; raises
        :class:`RouterClosed` when the router is stopping."""
        if self._closing:
            raise RouterClosed("router is shutting down")
        m = self.metrics
        type_label = m.type_label(event.get("type"))
        slots = []
        for s in self.slots:
            if s.filter is None or s.filter(event):
                slots.append(s)
            else:
                s.filtered += 1
                m.child(m.filtered, s.name, type_label).inc()
        ticket: asyncio.Future[bool] = asyncio.get_running_loop().create_future()
        entry = _Entry(event, ticket, len(slots))
        self.provider.stats.events_total += 1
        m.child(m.received, self._provider_type, type_label).inc()
        if not slots:
            ticket.set_result(True)
            return ticket
        for i, slot in enumerate(slots):
            try:
                await self._put(slot, entry)
            except BaseException:
                # not enqueued here nor in the slots after: they will never settle it
                entry.pending -= len(slots) - i
                entry.ok = False
                if entry.pending == 0 and not ticket.done():
                    ticket.set_result(False)
                raise
        return ticket

    async def _put(self, slot: ProcessorSlot, entry: _Entry) -> None:
        queue = slot.queue
        if not queue.full():
            queue.put_nowait(entry)
            return
        put = asyncio.ensure_future(queue.put(entry))
        closing = asyncio.ensure_future(self._closed.wait())
        try:
            await asyncio.wait({put, closing}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            closing.cancel()
            if not put.done():
                put.cancel()
        if put.done() and not put.cancelled() and put.exception() is None:
            return
        raise RouterClosed("router is shutting down")

    def count_rejected(self, provider: str, status: int) -> None:
        """Providers that answer requests (webhook) report rejected ones here."""
        m = self.metrics
        m.child(m.rejected, provider, str(status)).inc()

    # --- delivery --------------------------------------------------------------------

    async def _work(self, slot: ProcessorSlot) -> None:
        queue = slot.queue
        limit = slot.max_in_flight
        if limit == 1:
            while True:
                entry = await queue.get()
                slot.delivering = 1
                try:
                    await self._deliver(slot, entry)
                finally:
                    slot.delivering = 0
                    queue.task_done()
        sem = asyncio.Semaphore(limit)
        while True:
            await sem.acquire()
            entry = await queue.get()
            task = asyncio.create_task(self._deliver_one(slot, entry, sem))
            slot.in_flight.add(task)
            task.add_done_callback(slot.in_flight.discard)

    async def _deliver_one(
        self, slot: ProcessorSlot, entry: _Entry, sem: asyncio.Semaphore
    ) -> None:
        try:
            await self._deliver(slot, entry)
        finally:
            sem.release()
            slot.queue.task_done()

    async def _deliver(self, slot: ProcessorSlot, entry: _Entry) -> None:
        """Deliver one event until it is settled (see the module docstring)."""
        event = entry.event
        rounds = 0
        stalled_at: float | None = None
        outcome = "delivered"
        try:
            while True:
                error = await self._attempt(slot, slot.processor, event)
                if error is None:
                    break
                m = self.metrics
                m.child(m.failed, slot.name, m.type_label(event.get("type"))).inc()
                slot.stats.record(event.get("subject") or event.get("type") or "", False)
                if slot.dead_letter is not None:
                    await self._dead_letter(slot, entry, error)
                    outcome = "dead-lettered"
                    break
                if not error.retryable:
                    log.error(
                        "processor %s: event %s (%s) dropped: %s (not retryable, and no "
                        "delivery.deadLetterSink to send it to)",
                        slot.name,
                        event.get("id"),
                        event.get("type"),
                        error,
                    )
                    outcome = "dropped"
                    break
                rounds += 1
                if stalled_at is None:
                    stalled_at = time.time()
                    slot.stalled += 1
                    if slot.stalled_since is None:
                        slot.stalled_since = stalled_at
                        self._stall_changed()
                delay = _stall_delay(rounds)
                log.warning(
                    "processor %s: delivery stalled on event %s (%s) for %.0fs: %s; retrying "
                    "in %.1fs (the stream waits: nothing is dropped)",
                    slot.name,
                    event.get("id"),
                    event.get("type"),
                    time.time() - stalled_at,
                    error,
                    delay,
                )
                await asyncio.sleep(delay)
        except asyncio.CancelledError:
            self._record(slot, entry, False)
            raise
        finally:
            if stalled_at is not None:
                slot.stalled -= 1
                if not slot.stalled:
                    slot.stalled_since = None
                    self._stall_changed()
        if stalled_at is not None and outcome == "delivered":
            log.info(
                "processor %s: event %s delivered after a %.1fs stall; the stream goes on",
                slot.name,
                event.get("id"),
                time.time() - stalled_at,
            )
        self._record(slot, entry, True, outcome)

    async def _attempt(
        self, slot: ProcessorSlot, processor: Processor, event: CloudEvent
    ) -> DeliveryError | None:
        """One round of ``processor.process`` (its own retries included): None when
        delivered, else the error (a bug in a processor counts as not retryable)."""
        try:
            await processor.process(event)
        except DeliveryError as err:  # the caller logs what it does about it
            return err
        except asyncio.CancelledError:
            raise
        except Exception as err:
            log.exception(
                "processor %s: unexpected error delivering event %s", slot.name, event.get("id")
            )
            return DeliveryError(f"unexpected error: {type(err).__name__}: {err}")
        return None

    async def _dead_letter(self, slot: ProcessorSlot, entry: _Entry, error: DeliveryError) -> None:
        """Send the event to the slot's dead-letter sink; retried until it is taken."""
        sink = slot.dead_letter
        assert sink is not None
        event = entry.event
        letter = dead_letter_event(event, slot.processor.address(), error)
        rounds = 0
        while True:
            failure = await self._attempt(slot, sink, letter)
            if failure is None:
                break
            rounds += 1
            delay = _stall_delay(rounds)
            log.error(
                "processor %s: the dead-letter sink %s did not take event %s: %s; retrying in "
                "%.1fs (the checkpoint holds: nothing is lost)",
                slot.name,
                sink.address(),
                event.get("id"),
                failure,
                delay,
            )
            await asyncio.sleep(delay)
        slot.dead_lettered += 1
        m = self.metrics
        m.child(m.dead_lettered, slot.name, m.type_label(event.get("type"))).inc()
        log.warning(
            "processor %s: event %s (%s) sent to the dead-letter sink %s (%s)",
            slot.name,
            event.get("id"),
            event.get("type"),
            sink.address(),
            error,
        )

    def _record(self, slot: ProcessorSlot, entry: _Entry, ok: bool, outcome: str = "") -> None:
        event = entry.event
        m = self.metrics
        etype = event.get("type") or ""
        if outcome == "delivered":
            m.child(m.delivered, slot.name, m.type_label(etype)).inc()
            slot.stats.record(event.get("subject") or etype, True)
        elif outcome == "dropped":
            slot.dropped += 1
            m.child(m.dropped, slot.name, m.type_label(etype)).inc()
        m.child(m.latency, slot.name).observe(time.perf_counter() - entry.accepted)
        self._settle(entry, ok)

    def _settle(self, entry: _Entry, ok: bool) -> None:
        if not ok:
            entry.ok = False
        entry.pending -= 1
        if entry.pending <= 0 and not entry.ticket.done():
            if not entry.ok:
                self.provider.stats.events_err += 1
            entry.ticket.set_result(entry.ok)

    def _retry_hook(self, slot: ProcessorSlot) -> Callable[[int, str, str | None], None]:
        counter = self.metrics.retried
        metrics = self.metrics

        def hook(attempt: int, reason: str, event_type: str | None) -> None:
            kind = metrics.type_label(event_type)
            metrics.child(counter, slot.name, kind, _reason_label(reason)).inc()

        return hook

    # --- stats -----------------------------------------------------------------------

    def stats(self) -> dict[str, Any]:
        """The original's ``/stats`` JSON."""
        ps = self.provider.stats
        elapsed = max(time.time() - ps.started, 1e-9)
        entries: dict[str, Any] = {
            ps.type: {
                "type": ps.type,
                "address": ps.address,
                "started": rfc3339(ps.started),
                "events_total": ps.events_total,
                "events_err": ps.events_err,
                "events_per_sec": round(ps.events_total / elapsed, 3),
            }
        }
        for slot in self.slots:
            key = slot.processor.type
            if key in entries:  # several processors of one type: keep them apart
                key = f"{key}-{slot.name}"
            entry = slot.stats.as_json()
            entry["name"] = slot.name
            entry["queued"] = slot.queue.qsize()
            entry["stalled"] = slot.stalled
            if slot.stalled_since is not None:
                entry["stalledSince"] = rfc3339(slot.stalled_since)
            entry["dropped"] = slot.dropped
            entry["deadLettered"] = slot.dead_lettered
            entry["filtered"] = slot.filtered
            if slot.dead_letter is not None:
                entry["deadLetterSink"] = slot.dead_letter.address()
            entries[key] = entry
        out: dict[str, Any] = {"vmware.event.router.stats": entries}
        if self.election_stats is not None:
            out["leaderElection"] = self.election_stats()
        return out

    def _stall_changed(self) -> None:
        if self.stall_listener is not None:
            try:
                self.stall_listener()
            except Exception:
                log.exception("the stall listener failed")

    def processor_states(self) -> list[dict[str, Any]]:
        """Per processor: name, type, address, dead-letter sink, stalled (for status)."""
        return [
            {
                "name": slot.name,
                "type": slot.processor.type,
                "address": slot.processor.address(),
                "deadLetterSink": slot.dead_letter.address() if slot.dead_letter else None,
                "stalled": slot.stalled,
                "stalledSince": rfc3339(slot.stalled_since) if slot.stalled_since else None,
            }
            for slot in self.slots
        ]


def build_slots(
    context: RouterContext, *, ordered: bool = True, queue_size: int = DEFAULT_QUEUE_SIZE
) -> list[ProcessorSlot]:
    """One slot per configured processor: its filter, its dead-letter sink, and how many
    deliveries it may have in flight (one, in order, for an ordered provider)."""
    slots = []
    config = context.config
    for i, spec in enumerate(config.processors):
        proc = processor_class(spec.type)(context, spec, i)
        slots.append(
            ProcessorSlot(
                proc,
                queue_size=queue_size,
                name=spec.name,
                filter=compile_event_filter(spec),
                max_in_flight=None if ordered else max(proc.max_in_flight, UNORDERED_IN_FLIGHT),
                dead_letter=dead_letter_sender(context, i),
            )
        )
    return slots


def dead_letter_sender(context: RouterContext, index: int) -> Processor | None:
    """A knative sender to processor ``index``'s ``delivery.deadLetterSink`` (None without
    one). It trusts what the processor trusts (``insecureSSL`` of a knative processor)."""
    from event_router.config.models import EventProcessor, KnativeConfig

    spec = context.config.processors[index]
    sink = spec.delivery.deadLetterSink
    if sink is None:
        return None
    from event_router.processors.knative import KnativeProcessor

    insecure = spec.knative.insecureSSL if spec.knative is not None else False
    dl_spec = EventProcessor(
        type="knative",
        name=f"{spec.name}-dead-letter",
        knative=KnativeConfig(destination=sink, insecureSSL=insecure),
    )
    sender = KnativeProcessor(context, dl_spec, index)
    sender.field = f"{context.config.processor_field(index)}.delivery.deadLetterSink"
    sender.destination_field = sender.field
    return sender


def dead_letter_event(event: CloudEvent, destination: str, error: DeliveryError) -> CloudEvent:
    """The event as the dead-letter sink gets it: unchanged, plus Knative's extensions
    ``knativeerrordest`` (where delivery failed), ``knativeerrorcode`` (the HTTP status, when
    there was an answer) and ``knativeerrordata`` (base64 of the answer's body, at most 1 KiB;
    without an answer, of the error message)."""
    attrs = dict(event.get_attributes())
    attrs["knativeerrordest"] = destination
    if error.status is not None:
        attrs["knativeerrorcode"] = str(error.status)
    body = error.body if error.body else str(error).encode("utf-8")
    attrs["knativeerrordata"] = base64.b64encode(body[:ERROR_DATA_MAX_BYTES]).decode("ascii")
    return CloudEvent(attrs, event.get_data())


def _stall_delay(rounds: int) -> float:
    """Capped exponential backoff with jitter between the router's own delivery rounds."""
    delay = min(STALL_MAX_DELAY, STALL_FIRST_DELAY * 2 ** min(rounds - 1, 16))
    return delay * (0.75 + 0.25 * random.random())


def _getter(slot: ProcessorSlot) -> Callable[[], float]:
    return lambda: float(slot.stalled)


def _reason_label(reason: str) -> str:
    """Bounded label values: 'HTTP 503' stays, transport errors keep their class name."""
    if reason.startswith("HTTP "):
        return reason
    return reason.split(":", 1)[0]
