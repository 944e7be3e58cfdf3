"""Knative processor: POST each CloudEvent to ``destination.uri`` (a Broker, Service, Channel...).

* ``destination.uri``: the original's object form ``{scheme, host, port?, path?}`` or a
  plain URL string. ``destination.ref`` (an Addressable) is resolved by the operator, which
  renders the resolved URL into ``destination.uri``. Standalone (the original's config in a
  pod, or with a kubeconfig), the processor resolves ``ref`` itself at start and follows it
  every 30 s; without a reachable Kubernetes API a ``ref`` is a startup error naming the field.
* ``encoding``: ``binary`` (attributes as ``ce-`` headers, data as body; the default) or
  ``structured`` (one ``application/cloudevents+json`` document).
* ``insecureSSL`` skips certificate checks; ``certificates.rootCAs`` are trusted.
* ``auth``: optional ``basic_auth`` (the original ignored it; we send it).
* One pooled keep-alive aiohttp client session; retries per :mod:`event_router.delivery`.
* A proxy from the environment (``HTTP_PROXY``/``HTTPS_PROXY``/``ALL_PROXY``, except the
  hosts in ``NO_PROXY``; ``http://`` proxies only), as the original router's Go client did.
"""

from __future__ import annotations

import asyncio
import logging
from urllib.parse import urlsplit, urlunsplit

import aiohttp
from cloudevents.http import CloudEvent

from event_router import cebinding
from event_router.config.models import EventProcessor, KnativeConfig, KReference, URIObject
from event_router.core import DeliveryError, Processor, RouterContext
from event_router.delivery import RetryPolicy, default_retry_status, send_with_retry
from event_router.httpclient import Response, env_proxy

log = logging.getLogger(__name__)

__all__ = [
    "KnativeProcessor",
    "destination_url",
    "encode_binary",
    "encode_structured",
    "is_json_content_type",
]

FIELD = "eventProcessor.knative"


REF_REFRESH_SECONDS = 30.0


def resolve_ref(ref: KReference, where: str = f"{FIELD}.destination") -> str:
    """The URL of the Addressable (Broker, Knative Service, any ``status.address.url``) or
    v1 Service that ``destination.ref`` names, read from the Kubernetes API the router can
    reach (in-cluster service account, else KUBECONFIG). Blocking; ValueError naming the
    field when it cannot be resolved."""
    from event_router.kubeclient import NoKubernetes, api_client, own_namespace
    from event_router.operator.sinks import Resolver, SinkError

    ns = f"{ref.namespace}/" if ref.namespace else ""
    what = f"{ref.kind} {ns}{ref.name} ({ref.apiVersion})"
    try:
        api = api_client()
    except NoKubernetes as e:
        raise ValueError(
            f"{where}.ref: {what} must be resolved to a URL, and the router cannot reach the "
            f"Kubernetes API to do it ({e}); set {where}.uri instead "
            f"(e.g. http://broker-ingress.knative-eventing.svc/default/default), or run it "
            f"under the operator"
        ) from None
    try:
        url, _ = Resolver(api).resolve(
            {"ref": ref.model_dump(exclude_none=True)},
            ref.namespace or own_namespace() or "default",
        )
    except SinkError as e:
        raise ValueError(f"{where}.ref: {e.message}") from None
    except Exception as e:  # API unreachable, 5xx, TLS: still an error naming the field
        raise ValueError(f"{where}.ref: cannot read {what} from the Kubernetes API: {e}") from None
    finally:
        api.close()
    return url


