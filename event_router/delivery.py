"""Delivery with retries: exponential backoff with jitter, ``Retry-After`` honoured.

Delivered: a 2xx answer only. Retried: transport errors (connect, read, write, timeouts,
protocol: :data:`TRANSPORT_ERRORS`), and the statuses for which ``retry_status`` answers True (by
default 408, 429 and 5xx). Any other status (a 3xx redirect, which is not followed, or another
4xx) is not retried. After the last attempt, or on a non-retryable status,
:class:`~event_router.core.DeliveryError` is raised.
"""

from __future__ import annotations

import asyncio
import email.utils
import logging
import random
import ssl
import time
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Protocol, TypeVar
from urllib.parse import urlsplit, urlunsplit

import aiohttp

from event_router.core import DeliveryError

if TYPE_CHECKING:
    from event_router.config.models import Delivery

log = logging.getLogger(__name__)

__all__ = [
    "TRANSPORT_ERRORS",
    "ResponseLike",
    "RetryPolicy",
    "default_retry_status",
    "retry_after_seconds",
    "send_with_retry",
]

#: exceptions that mean "the request did not get a response": retried
#: (aiohttp's, the product's one HTTP client, and the builtins)
TRANSPORT_ERRORS: tuple[type[BaseException], ...] = (
    aiohttp.ClientError,
    TimeoutError,
    ConnectionError,
)


class ResponseLike(Protocol):
    """What send_with_retry needs of a response (:class:`event_router.httpclient.Response`
    has it)."""

    @property
    def status_code(self) -> int: ...

    @property
    def headers(self) -> Mapping[str, str]: ...

    @property
    def text(self) -> str: ...


R = TypeVar("R", bound=ResponseLike)

#: the longest delay between two retries of one delivery a ``delivery`` block gives
MAX_BACKOFF_SECONDS = 60.0


@dataclass(frozen=True)
class RetryPolicy:
    """How often and how long to retry one delivery.

    ``attempts`` counts every try (1 = no retry). The delay before retry ``n`` (1-based) is
    ``min(max_delay, base_delay * 2**(n-1))``, then reduced by up to ``jitter`` (a fraction,
    0..1) at random ("equal jitter" style), so many senders do not retry in lock-step.
    A ``Retry-After`` from the server replaces the computed delay, capped at
    ``max_retry_after``.
    """

    attempts: int = 5
    base_delay: float = 0.1
    max_delay: float = 5.0
    jitter: float = 0.5
    max_retry_after: float = 30.0
    #: ``linear``: the delay grows by ``base_delay`` each retry instead of doubling
    linear: bool = False

    @classmethod
    def of(cls, delivery: Delivery, default: RetryPolicy | None = None) -> RetryPolicy:
        """The policy of a processor's ``delivery`` (Knative's DeliverySpec). Fields the
        config leaves out keep ``default``'s values (a processor's own defaults)."""
        base = default or cls()
        given = delivery.model_fields_set
        return cls(
            attempts=delivery.retry + 1 if "retry" in given or default is None else base.attempts,
            base_delay=(
                delivery.backoff_delay_seconds
                if "backoffDelay" in given or default is None
                else base.base_delay
            ),
            max_delay=max(base.max_delay, MAX_BACKOFF_SECONDS if given else 0.0),
            jitter=base.jitter,
            max_retry_after=base.max_retry_after,
            linear=delivery.backoffPolicy == "linear",
        )

    def __post_init__(self) -> None:
        if self.attempts < 1:
            raise ValueError(f"RetryPolicy.attempts: must be >= 1 (got {self.attempts})")
        if self.base_delay < 0 or self.max_delay < 0:
            raise ValueError("RetryPolicy delays must be >= 0")
        if not 0 <= self.jitter <= 1:
            raise ValueError(f"RetryPolicy.jitter: must be within 0..1 (got {self.jitter})")

    def backoff(self, retry: int) -> float:
        """Delay before retry number ``retry`` (1-based), jitter applied."""
        factor = retry if self.linear else 2 ** (retry - 1)
        delay = min(self.max_delay, self.base_delay * factor)
        if self.jitter:
            delay -= delay * self.jitter * random.random()
        return delay


def default_retry_status(status: int) -> bool:
    """408 Request Timeout, 429 Too Many Requests and every 5xx are worth retrying."""
    return status in (408, 429) or 500 <= status <= 599


