"""The RouterConfig custom resource: pydantic models of its ``spec`` and the CRD built from them.

The CRD's structural ``openAPIV3Schema`` is *generated* from these models
(:func:`spec_schema`), and every rule the schema alone cannot express is written once as
a CEL ``x-kubernetes-validations`` rule next to a pydantic validator that checks the same
thing, so the API server and the operator never disagree. The patterns of values the router
checks too (``bindAddress``, the webhook ``path``, the EventBridge ``region`` and
``ruleARN``) are the router's own constants from :mod:`event_router.config.models`, so the
API server accepts exactly what the router accepts.

Differences from the router's own file (:mod:`event_router.config.models`):

* credentials only by reference: ``auth: {type, secretRef: {name}}`` names a Secret in the
  RouterConfig's namespace (``username``/``password``; ``domain`` for active_directory;
  ``accessKey``/``secretKey`` for aws_access_key); inline passwords are not in the schema;
* each ``auth`` accepts only the types its component supports (vCenter: basic_auth,
  Horizon: active_directory, EventBridge: aws_access_key | aws_iam_role, others: basic_auth);
* ``checkpoint`` of vCenter/Horizon defaults to ``true`` (checkpoints live in a ConfigMap);
  ``checkpointDir`` is not part of the CR (the operator decides);
* ``certificates.rootCAs`` are references to PEM bundles in ConfigMaps of the RouterConfig's
  namespace (``{configMapRef: {name, key}}``), not file paths: the operator mounts them into
  the router pod, or stages them in a private temp dir for an in-process router.

Run ``python -m event_router.operator.crd`` to print the CRD YAML (``crds/`` holds it).
"""

from __future__ import annotations

import copy
import re
import sys
from typing import Annotated, Any, Literal

import yaml
from pydantic import AfterValidator, BaseModel, ConfigDict, Field, model_validator

from event_router.config.models import (
    ATTRIBUTE_NAME_PATTERN,
    BIND_ADDRESS_PATTERN,
    DELIVERY_RETRY,
    DURATION_PATTERN,
    EVENTBRIDGE_RULE_REFRESH_SECONDS,
    FILTER_DIALECTS,
    FILTERS_MAX_DEPTH,
    FILTERS_MAX_LENGTH,
    HORIZON_POLL_SECONDS,
    HOST_MAX_LENGTH,
    MAX_PROCESSORS,
    NESTED_FILTERS_MAX_LENGTH,
    OPENFAAS_REFRESH_SECONDS,
    PAGE_SIZE,
    REGION_MAX_LENGTH,
    REGION_PATTERN,
    RULE_ARN_MAX_LENGTH,
    RULE_ARN_PATTERN,
    STRING_MAX_LENGTH,
    URI_HOST_PATTERN,
    VCENTER_BATCH_WINDOW_SECONDS,
    WEBHOOK_ACK_TIMEOUT_SECONDS,
    WEBHOOK_MAX_BODY_BYTES,
    WEBHOOK_PATH_MAX_LENGTH,
    WEBHOOK_PATH_PATTERN,
    CheckpointTuning,
    Count,
    KReference,
    ProcessorType,
    ProviderType,
    Seconds,
    TypeStyle,
)

GROUP = "event-router.vmware.com"
VERSION = "v1alpha1"
KIND = "RouterConfig"
PLURAL = "routerconfigs"
SINGULAR = "routerconfig"
SHORT_NAMES = ["rtc"]
CRD_NAME = f"{PLURAL}.{GROUP}"

DNS_SUBDOMAIN = r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$"
HTTP_URL = r"^https?://[^\s/]+"
CONFIGMAP_KEY = r"^[-._a-zA-Z0-9]+$"
MAX_ROOT_CAS = 16


def _rules(*rules: tuple[str, str]) -> ConfigDict:
    """Model config carrying CEL rules: ``(rule, message)`` pairs."""
    return ConfigDict(
        extra="forbid",
        populate_by_name=True,
        strict=True,
        json_schema_extra={
            "x-kubernetes-validations": [{"rule": r, "message": m} for r, m in rules]
        },
    )


class Strict(BaseModel):
    """Unknown fields rejected, no type coercion (the API server does not coerce either)."""

    model_config = ConfigDict(extra="forbid", populate_by_name=True, strict=True)


# --- bind addresses ----------------------------------------------------------------------

