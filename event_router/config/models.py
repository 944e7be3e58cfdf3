"""Pydantic models of the RouterConfig file, field names exactly as the original router's.

The same models read the original's file (fields at the top level) and the shape of the
custom resource (fields under ``spec:``); see :func:`event_router.config.loader.parse_config`.
Secrets are ``SecretStr`` so they never appear in ``repr``/logs.

Validation that a single field type cannot express (the sub-object matching ``type``, the
auth types each place allows, exactly one of ``uri``/``ref``, ...) lives in model
validators. They raise a :class:`pydantic_core.PydanticCustomError` of type
``router_config`` whose context carries ``problems``: a list of ``(field, message)``
pairs, ``field`` relative to the model that raised it. The loader turns each into one
line ``<field.path>: <message>``.
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Iterator
from typing import Annotated, Any, Literal
from urllib.parse import urlsplit

from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Discriminator,
    Field,
    SecretStr,
    Tag,
    model_validator,
)
from pydantic_core import PydanticCustomError

API_VERSION = "event-router.vmware.com/v1alpha1"
KIND = "RouterConfig"

#: error type of the cross-field checks below (see module docstring)
ERROR_TYPE = "router_config"


class Strict(BaseModel):
    """Base: unknown fields are rejected."""

    model_config = ConfigDict(extra="forbid", populate_by_name=True)


_URL_PASSWORD = re.compile(r"(//[^/@:\s]*:)[^@/\s]*@")


def show(value: Any) -> str:
    """A value for an error message: scalars quoted and cut short, containers by kind."""
    if isinstance(value, dict):
        return "a mapping"
    if isinstance(value, list | tuple):
        return "a list"
    if isinstance(value, str):
        # never echo the password of a URL such as https://user:password@host
        value = _URL_PASSWORD.sub(r"\1***@", value)
    text = repr(value)
    return text if len(text) <= 80 else text[:77] + "..."


class Problems:
    """Collects (field, message) pairs of one model and raises them together."""

    def __init__(self) -> None:
        self.items: list[tuple[str, str]] = []

    def add(self, field: str, message: str) -> None:
        self.items.append((field, message))

    def raise_if_any(self) -> None:
        if self.items:
            summary = "; ".join(f"{f}: {m}" for f, m in self.items)
            raise PydanticCustomError(
                ERROR_TYPE, "{summary}", {"summary": summary, "problems": list(self.items)}
            )


# --- reusable field types -----------------------------------------------------------------

_HOSTNAME = re.compile(
    r"^(?=.{1,253}$)[A-Za-z0-9_](?:[A-Za-z0-9_-]{0,62})(?:\.[A-Za-z0-9_-]{1,63})*\.?$"
)


def parse_bind_address(value: str) -> tuple[str, int]:
    """``host:port`` -> (host, port). Hostnames, IPv4 and ``[IPv6]`` hosts; port 1-65535."""
    if "://" in value or "/" in value:
        raise ValueError("no URI scheme or slashes, only host:port such as 0.0.0.0:8080")
    if value.startswith("["):
        host, sep, port = value[1:].partition("]:")
        if not sep:
            raise ValueError("IPv6 hosts are written [host]:port, such as [::1]:8080")
        try:
            ipaddress.IPv6Address(host)
        except ValueError:
            raise ValueError(f"{host!r} is not an IPv6 address") from None
    else:
        host, sep, port = value.rpartition(":")
        if not sep:
            raise ValueError("expected host:port such as 0.0.0.0:8080")
        if not host:
            raise ValueError("the host is missing; use 0.0.0.0:<port> to listen on all interfaces")
        if ":" in host:
            raise ValueError("IPv6 hosts are written [host]:port, such as [::1]:8080")
        if not _HOSTNAME.match(host):
            raise ValueError(f"{host!r} is not a hostname or IP address")
    if not port.isdigit() or not 1 <= int(port) <= 65535:
        raise ValueError(f"port {port!r} is not a number from 1 to 65535")
    return host, int(port)


def _check_bind_address(value: str) -> str:
    parse_bind_address(value)
    return value


def _check_http_url(value: str) -> str:
    parts = urlsplit(value)
    if parts.scheme not in ("http", "https"):
        raise ValueError("expected an http:// or https:// URL")
    if not parts.hostname:
        raise ValueError("the URL has no host")
    try:
        _ = parts.port
    except ValueError:
        raise ValueError("the URL's port is not a number from 0 to 65535") from None
    if parts.username is not None or parts.password is not None:
        raise ValueError("credentials in the URL are not allowed; use the auth section")
    return value


def _check_arn(value: str) -> str:
    if not re.match(r"^arn:[\w-]+:events:[\w-]*:\d*:rule/\S+$", value):
        raise ValueError(
            "expected a rule ARN such as arn:aws:events:us-west-1:123456789012:rule/name"
        )
    return value


def _check_path(value: str) -> str:
    if not value.startswith("/"):
        raise ValueError("must start with / such as /webhook")
    if value == "/":
        raise ValueError("must not be / (use a path such as /webhook)")
    if any(c.isspace() for c in value) or "?" in value or "#" in value:
        raise ValueError("must be a plain path without spaces, ? or #")
    return value


BindAddress = Annotated[str, AfterValidator(_check_bind_address)]
HttpURL = Annotated[str, AfterValidator(_check_http_url)]
NonEmpty = Annotated[str, Field(min_length=1)]


# --- auth -------------------------------------------------------------------------------


class BasicAuth(Strict):
    username: NonEmpty
    password: SecretStr = Field(min_length=1)


class AWSAccessKeyAuth(Strict):
    accessKey: NonEmpty
    secretKey: SecretStr = Field(min_length=1)


class ActiveDirectoryAuth(Strict):
    domain: NonEmpty
    username: NonEmpty
    password: SecretStr = Field(min_length=1)


AuthType = Literal["basic_auth", "aws_access_key", "aws_iam_role", "active_directory"]

#: the sub-object each auth type needs (None: no sub-object)
AUTH_BLOCKS: dict[str, str | None] = {
    "basic_auth": "basicAuth",
    "aws_access_key": "awsAccessKeyAuth",
    "aws_iam_role": None,
    "active_directory": "activeDirectoryAuth",
}


class Auth(Strict):
    type: AuthType
    basicAuth: BasicAuth | None = None
    awsAccessKeyAuth: AWSAccessKeyAuth | None = None
    activeDirectoryAuth: ActiveDirectoryAuth | None = None

    @model_validator(mode="after")
    def _blocks_match_type(self) -> Auth:
        problems = Problems()
        needed = AUTH_BLOCKS[self.type]
        for block in ("basicAuth", "awsAccessKeyAuth", "activeDirectoryAuth"):
            present = getattr(self, block) is not None
            if present and block != needed:
                allowed = f"only {needed}" if needed else "no sub-object"
                problems.add(block, f"not allowed with type {self.type!r} (allowed: {allowed})")
        if needed and getattr(self, needed) is None:
            problems.add(needed, f"required when type is {self.type!r}")
        problems.raise_if_any()
        return self


def check_auth(
    problems: Problems,
    auth: Auth | None,
    allowed: tuple[str, ...],
    *,
    required: bool,
    field: str = "auth",
) -> None:
    if auth is None:
        if required:
            problems.add(field, f"required (allowed types: {', '.join(allowed)})")
        return
    if auth.type not in allowed:
        problems.add(
            f"{field}.type",
            f"not allowed here (got {auth.type!r}; allowed: {', '.join(allowed)})",
        )


# --- providers --------------------------------------------------------------------------

TypeStyle = Literal["router", "sources"]


class VCenterConfig(Strict):
    address: HttpURL
    insecureSSL: bool = False
    checkpoint: bool = False
    checkpointDir: NonEmpty = "./checkpoints"
    auth: Auth
    # extensions of ours
    pageSize: int = Field(default=100, ge=1, le=1000)
    typeStyle: TypeStyle = "router"

    @model_validator(mode="after")
    def _auth(self) -> VCenterConfig:
        problems = Problems()
        check_auth(problems, self.auth, ("basic_auth",), required=True)
        problems.raise_if_any()
        return self


class HorizonConfig(Strict):
    address: HttpURL
    insecureSSL: bool = False
    checkpoint: bool = False
    checkpointDir: NonEmpty = "./checkpoints"
    auth: Auth
    # extensions of ours
    pollIntervalSeconds: float = Field(default=1.0, gt=0, le=300)
    typeStyle: TypeStyle = "router"

    @model_validator(mode="after")
    def _auth(self) -> HorizonConfig:
        problems = Problems()
        check_auth(problems, self.auth, ("active_directory",), required=True)
        ad = self.auth.activeDirectoryAuth
        if ad is not None and "@" in ad.username:
            problems.add(
                "auth.activeDirectoryAuth.username",
                f"UPN user names are not supported (got {ad.username!r}; allowed: the plain "
                "user name such as 'administrator', with the domain in activeDirectoryAuth.domain)",
            )
        problems.raise_if_any()
        return self


class WebhookConfig(Strict):
    bindAddress: BindAddress
    path: Annotated[str, AfterValidator(_check_path)]
    auth: Auth | None = None
    # extension of ours
    maxBodyBytes: int = Field(default=1_048_576, ge=1024, le=64 * 1_048_576)

    @model_validator(mode="after")
    def _auth(self) -> WebhookConfig:
        problems = Problems()
        check_auth(problems, self.auth, ("basic_auth",), required=False)
        problems.raise_if_any()
        return self


ProviderType = Literal["vcenter", "horizon", "webhook", "vcsim"]


def check_type_block(problems: Problems, obj: BaseModel, blocks: dict[str, str]) -> None:
    """``blocks`` maps each type to its sub-object's field name; exactly that one is set."""
    type_ = getattr(obj, "type")  # noqa: B009 - every caller has a type field
    needed = blocks[type_]
    for t, block in blocks.items():
        if block != needed and getattr(obj, block) is not None:
            problems.add(
                block,
                f"not allowed when type is {type_!r} (allowed: {needed}; "
                f"or set type: {t} to use this block)",
            )
    if getattr(obj, needed) is None:
        problems.add(needed, f"required when type is {type_!r}")


