"""The contracts between providers, the router core and processors.

A provider streams CloudEvents into a :class:`Publisher`; the router core fans each event
out to the processors' queues and resolves a :class:`Ticket` once every processor has
settled it. Providers that keep checkpoints advance them only over tickets that resolved
``True`` (delivered), in order (see :class:`event_router.checkpoints.CheckpointTracker`).
"""

from __future__ import annotations

import abc
import asyncio
import importlib
import os
import ssl
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, ClassVar, Protocol

from cloudevents.http import CloudEvent

if TYPE_CHECKING:
    from event_router.checkpoints import CheckpointStore, CheckpointTracker
    from event_router.config.models import EventProcessor, RouterConfig

__all__ = [
    "CloudEvent",
    "DeliveryError",
    "Processor",
    "Provider",
    "ProviderStats",
    "Publisher",
    "RouterContext",
    "Ticket",
]


class DeliveryError(Exception):
    """A processor could not deliver an event (after its retries, or not retryable).

    ``status`` and ``body`` are the last HTTP answer's, when there was one (a dead-letter
    event carries them as ``knativeerrorcode`` / ``knativeerrordata``)."""

    def __init__(
        self,
        message: str,
        *,
        retryable: bool = False,
        status: int | None = None,
        body: bytes | None = None,
    ) -> None:
        super().__init__(message)
        self.retryable = retryable
        self.status = status
        self.body = body


Ticket = "asyncio.Future[bool]"
"""Resolves True when every processor delivered the event, False when any failed."""


class Publisher(Protocol):
    async def publish(self, event: CloudEvent) -> asyncio.Future[bool]:
        """Hand one event to the router. Waits while the processors' queues are full
        (backpressure); returns a future that resolves when the event is settled."""
        ...


@dataclass
class ProviderStats:
    type: str
    address: str
    started: float = field(default_factory=time.time)
    events_total: int = 0
    events_err: int = 0


@dataclass
class RouterContext:
    """What the runtime (standalone CLI, pod, or in-process operator task) gives a router."""

    config: RouterConfig
    #: builds the checkpoint store for a key (e.g. the vCenter host); None = provider's
    #: own config decides (file store in ``checkpointDir``)
    checkpoint_store_factory: Callable[[str], CheckpointStore] | None = None
    #: extra labels on metrics, e.g. namespace/name of the RouterConfig under the operator
    labels: dict[str, str] = field(default_factory=dict)

    def ssl_context(self, insecure: bool) -> ssl.SSLContext:
        """A TLS context honouring ``insecureSSL`` and ``certificates.rootCAs``.

        An insecure context verifies no certificate, so it loads none: the system's CA
        bundle would cost about 0.7 MiB of memory in every context built.
        """
        if insecure:
            ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)  # create_default_context's options
            ctx.check_hostname = False
            ctx.verify_mode = ssl.CERT_NONE
            keylog = os.environ.get("SSLKEYLOGFILE")  # honoured as create_default_context does
            if keylog and not sys.flags.ignore_environment:
                ctx.keylog_filename = keylog
            return ctx
        ctx = ssl.create_default_context()
        certs = self.config.certificates
        for path in certs.rootCAs if certs else []:
            ctx.load_verify_locations(cafile=path)
        return ctx


class Provider(abc.ABC):
    """An event source. One module per type under ``event_router.providers``."""

    type: ClassVar[str]
    #: True when the order of the events matters (one vCenter or Horizon stream): each
    #: processor then delivers them one at a time, in order. False (webhook: separate clients
    #: have no order between them): several deliveries in flight per processor.
    ordered: ClassVar[bool] = True

    def __init__(self, context: RouterContext) -> None:
        self.context = context
        self.config = context.config
        self.stats = ProviderStats(type=self.type, address=self.address())
        self.ready = False
        #: checkpointing providers set these (metrics read them): the tracker of the events
        #: they published, and the ``time.time()`` of the last save that moved the checkpoint
        self.checkpoint_tracker: CheckpointTracker[Any] | None = None
        self.checkpoint_advanced_at: float | None = None

    @abc.abstractmethod
    def address(self) -> str:
        """Where events come from, without credentials (for /stats and logs)."""

    @abc.abstractmethod
    async def run(self, publisher: Publisher) -> None:
        """Stream events into ``publisher`` until cancelled. Set ``self.ready`` when
        connected. Raise only for errors a restart cannot fix (bad config, bad credentials
        at first login); transient errors are retried here with backoff."""

    async def close(self) -> None:  # noqa: B027 - optional hook
        """Flush checkpoints, log out. Called once after ``run`` was cancelled."""

    async def prepare(self) -> None:  # noqa: B027 - optional hook
        """A standby's check before it waits to lead (leader election): can it reach its
        source and log in? Raise the error ``run`` would raise at its first login."""


class Processor(abc.ABC):
    """An event sink. One module per type under ``event_router.processors``."""

    type: ClassVar[str]
    #: how many events the router may hand to ``process`` concurrently; 1 keeps order
    max_in_flight: int = 1

    def __init__(
        self, context: RouterContext, spec: EventProcessor | None = None, index: int = 0
    ) -> None:
        self.context = context
        self.config = context.config
        #: this processor's entry of the config (``eventProcessors[index]``, or the original's
        #: ``eventProcessor``), and its path for error messages
        self.spec: EventProcessor = spec if spec is not None else context.config.processors[index]
        self.field_prefix = context.config.processor_field(index)
        #: set by the router: ``retry_hook(attempt, reason, event_type)`` on every retry
        #: (metrics); processors call it through :meth:`on_retry`
        self.retry_hook: Callable[[int, str, str | None], None] | None = None

    def on_retry(self, event_type: str | None) -> Callable[[int, str], None] | None:
        """The retry callback for one event of ``event_type`` (None: no hook set)."""
        hook = self.retry_hook
        if hook is None:
            return None
        return lambda attempt, reason: hook(attempt, reason, event_type)

    @abc.abstractmethod
    def address(self) -> str:
        """Where events go, without credentials (for /stats and logs)."""

    def selects(self, event: CloudEvent) -> bool:
        """The processor's own filter, beyond the config's ``filters``/``pattern`` (the
        EventBridge rule's pattern): the router settles an event this rejects as filtered
        (counted, never queued). Called at intake, so it must be cheap and not raise."""
        return True

    def preflight(self) -> None:  # noqa: B027 - optional hook
        """The checks of :meth:`start` that need no network (``-validate`` runs them, so
        what it accepts, the router starts with). Raise ValueError naming the field."""

    async def start(self) -> None:  # noqa: B027 - optional hook
        """Connect, discover (functions, rules). Raise for a clear startup error."""

    @abc.abstractmethod
    async def process(self, event: CloudEvent) -> None:
        """Deliver one event, retrying what is retryable. Return on success; raise
        :class:`DeliveryError` when it could not be delivered. Must be safe to call
        ``max_in_flight`` times concurrently."""

    async def close(self) -> None:  # noqa: B027 - optional hook
        """Flush and release connections."""


def load_registered(registry: dict[str, str], type_: str, field: str) -> Any:
    """Import the class a registry names for ``type_`` ("module:Class"), lazily, so the
    router core imports no concrete provider or processor."""
    try:
        target = registry[type_]
    except KeyError:
        allowed = ", ".join(sorted(registry))
        raise ValueError(f"{field}: unknown type {type_!r} (allowed: {allowed})") from None
    module, _, name = target.partition(":")
    return getattr(importlib.import_module(module), name)


def describe(obj: Any) -> str:
    return f"{type(obj).__name__}({getattr(obj, 'type', '?')})"
