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

import re
import unicodedata
from collections.abc import Iterator
from typing import Annotated, Any, Literal
from urllib.parse import quote, urlsplit

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
    """Base: unknown fields are rejected, and numbers are finite (no ``.inf``/``.nan``)."""

    model_config = ConfigDict(extra="forbid", populate_by_name=True, allow_inf_nan=False)


# --- bounds of every duration and count (also in the CRD and the JSON schema) ------------
#
# (minimum, maximum), both allowed. Durations in seconds. A minimum keeps an idle router
# from spinning (``periodSeconds: 0.000001``), a maximum keeps a duration a duration
# (``maxAgeSeconds: 1e300`` overflows every date computation).

CHECKPOINT_PERIOD_SECONDS = (0.1, 3600.0)
CHECKPOINT_MAX_AGE_SECONDS = (0.0, 31_536_000.0)  # 365 days
HORIZON_POLL_SECONDS = (0.05, 300.0)
OPENFAAS_REFRESH_SECONDS = (0.1, 3600.0)
EVENTBRIDGE_RULE_REFRESH_SECONDS = (0.1, 86_400.0)
PAGE_SIZE = (1, 1000)
VCENTER_BATCH_WINDOW_SECONDS = (0.0, 1.0)
WEBHOOK_MAX_BODY_BYTES = (1024, 64 * 1_048_576)
WEBHOOK_ACK_TIMEOUT_SECONDS = (0.1, 600.0)
PORT = (1, 65535)
MAX_ROOT_CAS = 16
#: processors of one router (eventProcessors)
MAX_PROCESSORS = 16
#: names (``metadata.name``, ``eventProvider.name``, ...): length, and no control characters
NAME_MAX_LENGTH = 253
#: any other string of the config
STRING_MAX_LENGTH = 4096


def Seconds(default: float, bounds: tuple[float, float]) -> Any:
    """A duration field: a finite number in ``bounds`` (booleans are not numbers)."""
    return Field(default=default, ge=bounds[0], le=bounds[1], strict=True)


def Count(default: int, bounds: tuple[int, int]) -> Any:
    """A count field: an integer in ``bounds`` (not a boolean, not 5.0, not "5")."""
    return Field(default=default, ge=bounds[0], le=bounds[1], strict=True)


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


# --- patterns shared with the CRD ---------------------------------------------------------
#
# The RouterConfig CRD (event_router/operator/crd.py) uses these same patterns, so the API
# server accepts exactly the values the router accepts. Three engines read them: Go's RE2
# (the API server), Rust's regex crate (pydantic ``pattern``) and Python's ``re`` (the checks
# below). So they use only syntax all three read alike: no lookarounds and no ``\d \w \s``
# (ASCII in RE2, Unicode in the other two); whitespace is spelt out as SPACE_CLASS.

#: the body of a character class holding exactly the characters ``str.isspace()`` is true for
SPACE_CLASS = (
    "\t\n\x0b\x0c\r\x1c\x1d\x1e\x1f \x85\xa0\u1680\u2000-\u200a\u2028\u2029\u202f\u205f\u3000"
)

_HEX4 = "[0-9A-Fa-f]{1,4}"
_OCTET = "(?:25[0-5]|2[0-4][0-9]|1[0-9][0-9]|[1-9]?[0-9])"
_IPV4 = rf"{_OCTET}(?:\.{_OCTET}){{3}}"