#: the router's rule besides BIND_ADDRESS_PATTERN (which RE2 cannot say without a lookahead)
HOST_LENGTH_RULE = (
    f"self.startsWith('[') || self.matches('^[^:]{{1,{HOST_MAX_LENGTH}}}:')",
    f"the host must be at most {HOST_MAX_LENGTH} characters",
)


def _host_length(value: str) -> str:
    if not value.startswith("[") and len(value.rpartition(":")[0]) > HOST_MAX_LENGTH:
        raise ValueError(HOST_LENGTH_RULE[1])
    return value


#: ``host:port`` exactly as the router's :func:`~event_router.config.models.parse_bind_address`
BindAddress = Annotated[
    str,
    Field(
        max_length=261,
        pattern=BIND_ADDRESS_PATTERN,
        json_schema_extra={
            "x-kubernetes-validations": [
                {"rule": HOST_LENGTH_RULE[0], "message": HOST_LENGTH_RULE[1]}
            ]
        },
    ),
    AfterValidator(_host_length),
]


# --- credentials by reference -----------------------------------------------------------


class SecretRef(Strict):
    """A Secret in the RouterConfig's namespace."""

    name: str = Field(min_length=1, max_length=253, pattern=DNS_SUBDOMAIN)


class BasicAuthRef(Strict):
    """basic_auth: the Secret holds ``username`` and ``password``
    (type kubernetes.io/basic-auth)."""

    type: Literal["basic_auth"]
    secretRef: SecretRef


class ActiveDirectoryAuthRef(Strict):
    """active_directory: the Secret holds ``domain``, ``username`` and ``password``."""

    type: Literal["active_directory"]
    secretRef: SecretRef


AWS_AUTH_RULE = (
    "self.type == 'aws_iam_role' || has(self.secretRef)",
    "secretRef is required when type is aws_access_key",
)


class AWSAuthRef(Strict):
    """aws_access_key: the Secret holds ``accessKey`` and ``secretKey``;
    aws_iam_role: no Secret (the pod's IAM role / web identity)."""

    model_config = _rules(AWS_AUTH_RULE)

    type: Literal["aws_access_key", "aws_iam_role"]
    secretRef: SecretRef | None = None

    @model_validator(mode="after")
    def _secret_needed(self) -> AWSAuthRef:
        if self.type == "aws_access_key" and self.secretRef is None:
            raise ValueError(AWS_AUTH_RULE[1])
        return self


# --- providers --------------------------------------------------------------------------


class VCenterSpec(Strict):
    """vCenter Server (or vcsim) to read events from."""

    address: str = Field(min_length=1, max_length=2048, pattern=HTTP_URL)
    insecureSSL: bool = False
    checkpoint: bool = True
    auth: BasicAuthRef
    pageSize: int = Count(100, PAGE_SIZE)
    batchWindowSeconds: float = Seconds(0.06, VCENTER_BATCH_WINDOW_SECONDS)
    typeStyle: TypeStyle = "router"


class HorizonSpec(Strict):
    """Horizon REST API to read audit events from."""

    address: str = Field(min_length=1, max_length=2048, pattern=HTTP_URL)
    insecureSSL: bool = False
    checkpoint: bool = True
    auth: ActiveDirectoryAuthRef
    pollIntervalSeconds: float = Seconds(1.0, HORIZON_POLL_SECONDS)
    typeStyle: TypeStyle = "router"


WEBHOOK_PATH_RULE = ("self.path != '/'", "webhook.path must not be / (use e.g. /webhook)")


class WebhookSpec(Strict):
    """An HTTP endpoint receiving CloudEvents (POST, binary or structured)."""

    model_config = _rules(WEBHOOK_PATH_RULE)

    bindAddress: BindAddress
    path: str = Field(max_length=WEBHOOK_PATH_MAX_LENGTH, pattern=WEBHOOK_PATH_PATTERN)
    auth: BasicAuthRef | None = None
    maxBodyBytes: int = Count(1_048_576, WEBHOOK_MAX_BODY_BYTES)
    ack: Literal["delivered", "queued"] = "delivered"
    ackTimeoutSeconds: float = Seconds(30.0, WEBHOOK_ACK_TIMEOUT_SECONDS)

    @model_validator(mode="after")
    def _path(self) -> WebhookSpec:
        if self.path == "/":
            raise ValueError(WEBHOOK_PATH_RULE[1])
        return self