class EventProvider(Strict):
    type: ProviderType
    name: NonEmpty
    vcenter: VCenterConfig | None = None
    horizon: HorizonConfig | None = None
    webhook: WebhookConfig | None = None
    vcsim: VCenterConfig | None = None

    @model_validator(mode="after")
    def _block(self) -> EventProvider:
        problems = Problems()
        check_type_block(
            problems,
            self,
            {"vcenter": "vcenter", "horizon": "horizon", "webhook": "webhook", "vcsim": "vcsim"},
        )
        problems.raise_if_any()
        return self

    @property
    def settings(self) -> VCenterConfig | HorizonConfig | WebhookConfig:
        """The block matching ``type``."""
        block = getattr(self, self.type)
        assert block is not None
        return block


# --- processors -------------------------------------------------------------------------


class URIObject(Strict):
    """The original's object form of a URI (Knative's ``apis.URL`` fields)."""

    scheme: Literal["http", "https"]
    host: NonEmpty
    port: int | None = Field(default=None, ge=1, le=65535)
    path: str | None = None

    def url(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        port = f":{self.port}" if self.port else ""
        path = self.path or ""
        if path and not path.startswith("/"):
            path = "/" + path
        return f"{self.scheme}://{host}{port}{path}"


class KReference(Strict):
    apiVersion: NonEmpty
    kind: NonEmpty
    name: NonEmpty
    namespace: str | None = None


def _uri_kind(value: Any) -> str:
    return "url" if isinstance(value, str) else "object"


#: the loader drops these union tags from error paths
UNION_TAGS = frozenset({"url", "object"})

URI = Annotated[
    Annotated[URIObject, Tag("object")] | Annotated[HttpURL, Tag("url")],
    Discriminator(_uri_kind),
]


class Destination(Strict):
    #: an object ``{scheme, host, port?, path?}`` (the original's) or a URL string
    uri: URI | None = None
    ref: KReference | None = None

    @model_validator(mode="after")
    def _one_of(self) -> Destination:
        problems = Problems()
        if self.uri is None and self.ref is None:
            problems.add("", "exactly one of uri or ref is required (got neither)")
        elif self.uri is not None and self.ref is not None:
            problems.add("ref", "exactly one of uri or ref is allowed (got both)")
        problems.raise_if_any()
        return self

    def uri_string(self) -> str | None:
        """``uri`` as a URL string, whichever form it was given in."""
        if self.uri is None:
            return None
        return self.uri if isinstance(self.uri, str) else self.uri.url()


class KnativeConfig(Strict):
    destination: Destination
    encoding: Literal["binary", "structured"] = "binary"
    insecureSSL: bool = False
    auth: Auth | None = None

    @model_validator(mode="after")
    def _auth(self) -> KnativeConfig:
        problems = Problems()
        check_auth(problems, self.auth, ("basic_auth",), required=False)
        problems.raise_if_any()
        return self


class OpenFaaSConfig(Strict):
    address: HttpURL
    async_: bool = Field(default=False, alias="async")
    auth: Auth | None = None
    # extension of ours
    refreshIntervalSeconds: float = Field(default=10.0, gt=0, le=3600)

    @model_validator(mode="after")
    def _auth(self) -> OpenFaaSConfig:
        problems = Problems()
        check_auth(problems, self.auth, ("basic_auth",), required=False)
        problems.raise_if_any()
        return self


class AWSEventBridgeConfig(Strict):
    region: Annotated[str, Field(pattern=r"^[a-z]{2}(-[a-z]+)+-\d+$")]
    eventBus: NonEmpty
    ruleARN: Annotated[str, AfterValidator(_check_arn)]
    auth: Auth
    # extensions of ours
    endpoint: HttpURL | None = None
    ruleRefreshSeconds: float = Field(default=300.0, gt=0)

    @model_validator(mode="after")
    def _auth(self) -> AWSEventBridgeConfig:
        problems = Problems()
        check_auth(problems, self.auth, ("aws_access_key", "aws_iam_role"), required=True)
        problems.raise_if_any()
        return self


ProcessorType = Literal["knative", "openfaas", "aws_event_bridge"]


class EventProcessor(Strict):
    type: ProcessorType
    name: NonEmpty
    knative: KnativeConfig | None = None
    openfaas: OpenFaaSConfig | None = None
    awsEventBridge: AWSEventBridgeConfig | None = None

    @model_validator(mode="after")
    def _block(self) -> EventProcessor:
        problems = Problems()
        check_type_block(
            problems,
            self,
            {"knative": "knative", "openfaas": "openfaas", "aws_event_bridge": "awsEventBridge"},
        )
        problems.raise_if_any()
        return self

    @property
    def settings(self) -> KnativeConfig | OpenFaaSConfig | AWSEventBridgeConfig:
        """The block matching ``type``."""
        block = {"knative": self.knative, "openfaas": self.openfaas}.get(
            self.type, self.awsEventBridge
        )
        assert block is not None
        return block


# --- metrics, certificates, checkpoint tuning -------------------------------------------


class MetricsDefaultConfig(Strict):
    bindAddress: BindAddress
    auth: Auth | None = None

    @model_validator(mode="after")
    def _auth(self) -> MetricsDefaultConfig:
        problems = Problems()
        check_auth(problems, self.auth, ("basic_auth",), required=False)
        problems.raise_if_any()
        return self


class MetricsProvider(Strict):
    type: Literal["default"] = "default"
    name: NonEmpty
    default: MetricsDefaultConfig


class Certificates(Strict):
    #: PEM files of extra root CAs, trusted by every TLS client of the router
    rootCAs: list[NonEmpty] = Field(default_factory=list)


class CheckpointTuning(Strict):
    periodSeconds: float = Field(default=5.0, gt=0, le=3600)
    maxAgeSeconds: float = Field(default=3600.0, ge=0)


class Metadata(Strict):
    name: NonEmpty
    labels: dict[str, str] | None = None


class RouterSpec(Strict):
    """The router's settings: the original file's top-level fields, the CR's ``spec``."""

    eventProvider: EventProvider
    eventProcessor: EventProcessor
    metricsProvider: MetricsProvider | None = None
    certificates: Certificates | None = None
    checkpoint: CheckpointTuning = Field(default_factory=CheckpointTuning)

    @model_validator(mode="after")
    def _listeners(self) -> RouterSpec:
        problems = Problems()
        hook = self.eventProvider.webhook if self.eventProvider.type == "webhook" else None
        if hook is not None and self.metricsProvider is not None:
            h_host, h_port = parse_bind_address(hook.bindAddress)
            m_host, m_port = parse_bind_address(self.metricsProvider.default.bindAddress)
            wildcard = {"0.0.0.0", "::", ""}
            if h_port == m_port and (h_host == m_host or h_host in wildcard or m_host in wildcard):
                problems.add(
                    "metricsProvider.default.bindAddress",
                    f"listens on the same port as eventProvider.webhook.bindAddress "
                    f"(got {self.metricsProvider.default.bindAddress!r}; allowed: another port)",
                )
        problems.raise_if_any()
        return self


class _Header(Strict):
    apiVersion: Literal["event-router.vmware.com/v1alpha1"]
    kind: Literal["RouterConfig"]
    metadata: Metadata


class RouterConfig(RouterSpec, _Header):
    """The original router's config file: everything at the top level."""

    def secrets(self) -> list[str]:
        """Every credential value in this config (for log redaction)."""
        return sorted(set(iter_secrets(self)))


def iter_secrets(model: BaseModel) -> Iterator[str]:
    """Walk a model and yield every secret value (SecretStr fields and AWS access keys)."""
    for name, value in model:
        if isinstance(value, SecretStr):
            yield value.get_secret_value()
        elif isinstance(value, BaseModel):
            yield from iter_secrets(value)
        elif name == "accessKey" and isinstance(value, str):
            yield value


class ObjectMeta(BaseModel):
    """Kubernetes object metadata; the router reads ``name`` and ``labels`` only."""

    model_config = ConfigDict(extra="allow")

    name: NonEmpty
    namespace: str | None = None
    labels: dict[str, str] | None = None


class RouterConfigResource(Strict):
    """The custom resource shape: the router's settings under ``spec``."""

    apiVersion: Literal["event-router.vmware.com/v1alpha1"]
    kind: Literal["RouterConfig"]
    metadata: ObjectMeta
    spec: RouterSpec
    status: dict[str, Any] | None = None