def _ipv6_pattern() -> str:
    """An IPv6 address exactly as :class:`ipaddress.IPv6Address` reads it (without a zone):
    eight groups, or fewer around one ``::`` that stands for at least one group; the last two
    groups may be written as an IPv4 address."""

    def lead(n: int) -> str:  # n groups, each followed by ':'
        return {0: "", 1: f"{_HEX4}:"}.get(n, f"(?:{_HEX4}:){{{n}}}")

    def compressed(n: int) -> str:  # n groups, then '::'
        return f"{lead(n)}:" if n else "::"

    def tail(n: int) -> str:  # up to n groups, separated by ':'
        more = "" if n == 1 else f"(?::{_HEX4}){{0,{n - 1}}}"
        return f"(?:{_HEX4}{more})?" if n else ""

    def leads(n: int) -> str:  # up to n groups, each followed by ':'
        return f"(?:{_HEX4}:){{0,{n}}}" if n else ""

    hextets = [f"{lead(7)}{_HEX4}"] + [compressed(n) + tail(7 - n) for n in range(8)]
    # before an IPv4 address (two groups): six groups, or fewer around '::'
    before_v4 = [lead(6)] + [compressed(n) + leads(5 - n) for n in range(6)]
    return f"(?:{'|'.join(hextets)}|(?:{'|'.join(before_v4)}){_IPV4})"


#: a hostname or IPv4 address (the total length, at most HOST_MAX_LENGTH, is checked apart)
HOSTNAME_PATTERN = r"[A-Za-z0-9_][A-Za-z0-9_-]{0,62}(?:\.[A-Za-z0-9_-]{1,63})*\.?"
HOST_MAX_LENGTH = 253
#: an IPv6 address with an optional zone (``fe80::1%eth0``), as written between brackets
IPV6_PATTERN = _ipv6_pattern() + "(?:%[0-9A-Za-z_.-]{1,64})?"
#: 1-65535 in at most five digits (leading zeros allowed: 08080)
PORT_PATTERN = (
    "(?:0{0,4}[1-9]|0{0,3}[1-9][0-9]|0{0,2}[1-9][0-9]{2}|0?[1-9][0-9]{3}"
    "|[1-5][0-9]{4}|6[0-4][0-9]{3}|65[0-4][0-9]{2}|655[0-2][0-9]|6553[0-5])"
)
#: ``host:port`` or ``[IPv6]:port`` (plus: a hostname of at most HOST_MAX_LENGTH characters)
BIND_ADDRESS_PATTERN = rf"^(?:{HOSTNAME_PATTERN}|\[{IPV6_PATTERN}\]):{PORT_PATTERN}$"
#: ``destination.uri.host`` as Go's net/url ``Host``: a hostname, IPv4 address or ``[IPv6]``,
#: optionally with ``:port`` (plus: a hostname of at most HOST_MAX_LENGTH characters)
URI_HOST_PATTERN = rf"^(?:{HOSTNAME_PATTERN}|\[{IPV6_PATTERN}\])(?::{PORT_PATTERN})?$"
#: the webhook path: starts with /, is not / alone, no whitespace, ? or #
WEBHOOK_PATH_PATTERN = f"^/[^{SPACE_CLASS}?#]+$"
WEBHOOK_PATH_MAX_LENGTH = 1024
#: an AWS region name such as us-west-1
REGION_PATTERN = "^[a-z]{2}(?:-[a-z]+)+-[0-9]+$"
REGION_MAX_LENGTH = 64
#: an EventBridge rule ARN: arn:<partition>:events:<region>:<account>:rule/<name>
RULE_ARN_PATTERN = f"^arn:[A-Za-z0-9_-]+:events:[A-Za-z0-9_-]*:[0-9]*:rule/[^{SPACE_CLASS}]+$"
RULE_ARN_MAX_LENGTH = 1600


def _whole(pattern: str) -> re.Pattern[str]:
    """``^...$`` for Python's ``fullmatch`` (Python's ``$`` also matches before a final
    newline; RE2's and Rust's do not)."""
    if not (pattern.startswith("^") and pattern.endswith("$")):
        raise ValueError(f"not an anchored pattern: {pattern!r}")
    return re.compile(pattern[1:-1])


_HOSTNAME = re.compile(HOSTNAME_PATTERN)
_IPV6 = re.compile(IPV6_PATTERN)
_PORT = re.compile(PORT_PATTERN)
_BIND_ADDRESS = _whole(BIND_ADDRESS_PATTERN)
_URI_HOST = _whole(URI_HOST_PATTERN)
_WEBHOOK_PATH = _whole(WEBHOOK_PATH_PATTERN)
_RULE_ARN = _whole(RULE_ARN_PATTERN)