PROVIDER_SUBOBJECTS: dict[str, str] = {
    "vcenter": "vcenter",
    "horizon": "horizon",
    "webhook": "webhook",
    "vcsim": "vcsim",
}
PROCESSOR_SUBOBJECTS: dict[str, str] = {
    "knative": "knative",
    "openfaas": "openfaas",
    "aws_event_bridge": "awsEventBridge",
}


def _matching_rules(section: str, mapping: dict[str, str]) -> list[tuple[str, str]]:
    return [
        (
            f"(self.type == '{t}') == has(self.{field})",
            f"{section}.{field} must be set when {section}.type is {t}, and only then",
        )
        for t, field in mapping.items()
    ]


def _check_matching(obj: BaseModel, section: str, mapping: dict[str, str]) -> None:
    t = getattr(obj, "type")  # noqa: B009
    for typ, field in mapping.items():
        present = getattr(obj, field) is not None
        if (t == typ) != present:
            raise ValueError(
                f"{section}.{field} must be set when {section}.type is {typ}, and only then"
            )


class EventProviderSpec(Strict):
    """Where events come from; set the sub-object named by ``type``."""

    model_config = _rules(*_matching_rules("eventProvider", PROVIDER_SUBOBJECTS))

    type: ProviderType
    name: str = Field(min_length=1, max_length=253)
    vcenter: VCenterSpec | None = None
    horizon: HorizonSpec | None = None
    webhook: WebhookSpec | None = None
    vcsim: VCenterSpec | None = None

    @model_validator(mode="after")
    def _matching(self) -> EventProviderSpec:
        _check_matching(self, "eventProvider", PROVIDER_SUBOBJECTS)
        return self


# --- processors -------------------------------------------------------------------------

DESTINATION_RULE = ("has(self.uri) != has(self.ref)", "exactly one of uri or ref must be set")

#: the router's rules of ``uri`` besides URI_HOST_PATTERN (RE2 has no lookahead)
URI_HOST_LENGTH_RULE = (
    f"self.startsWith('[') || self.matches('^[^:]{{1,{HOST_MAX_LENGTH}}}(:[0-9]+)?$')",
    f"the host must be at most {HOST_MAX_LENGTH} characters",
)
URI_PORT_RULE = (
    "!has(self.port) || !self.host.matches(':[0-9]+$')",
    "port is not allowed when host carries a port too",
)


def _uri_host_length(value: str) -> str:
    if not value.startswith("[") and len(value.partition(":")[0]) > HOST_MAX_LENGTH:
        raise ValueError(URI_HOST_LENGTH_RULE[1])
    return value


class URISpec(Strict):
    """The original's uri object: scheme, host (host or host:port, [IPv6] or [IPv6]:port, as
    Go's net/url reads it), path; port is an extension, not together with a port in host."""

    model_config = _rules(URI_PORT_RULE)

    scheme: Literal["http", "https"]
    host: Annotated[
        str,
        Field(
            min_length=1,
            max_length=261,
            pattern=URI_HOST_PATTERN,
            json_schema_extra={
                "x-kubernetes-validations": [
                    {"rule": URI_HOST_LENGTH_RULE[0], "message": URI_HOST_LENGTH_RULE[1]}
                ]
            },
        ),
        AfterValidator(_uri_host_length),
    ]
    port: int | None = Field(default=None, ge=1, le=65535)
    path: str | None = None

    @model_validator(mode="after")
    def _one_port(self) -> URISpec:
        if self.port is not None and re.search(":[0-9]+$", self.host):
            raise ValueError(URI_PORT_RULE[1])
        return self


class DestinationSpec(Strict):
    """A URI, or a reference to an Addressable (Broker, Knative Service, ...) or a v1
    Service, resolved by the operator."""

    model_config = _rules(DESTINATION_RULE)

    uri: URISpec | None = None
    ref: KReference | None = None

    @model_validator(mode="after")
    def _one_of(self) -> DestinationSpec:
        if (self.uri is None) == (self.ref is None):
            raise ValueError(DESTINATION_RULE[1])
        return self


class KnativeSpec(Strict):
    destination: DestinationSpec
    encoding: Literal["binary", "structured"] = "binary"
    insecureSSL: bool = False
    auth: BasicAuthRef | None = None