def destination_url(cfg: KnativeConfig, where: str = f"{FIELD}.destination") -> str:
    """The URL events are POSTed to; ValueError naming the field when there is none."""
    dest = cfg.destination
    uri = dest.uri
    if uri is None:
        if dest.ref is not None:
            ref = dest.ref
            ns = f"{ref.namespace}/" if ref.namespace else ""
            raise ValueError(
                f"{where}.ref: {ref.kind} {ns}{ref.name} ({ref.apiVersion}) must be "
                f"resolved to a URL before the router starts; the operator does this and renders "
                f"it into {where}.uri. Standalone, set {where}.uri "
                f"instead (e.g. http://broker-ingress.knative-eventing.svc/default/default)"
            )
        raise ValueError(f"{where}: one of uri or ref is required (got neither)")
    if isinstance(uri, URIObject):
        url = uri.url()
        return url if urlsplit(url).path else url + "/"
    parts = urlsplit(uri)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ValueError(
            f"{where}.uri: not an absolute http(s) URL (got {uri!r}; "
            f"allowed: http://host[:port][/path] or https://...)"
        )
    return uri


def is_json_content_type(content_type: str | None) -> bool:
    """Absent (JSON by convention), application/json, or any ``+json`` / ``/json`` type."""
    return cebinding.is_json(content_type)


def encode_binary(event: CloudEvent) -> tuple[dict[str, str], bytes]:
    """Binary content mode by the HTTP binding's rules (:func:`event_router.cebinding.to_binary`):
    attributes as percent-encoded ``ce-`` headers, ``datacontenttype`` as Content-Type (none
    when the event has none), the data as the body.

    An event whose ``datacontenttype`` is a CloudEvents format (``application/cloudevents...``)
    goes in structured mode instead: in binary mode its Content-Type would tell the receiver
    "structured" (HTTP binding 3), and the receiver would read the data as the event."""
    attrs = event.get_attributes()
    if cebinding.media_type(attrs.get("datacontenttype")).startswith("application/cloudevents"):
        return cebinding.to_structured(attrs, event.get_data())
    return cebinding.to_binary(attrs, event.get_data())


def encode_structured(event: CloudEvent) -> tuple[dict[str, str], bytes]:
    """Structured content mode: one ``application/cloudevents+json`` document with every
    attribute as it is (:func:`event_router.cebinding.to_structured`)."""
    return cebinding.to_structured(event.get_attributes(), event.get_data())