# --- reusable field types -----------------------------------------------------------------


def parse_bind_address(value: str) -> tuple[str, int]:
    """``host:port`` -> (host, port). Hostnames, IPv4 and ``[IPv6]`` hosts; port 1-65535.

    Accepts exactly what BIND_ADDRESS_PATTERN matches with a host of at most
    HOST_MAX_LENGTH characters; the steps before only explain what is wrong."""
    if "://" in value or "/" in value:
        raise ValueError("no URI scheme or slashes, only host:port such as 0.0.0.0:8080")
    if value.startswith("["):
        host, sep, port = value[1:].partition("]:")
        if not sep:
            raise ValueError("IPv6 hosts are written [host]:port, such as [::1]:8080")
        if not _IPV6.fullmatch(host):
            raise ValueError(f"{host!r} is not an IPv6 address")
    else:
        host, sep, port = value.rpartition(":")
        if not sep:
            raise ValueError("expected host:port such as 0.0.0.0:8080")
        if not host:
            raise ValueError("the host is missing; use 0.0.0.0:<port> to listen on all interfaces")
        if ":" in host:
            raise ValueError("IPv6 hosts are written [host]:port, such as [::1]:8080")
        if len(host) > HOST_MAX_LENGTH or not _HOSTNAME.fullmatch(host):
            raise ValueError(f"{host!r} is not a hostname or IP address")
    if not _PORT.fullmatch(port):
        raise ValueError(f"port {port!r} is not a number from 1 to 65535")
    if not _BIND_ADDRESS.fullmatch(value):  # the rule the CRD enforces; never reached
        raise ValueError("expected host:port such as 0.0.0.0:8080")
    return host, int(port)


def split_uri_host(value: str) -> tuple[str, int | None]:
    """``destination.uri.host`` -> (the host as a URL writes it, the port or None).

    As Go's net/url ``Host``: ``host``, ``host:port``, ``[IPv6]`` or ``[IPv6]:port``.
    Accepts exactly what URI_HOST_PATTERN matches with a hostname of at most HOST_MAX_LENGTH
    characters; the steps before only explain what is wrong."""
    if "/" in value or "?" in value or "#" in value or "@" in value:
        raise ValueError(
            "only the host, or host:port, such as gateway.corp.local:8080 (scheme and path "
            "are fields of their own; no credentials)"
        )
    port: str | None
    if value.startswith("["):
        end = value.find("]")
        if end < 0:
            raise ValueError("an IPv6 host is written [address] or [address]:port")
        host, rest = value[: end + 1], value[end + 1 :]
        if not _IPV6.fullmatch(host[1:-1]):
            raise ValueError(f"{host[1:-1]!r} is not an IPv6 address")
        if rest and not rest.startswith(":"):
            raise ValueError("expected [IPv6] or [IPv6]:port, such as [::1]:8080")
        port = rest[1:] if rest else None
    else:
        if value.count(":") > 1:
            raise ValueError("IPv6 hosts are written in brackets, such as [::1] or [::1]:8080")
        host, sep, port_text = value.partition(":")
        port = port_text if sep else None
        if not host:
            raise ValueError("the host is missing before the port")
        if len(host) > HOST_MAX_LENGTH or not _HOSTNAME.fullmatch(host):
            raise ValueError(f"{host!r} is not a hostname or IP address")
    if port is not None and not _PORT.fullmatch(port):
        raise ValueError(f"port {port!r} is not a number from 1 to 65535")
    if not _URI_HOST.fullmatch(value):  # the rule the CRD enforces; never reached
        raise ValueError("expected host or host:port such as gateway.corp.local:8080")
    return host, int(port) if port is not None else None


def _check_uri_host(value: str) -> str:
    split_uri_host(value)
    return value