class OpenFaaSSpec(Strict):
    address: str = Field(min_length=1, max_length=2048, pattern=HTTP_URL)
    async_: bool = Field(default=False, alias="async")
    auth: BasicAuthRef | None = None
    refreshIntervalSeconds: float = Seconds(10.0, OPENFAAS_REFRESH_SECONDS)


class EventBridgeSpec(Strict):
    region: str = Field(min_length=1, max_length=REGION_MAX_LENGTH, pattern=REGION_PATTERN)
    eventBus: str = Field(min_length=1, max_length=1600)
    ruleARN: str = Field(min_length=1, max_length=RULE_ARN_MAX_LENGTH, pattern=RULE_ARN_PATTERN)
    auth: AWSAuthRef
    endpoint: str | None = Field(default=None, max_length=2048, pattern=HTTP_URL)
    ruleRefreshSeconds: float = Seconds(300.0, EVENTBRIDGE_RULE_REFRESH_SECONDS)


class DeliverySpec(Strict):
    """Knative's DeliverySpec: retries, backoff, the time one attempt may take, and the
    dead-letter sink of events whose delivery failed for good. Left out: the processor's
    own defaults (see docs/router.md)."""

    retry: int | None = Field(default=None, ge=DELIVERY_RETRY[0], le=DELIVERY_RETRY[1])
    backoffPolicy: Literal["linear", "exponential"] | None = None
    backoffDelay: str | None = Field(default=None, max_length=64, pattern=DURATION_PATTERN)
    timeout: str | None = Field(default=None, max_length=64, pattern=DURATION_PATTERN)
    deadLetterSink: DestinationSpec | None = None


#: the filters of a processor are checked in full by the operator (the router's models);
#: the API server checks their shape with this schema, nested FILTERS_MAX_DEPTH deep
FILTER_ONE_DIALECT_RULE = (
    "[" + ", ".join(f"has(self.{d})" for d in FILTER_DIALECTS) + "].filter(x, x).size() == 1",
    "exactly one of " + ", ".join(FILTER_DIALECTS) + " must be set",
)


def filter_schema(depth: int = FILTERS_MAX_DEPTH) -> dict[str, Any]:
    """The structural schema of one filter, nested ``depth`` levels (the last level holds
    exact / prefix / suffix only)."""
    attrs: dict[str, Any] = {
        "type": "object",
        "minProperties": 1,
        "maxProperties": 1,
        "additionalProperties": {"type": "string", "maxLength": STRING_MAX_LENGTH},
        "x-kubernetes-validations": [
            {
                "rule": f"self.all(k, k.matches('{ATTRIBUTE_NAME_PATTERN}'))",
                "message": "attribute names are lower-case letters and digits (CloudEvents)",
            }
        ],
    }
    props: dict[str, Any] = {"exact": attrs, "prefix": attrs, "suffix": attrs}
    if depth > 1:
        inner = filter_schema(depth - 1)
        listed = {
            "type": "array",
            "minItems": 1,
            "maxItems": NESTED_FILTERS_MAX_LENGTH,
            "items": inner,
        }
        props.update({"all": listed, "any": listed, "not": inner})
    rule, message = FILTER_ONE_DIALECT_RULE
    if depth == 1:
        leaf = [d for d in FILTER_DIALECTS if d in props]
        rule = "[" + ", ".join(f"has(self.{d})" for d in leaf) + "].filter(x, x).size() == 1"
        message = f"exactly one of {', '.join(leaf)} must be set (filters nest at most "
        message += f"{FILTERS_MAX_DEPTH} levels deep)"
    return {
        "type": "object",
        "properties": copy.deepcopy(props),
        "x-kubernetes-validations": [{"rule": rule, "message": message}],
    }


class EventProcessorSpec(Strict):
    """Where events go; set the sub-object named by ``type``."""

    model_config = _rules(*_matching_rules("eventProcessor", PROCESSOR_SUBOBJECTS))

    type: ProcessorType
    name: str = Field(min_length=1, max_length=253)
    knative: KnativeSpec | None = None
    openfaas: OpenFaaSSpec | None = None
    awsEventBridge: EventBridgeSpec | None = None
    #: Knative Trigger filters (exact, prefix, suffix, all, any, not): all must match
    filters: list[dict[str, Any]] | None = Field(default=None, max_length=FILTERS_MAX_LENGTH)
    #: an Amazon EventBridge event pattern matched against the CloudEvent as JSON
    pattern: dict[str, Any] | None = None
    delivery: DeliverySpec | None = None

    @model_validator(mode="after")
    def _matching(self) -> EventProcessorSpec:
        _check_matching(self, "eventProcessor", PROCESSOR_SUBOBJECTS)
        _check_filters(self.filters or [], self.pattern)
        return self


