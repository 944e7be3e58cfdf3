"""Pydantic models of the RouterConfig file, field names exactly as the original router's.

The same models read the original's file (fields at the top level) and the shape of the
custom resource (fields under ``spec:``); see :func:`event_router.config.loader.load_config`.
Secrets are ``SecretStr`` so they never appear in ``repr``/logs.
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, SecretStr

API_VERSION = "event-router.vmware.com/v1alpha1"
KIND = "RouterConfig"


class Strict(BaseModel):
    """Base: unknown fields are rejected."""

    model_config = ConfigDict(extra="forbid", populate_by_name=True)


# --- auth -------------------------------------------------------------------------------


class BasicAuth(Strict):
    username: str = Field(min_length=1)
    password: SecretStr


class AWSAccessKeyAuth(Strict):
    accessKey: str = Field(min_length=1)
    secretKey: SecretStr


class ActiveDirectoryAuth(Strict):
    domain: str = Field(min_length=1)
    username: str = Field(min_length=1)
    password: SecretStr


AuthType = Literal["basic_auth", "aws_access_key", "aws_iam_role", "active_directory"]


class Auth(Strict):
    type: AuthType
    basicAuth: BasicAuth | None = None
    awsAccessKeyAuth: AWSAccessKeyAuth | None = None
    activeDirectoryAuth: ActiveDirectoryAuth | None = None


# --- providers --------------------------------------------------------------------------

TypeStyle = Literal["router", "sources"]


class VCenterConfig(Strict):
    address: str = Field(min_length=1)
    insecureSSL: bool = False
    checkpoint: bool = False
    checkpointDir: str = "./checkpoints"
    auth: Auth
    # extensions of ours
    pageSize: int = Field(default=100, ge=1, le=1000)
    typeStyle: TypeStyle = "router"


class HorizonConfig(Strict):
    address: str = Field(min_length=1)
    insecureSSL: bool = False
    checkpoint: bool = False
    checkpointDir: str = "./checkpoints"
    auth: Auth
    # extensions of ours
    pollIntervalSeconds: float = Field(default=1.0, gt=0, le=300)
    typeStyle: TypeStyle = "router"


class WebhookConfig(Strict):
    bindAddress: str
    path: str
    auth: Auth | None = None
    maxBodyBytes: int = Field(default=1_048_576, ge=1024, le=64 * 1_048_576)


ProviderType = Literal["vcenter", "horizon", "webhook", "vcsim"]


class EventProvider(Strict):
    type: ProviderType
    name: str = Field(min_length=1)
    vcenter: VCenterConfig | None = None
    horizon: HorizonConfig | None = None
    webhook: WebhookConfig | None = None
    vcsim: VCenterConfig | None = None


# --- processors -------------------------------------------------------------------------


class URIObject(Strict):
    scheme: Literal["http", "https"]
    host: str = Field(min_length=1)
    port: int | None = Field(default=None, ge=1, le=65535)
    path: str | None = None


class KReference(Strict):
    apiVersion: str = Field(min_length=1)
    kind: str = Field(min_length=1)
    name: str = Field(min_length=1)
    namespace: str | None = None


class Destination(Strict):
    uri: URIObject | str | None = None
    ref: KReference | None = None


class KnativeConfig(Strict):
    destination: Destination
    encoding: Literal["binary", "structured"] = "binary"
    insecureSSL: bool = False
    auth: Auth | None = None


class OpenFaaSConfig(Strict):
    address: str = Field(min_length=1)
    async_: bool = Field(default=False, alias="async")
    auth: Auth | None = None
    # extension of ours
    refreshIntervalSeconds: float = Field(default=10.0, gt=0, le=3600)


class AWSEventBridgeConfig(Strict):
    region: str = Field(min_length=1)
    eventBus: str = Field(min_length=1)
    ruleARN: str = Field(min_length=1)
    auth: Auth
    # extensions of ours
    endpoint: str | None = None
    ruleRefreshSeconds: float = Field(default=300.0, gt=0)


ProcessorType = Literal["knative", "openfaas", "aws_event_bridge"]


class EventProcessor(Strict):
    type: ProcessorType
    name: str = Field(min_length=1)
    knative: KnativeConfig | None = None
    openfaas: OpenFaaSConfig | None = None
    awsEventBridge: AWSEventBridgeConfig | None = None


# --- metrics, certificates, checkpoint tuning -------------------------------------------


class MetricsDefaultConfig(Strict):
    bindAddress: str
    auth: Auth | None = None


class MetricsProvider(Strict):
    type: Literal["default"] = "default"
    name: str = Field(min_length=1)
    default: MetricsDefaultConfig


class Certificates(Strict):
    rootCAs: list[str] = Field(default_factory=list)


class CheckpointTuning(Strict):
    periodSeconds: float = Field(default=5.0, gt=0, le=3600)
    maxAgeSeconds: float = Field(default=3600.0, ge=0)


class Metadata(Strict):
    name: str = Field(min_length=1)
    labels: dict[str, str] | None = None


class RouterConfig(Strict):
    apiVersion: Literal["event-router.vmware.com/v1alpha1"]
    kind: Literal["RouterConfig"]
    metadata: Metadata
    eventProvider: EventProvider
    eventProcessor: EventProcessor
    metricsProvider: MetricsProvider | None = None
    certificates: Certificates | None = None
    checkpoint: CheckpointTuning = Field(default_factory=CheckpointTuning)