#: what Go's url.URL.EscapedPath leaves as it is in a path (besides letters, digits, -._~)
PATH_SAFE = "/$&+,:;=@"


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
    if not _RULE_ARN.fullmatch(value):
        raise ValueError(
            "expected a rule ARN such as arn:aws:events:us-west-1:123456789012:rule/name"
        )
    return value


def _check_path(value: str) -> str:
    if not value.startswith("/"):
        raise ValueError("must start with / such as /webhook")
    if value == "/":
        raise ValueError("must not be / (use a path such as /webhook)")
    if not _WEBHOOK_PATH.fullmatch(value):
        raise ValueError("must be a plain path without spaces, ? or #")
    return value


def _no_control_characters(value: str) -> str:
    for ch in value:
        if unicodedata.category(ch) == "Cc":
            raise ValueError(
                f"must not hold control characters (found U+{ord(ch):04X}; allowed: "
                "printable characters)"
            )
    return value


_Printable = AfterValidator(_no_control_characters)
BindAddress = Annotated[
    str, Field(max_length=STRING_MAX_LENGTH), _Printable, AfterValidator(_check_bind_address)
]
HttpURL = Annotated[str, Field(max_length=2048), _Printable, AfterValidator(_check_http_url)]
NonEmpty = Annotated[str, Field(min_length=1, max_length=STRING_MAX_LENGTH), _Printable]
#: a name: 1 to NAME_MAX_LENGTH printable characters
Name = Annotated[str, Field(min_length=1, max_length=NAME_MAX_LENGTH), _Printable]
Secret = Annotated[SecretStr, Field(min_length=1, max_length=STRING_MAX_LENGTH)]


# --- auth -------------------------------------------------------------------------------


class BasicAuth(Strict):
    username: NonEmpty
    password: Secret


class AWSAccessKeyAuth(Strict):
    accessKey: NonEmpty
    secretKey: Secret


class ActiveDirectoryAuth(Strict):
    domain: NonEmpty
    username: NonEmpty
    password: Secret


AuthType = Literal["basic_auth", "aws_access_key", "aws_iam_role", "active_directory"]

#: the sub-object each auth type needs (None: no sub-object)
AUTH_BLOCKS: dict[str, str | None] = {
    "basic_auth": "basicAuth",
    "aws_access_key": "awsAccessKeyAuth",
    "aws_iam_role": None,
    "active_directory": "activeDirectoryAuth",
}