def _check_filters(filters: list[dict[str, Any]], pattern: dict[str, Any] | None) -> None:
    """What the API server checks of ``filters`` (its schema, FILTERS_MAX_DEPTH deep) and
    what the router checks of them and of ``pattern``: the router's own models."""
    from pydantic import ValidationError

    from event_router.config.models import Filter
    from event_router.patterns import PatternError, compile_pattern

    for i, raw in enumerate(filters):
        try:
            f = Filter.model_validate(raw)
        except ValidationError as e:
            first = e.errors()[0]
            where = ".".join(str(p) for p in first["loc"])
            raise ValueError(
                f"filters[{i}]{'.' + where if where else ''}: {first['msg']}"
            ) from None
        if f.depth() > FILTERS_MAX_DEPTH:
            raise ValueError(f"filters[{i}]: nested deeper than {FILTERS_MAX_DEPTH} levels")
    if pattern is not None:
        try:
            compile_pattern(pattern)
        except PatternError as e:
            raise ValueError(f"pattern: {e}") from None


# --- metrics, checkpoints, the spec ------------------------------------------------------


class MetricsDefaultSpec(Strict):
    bindAddress: BindAddress
    auth: BasicAuthRef | None = None


class MetricsProviderSpec(Strict):
    type: Literal["default"] = "default"
    name: str = Field(min_length=1, max_length=253)
    default: MetricsDefaultSpec


class ConfigMapKeyRef(Strict):
    """One key of a ConfigMap in the RouterConfig's namespace."""

    name: str = Field(min_length=1, max_length=253, pattern=DNS_SUBDOMAIN)
    key: str = Field(min_length=1, max_length=253, pattern=CONFIGMAP_KEY)


class RootCARef(Strict):
    """A PEM bundle of root CA certificates (``-----BEGIN CERTIFICATE-----`` blocks) held in
    a ConfigMap key (CA certificates are public; trust-manager Bundles write such ConfigMaps)."""

    configMapRef: ConfigMapKeyRef


class CertificatesSpec(Strict):
    """Extra root CAs trusted by every TLS client of the router (vCenter, Horizon, sinks)."""

    rootCAs: list[RootCARef] = Field(default_factory=list, max_length=MAX_ROOT_CAS)


PROCESSORS_RULE = (
    "has(self.eventProcessor) != has(self.eventProcessors)",
    "exactly one of eventProcessor or eventProcessors must be set",
)


#: spec.replicas: a leader and up to two standbys (more add API load, not availability)
MAX_REPLICAS = 3


class RouterConfigSpec(Strict):
    """One event provider streaming to its event processors."""

    model_config = _rules(PROCESSORS_RULE)

    eventProvider: EventProviderSpec
    #: the original's single processor (the same as eventProcessors with one entry)
    eventProcessor: EventProcessorSpec | None = None
    #: several processors, each with a unique name
    eventProcessors: list[EventProcessorSpec] | None = Field(
        default=None,
        min_length=1,
        max_length=MAX_PROCESSORS,
        json_schema_extra={"x-kubernetes-list-type": "map", "x-kubernetes-list-map-keys": ["name"]},
    )
    metricsProvider: MetricsProviderSpec | None = None
    certificates: CertificatesSpec | None = None
    checkpoint: CheckpointTuning = Field(default_factory=CheckpointTuning)
    replicas: int = Field(
        default=1,
        ge=1,
        le=MAX_REPLICAS,
        description=(
            "Router pods (deployment runtime). vcenter and horizon: one leads (it holds the "
            "RouterConfig's Lease and streams), the others wait as warm standbys and take "
            "over within seconds when it stops renewing. webhook: every replica serves "
            "behind the Service. The in-process runtime runs one router whatever this says."
        ),
    )

    @model_validator(mode="after")
    def _processors(self) -> RouterConfigSpec:
        if (self.eventProcessor is None) == (self.eventProcessors is None):
            raise ValueError(PROCESSORS_RULE[1])
        names = [p.name for p in self.eventProcessors or []]
        dup = sorted({n for n in names if names.count(n) > 1})
        if dup:
            raise ValueError(f"eventProcessors: duplicate name(s) {', '.join(dup)}")
        return self

    @property
    def processors(self) -> list[EventProcessorSpec]:
        if self.eventProcessors is not None:
            return list(self.eventProcessors)
        assert self.eventProcessor is not None
        return [self.eventProcessor]

    def processor_field(self, index: int) -> str:
        """``spec.eventProcessors[i]`` or ``spec.eventProcessor``, for messages."""
        if self.eventProcessors is not None:
            return f"spec.eventProcessors[{index}]"
        return "spec.eventProcessor"