def retry_after_seconds(value: str | None, *, now: float | None = None) -> float | None:
    """Parse a ``Retry-After`` header: delta-seconds or an HTTP date. None if absent/invalid."""
    if value is None:
        return None
    value = value.strip()
    if not value:
        return None
    if value.isdigit():
        return float(value)
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError, IndexError):
        return None
    if when is None:
        return None
    current = time.time() if now is None else now
    return max(0.0, when.timestamp() - current)


#: called on every retry with (attempt number just failed, reason) — for metrics
RetryHook = Callable[[int, str], None]


async def send_with_retry(
    send: Callable[[], Awaitable[R]],
    policy: RetryPolicy,
    *,
    retry_status: Callable[[int], bool] = default_retry_status,
    retry_transport: Callable[[BaseException], bool] | None = None,
    on_retry: RetryHook | None = None,
    what: str = "delivery",
) -> R:
    """Call ``send`` until it returns a 2xx response or retries are exhausted.

    Returns the successful response. Raises :class:`DeliveryError` (``retryable`` tells
    whether the last failure was of a retryable kind) when the status is not retryable or
    after ``policy.attempts`` tries.
    """
    attempt = 0
    while True:
        attempt += 1
        delay: float | None = None
        try:
            response = await send()
        except TRANSPORT_ERRORS as err:
            if _is_certificate_error(err):
                raise DeliveryError(
                    f"{what} failed: the server's TLS certificate is not trusted ({err}); "
                    "add its CA to certificates.rootCAs (or set insecureSSL: true to skip "
                    "verification)",
                    retryable=False,
                ) from err
            reason = f"{type(err).__name__}: {err}" if str(err) else type(err).__name__
            if retry_transport is not None and not retry_transport(err):
                raise DeliveryError(
                    f"{what} failed: {reason} (not retried)", retryable=False
                ) from err
            if attempt >= policy.attempts:
                raise DeliveryError(
                    f"{what} failed after {attempt} attempt(s): {reason}", retryable=True
                ) from err
        else:
            status = response.status_code
            if 200 <= status < 300:
                return response
            reason = f"HTTP {status}"
            if status < 400:  # a redirect: the receiver did not take the event
                raise DeliveryError(
                    f"{what} redirected with HTTP {status} to "
                    f"{_location(response.headers.get('location'))}: redirects are not "
                    "followed; set the destination to the final URL",
                    retryable=False,
                    status=status,
                    body=_body(response),
                )
            if not retry_status(status):
                raise DeliveryError(
                    f"{what} rejected with HTTP {status} (not retryable): {_snippet(response)}",
                    retryable=False,
                    status=status,
                    body=_body(response),
                )
            if attempt >= policy.attempts:
                raise DeliveryError(
                    f"{what} failed after {attempt} attempt(s): HTTP {status}: "
                    f"{_snippet(response)}",
                    retryable=True,
                    status=status,
                    body=_body(response),
                )
            after = retry_after_seconds(response.headers.get("retry-after"))
            if after is not None:
                delay = min(after, policy.max_retry_after)
        if delay is None:
            delay = policy.backoff(attempt)
        if on_retry is not None:
            on_retry(attempt, reason)
        if log.isEnabledFor(logging.DEBUG):
            log.debug("%s attempt %d failed (%s); retrying in %.3fs", what, attempt, reason, delay)
        await asyncio.sleep(delay)


def _is_certificate_error(err: BaseException) -> bool:
    """A failed certificate check: retrying cannot fix it."""
    seen: BaseException | None = err
    for _ in range(5):
        if seen is None:
            return False
        if isinstance(seen, ssl.SSLCertVerificationError | aiohttp.ClientConnectorCertificateError):
            return True
        seen = seen.__cause__ or seen.__context__
    return False


def _location(value: str | None) -> str:
    """A redirect target for an error message, without credentials or query."""
    if not value:
        return "(no Location header)"
    parts = urlsplit(value)
    netloc = parts.hostname or ""
    if parts.port:
        netloc = f"{netloc}:{parts.port}"
    return urlunsplit((parts.scheme, netloc, parts.path, "", "")) or "(no Location header)"


def _body(response: ResponseLike, limit: int = 1024) -> bytes | None:
    """The start of a failed answer's body (a dead-letter event's ``knativeerrordata``)."""
    try:
        return response.text.encode("utf-8")[:limit]
    except Exception:  # body not read (streaming) or undecodable
        return None


def _snippet(response: ResponseLike, limit: int = 200) -> str:
    try:
        text = response.text
    except Exception:  # body not read (streaming) or undecodable
        return "<no body>"
    text = " ".join(text.split())
    return text[:limit] + ("..." if len(text) > limit else "") if text else "<empty body>"