#: the keys (files) each auth type's credentials consist of, in the operator's Secrets and
#: in a credentials directory (:func:`event_router.config.loader.resolve_credentials`)
CREDENTIAL_KEYS: dict[str, tuple[str, ...]] = {
    "basic_auth": ("username", "password"),
    "active_directory": ("domain", "username", "password"),
    "aws_access_key": ("accessKey", "secretKey"),
    "aws_iam_role": (),
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
    pageSize: int = Count(100, PAGE_SIZE)
    batchWindowSeconds: float = Seconds(0.06, VCENTER_BATCH_WINDOW_SECONDS)
    typeStyle: TypeStyle = "router"

    @model_validator(mode="after")
    def _auth(self) -> VCenterConfig:
        problems = Problems()
        check_auth(problems, self.auth, ("basic_auth",), required=True)
        problems.raise_if_any()
        return self


def horizon_username_problem(username: str) -> str | None:
    """Why Horizon cannot log in with ``username``, or None: it wants the plain user name,
    with the domain in ``activeDirectoryAuth.domain`` (no UPN, no ``DOMAIN\\user``)."""
    allowed = (
        "allowed: the plain user name such as 'administrator', with the domain in "
        "activeDirectoryAuth.domain"
    )
    if "@" in username:
        return f"UPN user names are not supported (got {username!r}; {allowed})"
    if "\\" in username:
        return f"DOMAIN\\user names are not supported (got {username!r}; {allowed})"
    return None


class HorizonConfig(Strict):
    address: HttpURL
    insecureSSL: bool = False
    checkpoint: bool = False
    checkpointDir: NonEmpty = "./checkpoints"
    auth: Auth
    # extensions of ours
    pollIntervalSeconds: float = Seconds(1.0, HORIZON_POLL_SECONDS)
    typeStyle: TypeStyle = "router"

    @model_validator(mode="after")
    def _auth(self) -> HorizonConfig:
        problems = Problems()
        check_auth(problems, self.auth, ("active_directory",), required=True)
        ad = self.auth.activeDirectoryAuth
        problem = horizon_username_problem(ad.username) if ad is not None else None
        if problem is not None:
            problems.add("auth.activeDirectoryAuth.username", problem)
        problems.raise_if_any()
        return self


class WebhookConfig(Strict):
    bindAddress: BindAddress
    path: Annotated[
        str, Field(max_length=WEBHOOK_PATH_MAX_LENGTH), _Printable, AfterValidator(_check_path)
    ]
    auth: Auth | None = None
    # extensions of ours
    maxBodyBytes: int = Count(1_048_576, WEBHOOK_MAX_BODY_BYTES)
    #: when a request gets its 2xx: ``delivered`` (every processor settled its events) or
    #: ``queued`` (held in memory only: faster, but lost if the router dies)
    ack: Literal["delivered", "queued"] = "delivered"
    #: ``ack: delivered``: how long a request may wait for delivery before its 503
    ackTimeoutSeconds: float = Seconds(30.0, WEBHOOK_ACK_TIMEOUT_SECONDS)

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
    name: Name
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
    """The original's object form of a URI: Go's ``net/url`` URL (Knative's ``apis.URL``)
    fields ``scheme``, ``host`` (``host`` or ``host:port``, ``[IPv6]`` or ``[IPv6]:port``) and
    ``path``; ``port`` is an extension of ours (not together with a port in ``host``)."""

    scheme: Literal["http", "https"]
    host: Annotated[
        str, Field(min_length=1, max_length=STRING_MAX_LENGTH), _Printable,
        AfterValidator(_check_uri_host),
    ]  # fmt: skip
    port: int | None = Field(default=None, ge=PORT[0], le=PORT[1], strict=True)
    path: Annotated[str, Field(max_length=2048), _Printable] | None = None

    @model_validator(mode="after")
    def _one_port(self) -> URIObject:
        problems = Problems()
        host, port = split_uri_host(self.host)
        if self.port is not None and port is not None:
            problems.add(
                "port",
                f"not allowed when host carries a port too (got host {self.host!r} and port "
                f"{self.port}; allowed: the port in host, such as {host}:{port}, or in port)",
            )
        problems.raise_if_any()
        return self

    def url(self) -> str:
        """The URL Go's ``url.URL.String()`` gives: ``scheme://host[:port]/path``, the path
        escaped as Go escapes it (space as %20, ``%`` as %25, ``?`` as %3F)."""
        host, port = split_uri_host(self.host)
        port = port if port is not None else self.port
        netloc = f"{host}:{port}" if port is not None else host
        path = self.path or ""
        if path and not path.startswith("/"):
            path = "/" + path
        return f"{self.scheme}://{netloc}{quote(path, safe=PATH_SAFE)}"


class KReference(Strict):
    apiVersion: NonEmpty
    kind: NonEmpty
    name: NonEmpty
    namespace: NonEmpty | None = None


def _uri_kind(value: Any) -> str:
    return "url" if isinstance(value, str) else "object"


#: the loader drops these union tags from error paths
UNION_TAGS = frozenset({"url", "object"})

URI = Annotated[
    Annotated[URIObject, Tag("object")] | Annotated[HttpURL, Tag("url")],
    Discriminator(_uri_kind),
]


class Destination(Strict):
    #: an object ``{scheme, host, path?, port?}`` (the original's, plus ``port``) or a URL string
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
    refreshIntervalSeconds: float = Seconds(10.0, OPENFAAS_REFRESH_SECONDS)

    @model_validator(mode="after")
    def _auth(self) -> OpenFaaSConfig:
        problems = Problems()
        check_auth(problems, self.auth, ("basic_auth",), required=False)
        problems.raise_if_any()
        return self


class AWSEventBridgeConfig(Strict):
    region: Annotated[str, Field(max_length=REGION_MAX_LENGTH, pattern=REGION_PATTERN)]
    eventBus: NonEmpty
    ruleARN: Annotated[str, Field(max_length=RULE_ARN_MAX_LENGTH), AfterValidator(_check_arn)]
    auth: Auth
    # extensions of ours
    endpoint: HttpURL | None = None
    ruleRefreshSeconds: float = Seconds(300.0, EVENTBRIDGE_RULE_REFRESH_SECONDS)

    @model_validator(mode="after")
    def _auth(self) -> AWSEventBridgeConfig:
        problems = Problems()
        check_auth(problems, self.auth, ("aws_access_key", "aws_iam_role"), required=True)
        problems.raise_if_any()
        return self


# --- filters and delivery (Knative Trigger filters, Knative DeliverySpec) ---------------

#: a CloudEvent attribute name (CloudEvents 1.0: lower-case ASCII letters and digits)
ATTRIBUTE_NAME_PATTERN = r"^[a-z0-9]{1,64}$"
AttributeName = Annotated[str, Field(pattern=ATTRIBUTE_NAME_PATTERN)]
AttributeValue = Annotated[str, Field(max_length=STRING_MAX_LENGTH), _Printable]
#: filters nest at most this deep (an ``exact`` inside ``all`` inside ``not`` is 3)
FILTERS_MAX_DEPTH = 3
#: filters of a processor, and filters inside one ``all`` / ``any`` (the CRD's CEL rules are
#: costed over the product of these)
FILTERS_MAX_LENGTH = 16
NESTED_FILTERS_MAX_LENGTH = 8
#: the filter dialects of a Knative Trigger's ``filters`` that we evaluate
FILTER_DIALECTS = ("exact", "prefix", "suffix", "all", "any", "not")


def _attr(dialect: str) -> str:
    return "not_" if dialect == "not" else dialect


class Filter(Strict):
    """One expression of a Knative Trigger's ``filters`` list: exactly one dialect.

    ``exact`` / ``prefix`` / ``suffix`` map one CloudEvent attribute to a value (the
    attribute's value equals, starts with, ends with it); ``all`` / ``any`` hold lists of
    filters (all, at least one, must match); ``not`` holds one filter that must not match."""

    exact: dict[AttributeName, AttributeValue] | None = None
    prefix: dict[AttributeName, AttributeValue] | None = None
    suffix: dict[AttributeName, AttributeValue] | None = None
    all: list[Filter] | None = Field(default=None, max_length=NESTED_FILTERS_MAX_LENGTH)
    any: list[Filter] | None = Field(default=None, max_length=NESTED_FILTERS_MAX_LENGTH)
    not_: Filter | None = Field(default=None, alias="not")

    @model_validator(mode="before")
    @classmethod
    def _cesql(cls, data: Any) -> Any:
        if isinstance(data, dict) and "cesql" in data:
            raise PydanticCustomError(
                ERROR_TYPE,
                "{summary}",
                {
                    "summary": "cesql: not supported",
                    "problems": [
                        (
                            "cesql",
                            "not supported (allowed: exact, prefix, suffix, all, any, not; "
                            "for content filters use the processor's pattern)",
                        )
                    ],
                },
            )
        return data

    @model_validator(mode="after")
    def _one_dialect(self) -> Filter:
        problems = Problems()
        given = [d for d in FILTER_DIALECTS if getattr(self, _attr(d)) is not None]
        if len(given) != 1:
            got = ", ".join(given) if given else "none"
            problems.add("", f"exactly one of {', '.join(FILTER_DIALECTS)} is required (got {got})")
        for d in ("exact", "prefix", "suffix"):
            m = getattr(self, d)
            if m is not None and len(m) != 1:
                problems.add(
                    d,
                    f"exactly one attribute is required (got {len(m)}; allowed: one "
                    f"attribute per {d} filter, several filters in a list or under all)",
                )
            if d != "exact" and m:
                for k, v in m.items():
                    if not v:
                        problems.add(f"{d}.{k}", "must not be empty")
        for d in ("all", "any"):
            lst = getattr(self, d)
            if lst is not None and not lst:
                problems.add(d, "must hold at least one filter")
        problems.raise_if_any()
        return self

    def depth(self) -> int:
        inner = [*(self.all or []), *(self.any or []), *([self.not_] if self.not_ else [])]
        return 1 + max((f.depth() for f in inner), default=0)


_DURATION = re.compile(
    r"^P(?:(?P<d>[0-9]+)D)?(?:T(?:(?P<h>[0-9]+)H)?(?:(?P<m>[0-9]+)M)?"
    r"(?:(?P<s>[0-9]+(?:[.,][0-9]+)?)S)?)?$"
)
#: the ISO 8601 durations the CRD accepts (days, hours, minutes, seconds; no years or months,
#: whose length varies)
DURATION_PATTERN = (
    _DURATION.pattern.replace("?P<d>", "")
    .replace("?P<h>", "")
    .replace("?P<m>", "")
    .replace("?P<s>", "")
)


def parse_duration(value: str) -> float:
    """An ISO 8601 duration (``PT0.2S``, ``PT1M30S``, ``P1DT2H``) in seconds; ValueError
    naming what is allowed otherwise."""
    m = _DURATION.match(value)
    if m is None or value in ("P", "PT") or value.endswith("T"):
        raise ValueError(
            "not an ISO 8601 duration (allowed: days, hours, minutes and seconds, such as "
            "PT0.2S, PT30S, PT1M30S, P1DT2H)"
        )
    d, h, mi, s = (m.group(k) for k in ("d", "h", "m", "s"))
    return (
        int(d or 0) * 86400
        + int(h or 0) * 3600
        + int(mi or 0) * 60
        + float((s or "0").replace(",", "."))
    )


def _check_duration(value: str) -> str:
    parse_duration(value)
    return value


Duration = Annotated[str, Field(max_length=64), AfterValidator(_check_duration)]

#: bounds (seconds) of the DeliverySpec durations and of ``retry``
BACKOFF_DELAY_SECONDS = (0.0, 3600.0)
DELIVERY_TIMEOUT_SECONDS = (0.1, 3600.0)
DELIVERY_RETRY = (0, 100)


class Delivery(Strict):
    """Knative's DeliverySpec, per processor: how often and how patiently to deliver, and
    where an event goes that cannot be delivered (see docs/router.md)."""

    #: retries after the first attempt
    retry: int = Count(4, DELIVERY_RETRY)
    backoffPolicy: Literal["linear", "exponential"] = "exponential"
    #: the delay before the first retry; exponential doubles it each retry, linear adds it
    backoffDelay: Duration = "PT0.1S"
    #: the time one attempt may take
    timeout: Duration = "PT10S"
    deadLetterSink: Destination | None = None

    @model_validator(mode="after")
    def _bounds(self) -> Delivery:
        problems = Problems()
        for name, (lo, hi) in (
            ("backoffDelay", BACKOFF_DELAY_SECONDS),
            ("timeout", DELIVERY_TIMEOUT_SECONDS),
        ):
            secs = parse_duration(getattr(self, name))
            if not lo <= secs <= hi:
                problems.add(
                    name,
                    f"out of range (got {getattr(self, name)}, {secs:g}s; allowed: "
                    f"{lo:g}s to {hi:g}s)",
                )
        problems.raise_if_any()
        return self

    @property
    def backoff_delay_seconds(self) -> float:
        return parse_duration(self.backoffDelay)

    @property
    def timeout_seconds(self) -> float:
        return parse_duration(self.timeout)


ProcessorType = Literal["knative", "openfaas", "aws_event_bridge"]


class EventProcessor(Strict):
    type: ProcessorType
    name: Name
    knative: KnativeConfig | None = None
    openfaas: OpenFaaSConfig | None = None
    awsEventBridge: AWSEventBridgeConfig | None = None
    # extensions of ours: which events this processor takes, and how it delivers them
    #: Knative Trigger filters: every entry must match (see docs/configuration.md)
    filters: list[Filter] | None = Field(default=None, max_length=FILTERS_MAX_LENGTH)
    #: an Amazon EventBridge event pattern matched against the CloudEvent as JSON
    pattern: dict[str, Any] | None = None
    delivery: Delivery = Field(default_factory=Delivery)

    @model_validator(mode="after")
    def _block(self) -> EventProcessor:
        problems = Problems()
        check_type_block(
            problems,
            self,
            {"knative": "knative", "openfaas": "openfaas", "aws_event_bridge": "awsEventBridge"},
        )
        for i, f in enumerate(self.filters or []):
            if f.depth() > FILTERS_MAX_DEPTH:
                problems.add(
                    f"filters.{i}",
                    f"nested {f.depth()} levels deep (allowed: at most {FILTERS_MAX_DEPTH})",
                )
        if self.pattern is not None:
            from event_router.patterns import PatternError, compile_pattern

            try:
                compile_pattern(self.pattern)
            except PatternError as err:
                problems.add("pattern", str(err))
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
    name: Name
    default: MetricsDefaultConfig


class Certificates(Strict):
    #: PEM files of extra root CAs, trusted by every TLS client of the router
    rootCAs: list[NonEmpty] = Field(default_factory=list, max_length=MAX_ROOT_CAS)


class CheckpointTuning(Strict):
    periodSeconds: float = Seconds(5.0, CHECKPOINT_PERIOD_SECONDS)
    maxAgeSeconds: float = Seconds(3600.0, CHECKPOINT_MAX_AGE_SECONDS)


class Metadata(Strict):
    name: Name
    labels: dict[Name, Annotated[str, Field(max_length=STRING_MAX_LENGTH), _Printable]] | None = (
        None
    )


class RouterSpec(Strict):
    """The router's settings: the original file's top-level fields, the CR's ``spec``."""

    eventProvider: EventProvider
    #: the original's one processor; the same as ``eventProcessors`` with one entry
    eventProcessor: EventProcessor | None = None
    #: several processors, each with a unique name (an extension of ours)
    eventProcessors: list[EventProcessor] | None = Field(
        default=None, min_length=1, max_length=MAX_PROCESSORS
    )
    metricsProvider: MetricsProvider | None = None
    certificates: Certificates | None = None
    checkpoint: CheckpointTuning = Field(default_factory=CheckpointTuning)

    @model_validator(mode="after")
    def _listeners(self) -> RouterSpec:
        problems = Problems()
        if self.eventProcessor is None and self.eventProcessors is None:
            problems.add(
                "eventProcessors",
                "required (allowed: a list of processors, or the original's single eventProcessor)",
            )
        elif self.eventProcessor is not None and self.eventProcessors is not None:
            problems.add(
                "eventProcessors",
                "not allowed together with eventProcessor (allowed: one of eventProcessor "
                "or eventProcessors; move the processor into the list)",
            )
        seen: dict[str, int] = {}
        for i, p in enumerate(self.eventProcessors or []):
            if p.name in seen:
                problems.add(
                    f"eventProcessors.{i}.name",
                    f"{p.name!r} is the name of eventProcessors[{seen[p.name]}] too "
                    f"(allowed: a unique name per processor)",
                )
            seen.setdefault(p.name, i)
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

    @property
    def processors(self) -> list[EventProcessor]:
        """Every processor: ``eventProcessors``, or the original's ``eventProcessor``."""
        if self.eventProcessors is not None:
            return list(self.eventProcessors)
        assert self.eventProcessor is not None
        return [self.eventProcessor]

    def processor_field(self, index: int) -> str:
        """The config path of processor ``index``, for error messages."""
        if self.eventProcessors is not None:
            return f"eventProcessors[{index}]"
        return "eventProcessor"


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