class KnativeProcessor(Processor):
    type = "knative"
    max_in_flight = 1  # keep the provider's order

    def __init__(
        self,
        context: RouterContext,
        spec: EventProcessor | None = None,
        index: int = 0,
        *,
        retry: RetryPolicy | None = None,
        timeout: float | None = None,
    ) -> None:
        super().__init__(context, spec, index)
        self.field = f"{self.field_prefix}.knative"
        #: the path of the destination in messages (a dead-letter sender sets its own)
        self.destination_field = f"{self.field}.destination"
        cfg = self.spec.knative
        if cfg is None:
            raise ValueError(f"{self.field}: required when type is knative")
        self.cfg = cfg
        self.retry = retry or RetryPolicy.of(self.spec.delivery)
        self.timeout = self.spec.delivery.timeout_seconds if timeout is None else timeout
        self._url: str | None = None
        self._address: str | None = None
        #: the proxy the environment names for ``_url`` (None: connect directly)
        self._proxy: str | None = None
        self._session: aiohttp.ClientSession | None = None
        self._ref_task: asyncio.Task[None] | None = None
        self._structured = cfg.encoding == "structured"

    def address(self) -> str:
        """The destination as the config names it, without credentials (formatted once:
        every delivery names it in its error text)."""
        if self._address is None:
            self._address = self._format_address()
        return self._address

    def _format_address(self) -> str:
        try:
            url = destination_url(self.cfg, self.destination_field)
        except ValueError:
            ref = self.cfg.destination.ref
            return f"ref:{ref.kind}/{ref.name}" if ref else "<unset>"
        parts = urlsplit(url)
        # never show credentials embedded in the URL
        netloc = parts.hostname or ""
        if parts.port:
            netloc = f"{netloc}:{parts.port}"
        return urlunsplit((parts.scheme, netloc, parts.path, "", ""))

    def preflight(self) -> None:
        if self.cfg.destination.uri is not None:
            destination_url(self.cfg, self.destination_field)

    async def start(self) -> None:
        ref = self.cfg.destination.ref
        if self.cfg.destination.uri is None and ref is not None:
            # standalone with the original's config: resolve the Addressable ourselves
            self._url = await asyncio.to_thread(resolve_ref, ref, self.destination_field)
            self._ref_task = asyncio.create_task(self._follow_ref(ref), name="knative-ref")
        else:
            self._url = destination_url(self.cfg, self.destination_field)
        # a proxy from the environment, as the original router (Go's default transport) and
        # our horizon/openfaas clients use: HTTP(S)_PROXY, ALL_PROXY, except NO_PROXY hosts
        self._proxy = env_proxy(self._url)
        headers = {"User-Agent": "event-router"}
        if self.cfg.auth is not None:
            a = self.cfg.auth
            if a.type != "basic_auth" or a.basicAuth is None:
                raise ValueError(
                    f"{self.field}.auth.type: only basic_auth is supported for knative "
                    f"(got {a.type!r}; allowed: basic_auth with {self.field}.auth.basicAuth)"
                )
            headers["Authorization"] = aiohttp.encode_basic_auth(
                a.basicAuth.username, a.basicAuth.password.get_secret_value()
            )
        ssl_ctx = self.context.ssl_context(self.cfg.insecureSSL)
        self._session = aiohttp.ClientSession(
            connector=aiohttp.TCPConnector(limit=16, ssl=ssl_ctx, keepalive_timeout=30),
            timeout=aiohttp.ClientTimeout(total=self.timeout),
            trust_env=False,  # the proxy is passed per request (no .netrc read)
            # no Content-Type of aiohttp's own (application/octet-stream) when the event has
            # no datacontenttype: binary mode maps only datacontenttype to it
            skip_auto_headers=("User-Agent", "Content-Type"),
            headers=headers,
        )
        log.info(
            "knative %s: delivering to %s (%s encoding)",
            self.spec.name,
            self.address(),
            self.cfg.encoding,
        )

    async def _follow_ref(self, ref: KReference) -> None:
        """Re-resolve ``destination.ref`` every REF_REFRESH_SECONDS: a Broker or Service
        whose address changes is followed without a restart."""
        while True:
            await asyncio.sleep(REF_REFRESH_SECONDS)
            try:
                url = await asyncio.to_thread(resolve_ref, ref, self.destination_field)
            except Exception as e:
                log.warning(
                    "knative: cannot re-resolve destination.ref, keeping %s: %s", self._url, e
                )
                continue
            if url != self._url:
                log.info("knative: destination.ref now resolves to %s (was %s)", url, self._url)
                self._url, self._proxy = url, env_proxy(url)

    async def process(self, event: CloudEvent) -> None:
        session, url, proxy = self._session, self._url, self._proxy
        if session is None or url is None:
            raise DeliveryError("knative processor not started")
        try:
            headers, body = encode_structured(event) if self._structured else encode_binary(event)
        except cebinding.BindingError as err:  # not retryable: the same event fails again
            raise DeliveryError(
                f"knative: event {event.get('id')} cannot be sent in {self.cfg.encoding} "
                f"encoding: {err}"
            ) from None

        async def send() -> Response:
            async with session.post(
                url, headers=headers, data=body, allow_redirects=False, proxy=proxy
            ) as response:
                return Response(response.status, response.headers, await response.read())

        await send_with_retry(
            send,
            self.retry,
            retry_status=default_retry_status,
            on_retry=self.on_retry(event.get("type")),
            what=f"knative delivery of event {event.get('id')} to {self.address()}",
        )

    async def close(self) -> None:
        if self._ref_task is not None:
            self._ref_task.cancel()
            self._ref_task = None
        if self._session is not None:
            await self._session.close()
            self._session = None