# --- pydantic JSON schema -> structural OpenAPI v3 ----------------------------------------

_DROP = {"title", "additionalProperties", "$defs"}


def _structural(node: Any, defs: dict[str, Any]) -> Any:
    if isinstance(node, list):
        return [_structural(n, defs) for n in node]
    if not isinstance(node, dict):
        return node
    node = dict(node)
    if "$ref" in node:
        target = defs[node.pop("$ref").rsplit("/", 1)[-1]]
        merged = {**copy.deepcopy(target), **node}
        return _structural(merged, defs)
    if "allOf" in node and len(node["allOf"]) == 1:
        inner = node.pop("allOf")[0]
        return _structural({**inner, **node}, defs)
    if "anyOf" in node:
        options = [o for o in node["anyOf"] if o != {"type": "null"}]
        if len(options) != 1:
            raise ValueError(f"cannot express anyOf {node['anyOf']} in a structural schema")
        rest = {k: v for k, v in node.items() if k != "anyOf"}
        if rest.get("default", "x") is None:
            rest.pop("default")
        return _structural({**options[0], **rest}, defs)
    out: dict[str, Any] = {}
    for key, value in node.items():
        if key in _DROP:
            continue
        if key == "const":
            out["enum"] = [value]
            out.setdefault("type", "string")
        elif key == "exclusiveMinimum":
            out["minimum"] = value
            out["exclusiveMinimum"] = True
        elif key == "exclusiveMaximum":
            out["maximum"] = value
            out["exclusiveMaximum"] = True
        elif key == "description":
            out[key] = " ".join(str(value).split()).replace("``", "")
        elif key == "properties":
            out[key] = {k: _structural(v, defs) for k, v in value.items()}
        else:
            out[key] = _structural(value, defs)
    low = out.get("minimum")
    if out.get("type") == "number" and isinstance(low, float) and not low.is_integer():
        # the API server compares an *integer* value with an integer-truncated minimum
        # (kube-openapi: 0 passes "minimum: 0.1"); CEL compares numbers as they are
        out["x-kubernetes-validations"] = [
            {"rule": f"self >= {low!r}", "message": f"must be at least {low:g}"}
        ]
    return out


def spec_schema() -> dict[str, Any]:
    """The structural OpenAPI v3 schema of ``spec``, generated from :class:`RouterConfigSpec`."""
    raw = RouterConfigSpec.model_json_schema(by_alias=True, mode="validation")
    defs = raw.get("$defs", {})
    schema: dict[str, Any] = _structural(raw, defs)
    props = schema["properties"]
    for processor in (props["eventProcessor"], props["eventProcessors"]["items"]):
        p = processor["properties"]
        p["filters"]["items"] = filter_schema()
        # any JSON: the router's EventBridge matcher checks it (the operator reports it)
        p["pattern"] = {
            "type": "object",
            "x-kubernetes-preserve-unknown-fields": True,
            "description": p["pattern"].get("description", ""),
        }
    return schema


CONDITION_TYPES = (
    "Ready",
    "SinkResolved",
    "DeadLetterSinkResolved",
    "CredentialsReady",
    "Deployed",
)

STATUS_SCHEMA: dict[str, Any] = {
    "type": "object",
    "properties": {
        "observedGeneration": {"type": "integer", "format": "int64"},
        "sinkUri": {"type": "string"},
        "processor": {
            "type": "string",
            "description": "The processors' types, comma-separated (kubectl get column).",
        },
        "processors": {
            "type": "array",
            "x-kubernetes-list-type": "map",
            "x-kubernetes-list-map-keys": ["name"],
            "items": {
                "type": "object",
                "required": ["name"],
                "properties": {
                    "name": {"type": "string"},
                    "type": {"type": "string"},
                    "sinkUri": {"type": "string"},
                    "deadLetterSinkUri": {"type": "string"},
                },
            },
        },
        "source": {"type": "string", "description": "Where events come from."},
        "leader": {
            "type": "string",
            "description": "The router pod that holds the Lease and streams (replicas > 1).",
        },
        "replicas": {"type": "integer", "description": "Router pods available / wanted."},
        "runtime": {"type": "string", "enum": ["deployment", "inprocess"]},
        "configHash": {"type": "string"},
        "conditions": {
            "type": "array",
            "x-kubernetes-list-type": "map",
            "x-kubernetes-list-map-keys": ["type"],
            "items": {
                "type": "object",
                "required": ["type", "status"],
                "properties": {
                    "type": {"type": "string"},
                    "status": {"type": "string", "enum": ["True", "False", "Unknown"]},
                    "reason": {"type": "string"},
                    "message": {"type": "string"},
                    "lastTransitionTime": {"type": "string", "format": "date-time"},
                    "observedGeneration": {"type": "integer", "format": "int64"},
                },
            },
        },
    },
}

PRINTER_COLUMNS: list[dict[str, Any]] = [
    {"name": "Provider", "type": "string", "jsonPath": ".spec.eventProvider.type"},
    {"name": "Source", "type": "string", "jsonPath": ".status.source"},
    {"name": "Processor", "type": "string", "jsonPath": ".status.processor"},
    {"name": "Sink", "type": "string", "jsonPath": ".status.sinkUri"},
    {
        "name": "Ready",
        "type": "string",
        "jsonPath": '.status.conditions[?(@.type=="Ready")].status',
    },
    {
        "name": "Reason",
        "type": "string",
        "jsonPath": '.status.conditions[?(@.type=="Ready")].reason',
    },
    {"name": "Age", "type": "date", "jsonPath": ".metadata.creationTimestamp"},
    {"name": "Leader", "type": "string", "jsonPath": ".status.leader", "priority": 1},
]


def crd() -> dict[str, Any]:
    """The CustomResourceDefinition object."""
    return {
        "apiVersion": "apiextensions.k8s.io/v1",
        "kind": "CustomResourceDefinition",
        "metadata": {
            "name": CRD_NAME,
            "labels": {"app.kubernetes.io/part-of": "event-router"},
        },
        "spec": {
            "group": GROUP,
            "scope": "Namespaced",
            "names": {
                "kind": KIND,
                "listKind": f"{KIND}List",
                "plural": PLURAL,
                "singular": SINGULAR,
                "shortNames": SHORT_NAMES,
                "categories": ["all", "event-router"],
            },
            "versions": [
                {
                    "name": VERSION,
                    "served": True,
                    "storage": True,
                    "subresources": {"status": {}},
                    "additionalPrinterColumns": PRINTER_COLUMNS,
                    "schema": {
                        "openAPIV3Schema": {
                            "type": "object",
                            "description": "RouterConfig: one event provider streaming "
                            "CloudEvents to one event processor.",
                            "required": ["spec"],
                            "properties": {
                                "apiVersion": {"type": "string"},
                                "kind": {"type": "string"},
                                "metadata": {"type": "object"},
                                "spec": spec_schema(),
                                "status": STATUS_SCHEMA,
                            },
                        }
                    },
                }
            ],
        },
    }


def crd_yaml() -> str:
    header = (
        "# Generated by `python -m event_router.operator.crd` from event_router/operator/crd.py;"
        " do not edit.\n"
    )
    return header + yaml.safe_dump(crd(), sort_keys=False, width=100)


def main(argv: list[str] | None = None) -> None:
    """Print the CRD; ``--write`` updates crds/ and manifests/crd.yaml in the repository."""
    args = sys.argv[1:] if argv is None else argv
    if args == ["--write"]:
        from pathlib import Path

        repo = Path(__file__).resolve().parents[2]
        text = crd_yaml()
        (repo / "crds" / f"{CRD_NAME}.yaml").write_text(text)
        (repo / "manifests" / "crd.yaml").write_text(text)
        return
    sys.stdout.write(crd_yaml())


if __name__ == "__main__":
    main()
