"""The RouterConfig CRD: generated from the pydantic spec models, committed in crds/, and
the same invalid specs rejected by pydantic here and by the API server in
tests/integration/test_operator.py (the cases live here, shared)."""

from __future__ import annotations

import copy
import ipaddress
import random
import re
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import yaml
from pydantic import ValidationError

from event_router.config import models
from event_router.operator import crd

REPO = Path(__file__).resolve().parents[2]


def base_spec() -> dict[str, Any]:
    return {
        "eventProvider": {
            "type": "vcenter",
            "name": "vc-01",
            "vcenter": {
                "address": "https://vc.example.com/sdk",
                "auth": {"type": "basic_auth", "secretRef": {"name": "vc-creds"}},
            },
        },
        "eventProcessor": {
            "type": "knative",
            "name": "broker",
            "knative": {
                "destination": {
                    "ref": {
                        "apiVersion": "eventing.knative.dev/v1",
                        "kind": "Broker",
                        "name": "default",
                    }
                }
            },
        },
    }


def _set(path: str, value: Any) -> Callable[[dict[str, Any]], None]:
    def mutate(spec: dict[str, Any]) -> None:
        *parents, last = path.split(".")
        node = spec
        for p in parents:
            node = node.setdefault(p, {})
        if value is _DELETE:
            del node[last]
        else:
            node[last] = value

    return mutate


_DELETE = object()

HOOK = {"bindAddress": "0.0.0.0:8080", "path": "/webhook"}
AWS = {
    "region": "us-west-1",
    "eventBus": "default",
    "ruleARN": "arn:aws:events:us-west-1:1234567890:rule/router",
    "auth": {"type": "aws_access_key", "secretRef": {"name": "aws"}},
}


def _knative(name: str) -> dict[str, Any]:
    return {
        "type": "knative",
        "name": name,
        "knative": {"destination": {"uri": {"scheme": "http", "host": "sink"}}},
    }


#: (id, mutation, what the API server's message must name)
INVALID: list[tuple[str, list[Callable[[dict[str, Any]], None]], str]] = [
    ("unknown-provider-type", [_set("eventProvider.type", "vsphere")], "spec.eventProvider.type"),
    ("provider-name-missing", [_set("eventProvider.name", _DELETE)], "spec.eventProvider.name"),
    (
        "vcenter-block-missing",
        [_set("eventProvider.vcenter", _DELETE)],
        "eventProvider.vcenter must be set",
    ),
    (
        "second-provider-block",
        [
            _set(
                "eventProvider.horizon",
                {
                    "address": "https://h.example.com",
                    "auth": {"type": "active_directory", "secretRef": {"name": "h"}},
                },
            )
        ],
        "eventProvider.horizon must be set",
    ),
    (
        "address-without-scheme",
        [_set("eventProvider.vcenter.address", "vc.example.com")],
        "spec.eventProvider.vcenter.address",
    ),
    (
        "inline-password",
        [
            _set(
                "eventProvider.vcenter.auth",
                {
                    "type": "basic_auth",
                    "basicAuth": {"username": "admin", "password": "s3cret"},
                },
            )
        ],
        "spec.eventProvider.vcenter.auth.basicAuth",
    ),
    (
        "vcenter-wrong-auth-type",
        [_set("eventProvider.vcenter.auth.type", "active_directory")],
        "spec.eventProvider.vcenter.auth.type",
    ),
    (
        "secret-name-invalid",
        [_set("eventProvider.vcenter.auth.secretRef.name", "Bad_Name")],
        "spec.eventProvider.vcenter.auth.secretRef.name",
    ),
    (
        "page-size-zero",
        [_set("eventProvider.vcenter.pageSize", 0)],
        "spec.eventProvider.vcenter.pageSize",
    ),
    (
        "batch-window-negative",
        [_set("eventProvider.vcenter.batchWindowSeconds", -0.1)],
        "spec.eventProvider.vcenter.batchWindowSeconds",
    ),
    (
        "page-size-string",
        [_set("eventProvider.vcenter.pageSize", "many")],
        "spec.eventProvider.vcenter.pageSize",
    ),
    (
        "insecure-not-bool",
        [_set("eventProvider.vcenter.insecureSSL", "yes")],
        "spec.eventProvider.vcenter.insecureSSL",
    ),
    (
        "uri-and-ref",
        [_set("eventProcessor.knative.destination.uri", {"scheme": "http", "host": "x"})],
        "exactly one of uri or ref",
    ),
    (
        "neither-uri-nor-ref",
        [_set("eventProcessor.knative.destination.ref", _DELETE)],
        "exactly one of uri or ref",
    ),
    (
        "uri-scheme-ftp",
        [
            _set("eventProcessor.knative.destination.ref", _DELETE),
            _set("eventProcessor.knative.destination.uri", {"scheme": "ftp", "host": "x"}),
        ],
        "spec.eventProcessor.knative.destination.uri.scheme",
    ),
    (
        "uri-port-out-of-range",
        [
            _set("eventProcessor.knative.destination.ref", _DELETE),
            _set(
                "eventProcessor.knative.destination.uri",
                {"scheme": "http", "host": "x", "port": 70000},
            ),
        ],
        "spec.eventProcessor.knative.destination.uri.port",
    ),
    (
        "encoding-unknown",
        [_set("eventProcessor.knative.encoding", "json")],
        "spec.eventProcessor.knative.encoding",
    ),
    (
        "processor-block-mismatch",
        [_set("eventProcessor.openfaas", {"address": "http://gateway:8080"})],
        "eventProcessor.openfaas must be set",
    ),
    (
        "webhook-path-root",
        [
            _set(
                "eventProvider",
                {"type": "webhook", "name": "hook", "webhook": {**HOOK, "path": "/"}},
            ),
        ],
        "webhook.path must not be /",
    ),
    (
        "webhook-bind-no-port",
        [
            _set(
                "eventProvider",
                {"type": "webhook", "name": "hook", "webhook": {**HOOK, "bindAddress": "8080"}},
            ),
        ],
        "spec.eventProvider.webhook.bindAddress",
    ),
    # several processors, filters, delivery (issue 15)
    (
        "both-processor-forms",
        [_set("eventProcessors", [_knative("a")])],
        "exactly one of eventProcessor or eventProcessors",
    ),
    ("replicas-zero", [_set("replicas", 0)], "spec.replicas"),
    ("replicas-four", [_set("replicas", 4)], "spec.replicas"),
    (
        "duplicate-processor-names",
        [_set("eventProcessor", _DELETE), _set("eventProcessors", [_knative("a"), _knative("a")])],
        "spec.eventProcessors[1]",
    ),
    (
        "filter-two-dialects",
        [_set("eventProcessor.filters", [{"exact": {"type": "a"}, "prefix": {"type": "b"}}])],
        "exactly one of exact, prefix, suffix, all, any, not",
    ),
    (
        "filter-two-attributes",
        [_set("eventProcessor.filters", [{"exact": {"type": "a", "source": "b"}}])],
        "spec.eventProcessor.filters[0].exact",
    ),
    (
        "filter-attribute-not-lowercase",
        [_set("eventProcessor.filters", [{"exact": {"Type": "a"}}])],
        "attribute names are lower-case letters and digits",
    ),
    (
        "filter-too-deep",
        [
            _set(
                "eventProcessor.filters",
                [{"all": [{"any": [{"not": {"exact": {"type": "a"}}}]}]}],
            )
        ],
        "spec.eventProcessor.filters[0].all[0].any[0].not",
    ),
    (
        "delivery-backoff-not-iso-8601",
        [_set("eventProcessor.delivery", {"backoffDelay": "1s"})],
        "spec.eventProcessor.delivery.backoffDelay",
    ),
    (
        "delivery-retry-negative",
        [_set("eventProcessor.delivery", {"retry": -1})],
        "spec.eventProcessor.delivery.retry",
    ),
    (
        "delivery-policy-unknown",
        [_set("eventProcessor.delivery", {"backoffPolicy": "fibonacci"})],
        "spec.eventProcessor.delivery.backoffPolicy",
    ),
    (
        "dead-letter-sink-empty",
        [_set("eventProcessor.delivery", {"deadLetterSink": {}})],
        "exactly one of uri or ref",
    ),
    (
        "pattern-not-an-object",
        [_set("eventProcessor.pattern", "prod-*")],
        "spec.eventProcessor.pattern",
    ),
    (
        "webhook-ack-unknown",
        [
            _set(
                "eventProvider",
                {"type": "webhook", "name": "hook", "webhook": {**HOOK, "ack": "never"}},
            ),
        ],
        "spec.eventProvider.webhook.ack",
    ),
    # values the router refuses, so the API server refuses them too (same patterns)
    (
        "webhook-bind-no-host",
        [
            _set(
                "eventProvider",
                {"type": "webhook", "name": "hook", "webhook": {**HOOK, "bindAddress": ":8080"}},
            ),
        ],
        "spec.eventProvider.webhook.bindAddress",
    ),
    (
        "webhook-bind-host-too-long",
        [
            _set(
                "eventProvider",
                {
                    "type": "webhook",
                    "name": "hook",
                    "webhook": {**HOOK, "bindAddress": ".".join(["a" * 63] * 4) + ":80"},
                },
            ),
        ],
        "the host must be at most 253 characters",
    ),
    (
        "metrics-bind-port-out-of-range",
        [
            _set(
                "metricsProvider",
                {"name": "m", "default": {"bindAddress": "0.0.0.0:99999"}},
            )
        ],
        "spec.metricsProvider.default.bindAddress",
    ),
    (
        "webhook-path-with-nbsp",
        [
            _set(
                "eventProvider",
                {"type": "webhook", "name": "hook", "webhook": {**HOOK, "path": "/a\u00a0b"}},
            ),
        ],
        "spec.eventProvider.webhook.path",
    ),
    (
        "eventbridge-region",
        [
            _set(
                "eventProcessor",
                {
                    "type": "aws_event_bridge",
                    "name": "eb",
                    "awsEventBridge": {**AWS, "region": "US West"},
                },
            ),
        ],
        "spec.eventProcessor.awsEventBridge.region",
    ),
    (
        "eventbridge-rule-arn-not-events",
        [
            _set(
                "eventProcessor",
                {
                    "type": "aws_event_bridge",
                    "name": "eb",
                    "awsEventBridge": {**AWS, "ruleARN": "arn:aws:sns:us-west-1:1:rule/x"},
                },
            ),
        ],
        "spec.eventProcessor.awsEventBridge.ruleARN",
    ),
    (
        "aws-key-without-secret",
        [
            _set(
                "eventProcessor",
                {
                    "type": "aws_event_bridge",
                    "name": "eb",
                    "awsEventBridge": {**AWS, "auth": {"type": "aws_access_key"}},
                },
            ),
        ],
        "secretRef is required when type is aws_access_key",
    ),
    (
        "aws-basic-auth",
        [
            _set(
                "eventProcessor",
                {
                    "type": "aws_event_bridge",
                    "name": "eb",
                    "awsEventBridge": {
                        **AWS,
                        "auth": {"type": "basic_auth", "secretRef": {"name": "a"}},
                    },
                },
            ),
        ],
        "spec.eventProcessor.awsEventBridge.auth.type",
    ),
    (
        "checkpoint-period-zero",
        [_set("checkpoint.periodSeconds", 0)],
        "spec.checkpoint.periodSeconds",
    ),
    (
        "checkpoint-max-age-negative",
        [_set("checkpoint.maxAgeSeconds", -1)],
        "spec.checkpoint.maxAgeSeconds",
    ),
    (
        "metrics-type-unknown",
        [
            _set(
                "metricsProvider",
                {"type": "prometheus", "name": "m", "default": {"bindAddress": "0.0.0.0:8082"}},
            )
        ],
        "spec.metricsProvider.type",
    ),
    (
        "typo-in-field-name",
        [_set("eventProvider.vcenter.adress", "https://vc.example.com/sdk")],
        "spec.eventProvider.vcenter.adress",
    ),
    (
        "horizon-poll-too-slow",
        [
            _set(
                "eventProvider",
                {
                    "type": "horizon",
                    "name": "h",
                    "horizon": {
                        "address": "https://h.example.com",
                        "pollIntervalSeconds": 1000,
                        "auth": {"type": "active_directory", "secretRef": {"name": "h"}},
                    },
                },
            ),
        ],
        "spec.eventProvider.horizon.pollIntervalSeconds",
    ),
    # root CAs by reference only: a file path of the operator's machine means nothing
    (
        "rootca-as-file-path",
        [_set("certificates", {"rootCAs": ["/etc/ssl/my-ca.pem"]})],
        "spec.certificates.rootCAs[0]",
    ),
    (
        "rootca-key-missing",
        [_set("certificates", {"rootCAs": [{"configMapRef": {"name": "corp-ca"}}]})],
        "spec.certificates.rootCAs[0].configMapRef.key",
    ),
    (
        "rootca-key-with-slash",
        [
            _set(
                "certificates",
                {"rootCAs": [{"configMapRef": {"name": "corp-ca", "key": "../ca.crt"}}]},
            )
        ],
        "spec.certificates.rootCAs[0].configMapRef.key",
    ),
]


def invalid_spec(mutations: list[Callable[[dict[str, Any]], None]]) -> dict[str, Any]:
    spec = copy.deepcopy(base_spec())
    for m in mutations:
        m(spec)
    return spec


def test_base_spec_is_valid() -> None:
    crd.RouterConfigSpec.model_validate(base_spec())


@pytest.mark.parametrize("case", INVALID, ids=[c[0] for c in INVALID])
def test_pydantic_rejects_what_the_api_server_rejects(case: Any) -> None:
    _, mutations, _ = case
    with pytest.raises(ValidationError):
        crd.RouterConfigSpec.model_validate(invalid_spec(mutations))


def test_at_least_twenty_invalid_cases() -> None:
    assert len(INVALID) >= 20


def test_committed_crd_is_the_generated_one() -> None:
    committed = (REPO / "crds" / "routerconfigs.event-router.vmware.com.yaml").read_text()
    assert committed == crd.crd_yaml(), "run: python -m event_router.operator.crd > crds/..."
    manifest = (REPO / "manifests" / "crd.yaml").read_text()
    assert yaml.safe_load(manifest) == crd.crd()


def _walk(node: Any, path: str = "") -> list[tuple[str, dict[str, Any]]]:
    out = []
    if isinstance(node, dict):
        out.append((path, node))
        for k, v in node.get("properties", {}).items():
            out.extend(_walk(v, f"{path}.{k}"))
        if "items" in node:
            out.extend(_walk(node["items"], f"{path}[]"))
    return out


def test_schema_is_structural() -> None:
    """Every node has a type, no $ref/anyOf/oneOf/additionalProperties:false and
    exclusiveMinimum is the OpenAPI v3.0 boolean form."""
    schema = crd.crd()["spec"]["versions"][0]["schema"]["openAPIV3Schema"]
    for path, node in _walk(schema):
        assert "type" in node, f"{path}: no type"
        for banned in ("$ref", "anyOf", "oneOf", "allOf", "const", "title", "$defs"):
            assert banned not in node, f"{path}: {banned}"
        assert node.get("additionalProperties", True) is not False, path
        if "exclusiveMinimum" in node:
            assert node["exclusiveMinimum"] is True and "minimum" in node, path


def test_no_inline_credentials_in_the_schema() -> None:
    spec = crd.spec_schema()
    text = yaml.safe_dump(spec)
    for field in ("password", "secretKey", "accessKey", "basicAuth", "awsAccessKeyAuth"):
        assert f"{field}:" not in text, field


def test_crd_names_columns_and_subresources() -> None:
    obj = crd.crd()
    names = obj["spec"]["names"]
    assert names["shortNames"] == ["rtc"] and "all" in names["categories"]
    version = obj["spec"]["versions"][0]
    assert version["subresources"] == {"status": {}}
    cols = [c["name"] for c in version["additionalPrinterColumns"]]
    assert cols == ["Provider", "Source", "Processor", "Sink", "Ready", "Reason", "Age", "Leader"]
    assert version["additionalPrinterColumns"][3]["jsonPath"] == ".status.sinkUri"


def test_cel_rules_mirror_pydantic_validators() -> None:
    """Each CEL rule in the schema exists for exactly the models with a validator."""
    schema = crd.spec_schema()
    rules = {
        path: [r["message"] for r in node.get("x-kubernetes-validations", [])]
        for path, node in _walk(schema)
        if node.get("x-kubernetes-validations")
    }
    assert rules[".eventProvider"] and rules[".eventProcessor"]
    assert rules[".eventProcessor.knative.destination"] == ["exactly one of uri or ref must be set"]
    assert rules[".eventProvider.webhook"] == ["webhook.path must not be / (use e.g. /webhook)"]
    host_rule = ["the host must be at most 253 characters"]
    assert rules[".eventProvider.webhook.bindAddress"] == host_rule
    assert rules[".metricsProvider.default.bindAddress"] == host_rule
    assert rules[".eventProcessor.awsEventBridge.auth"] == [
        "secretRef is required when type is aws_access_key"
    ]


def test_defaults_are_in_the_schema() -> None:
    vc = crd.spec_schema()["properties"]["eventProvider"]["properties"]["vcenter"]
    assert vc["properties"]["checkpoint"]["default"] is True
    assert vc["properties"]["pageSize"]["default"] == 100


def test_samples_are_valid_specs() -> None:
    samples = sorted((REPO / "samples").glob("*.yaml"))
    assert samples
    seen = 0
    for path in samples:
        for doc in yaml.safe_load_all(path.read_text()):
            if doc and doc.get("kind") == "RouterConfig":
                assert doc["apiVersion"] == f"{crd.GROUP}/{crd.VERSION}"
                crd.RouterConfigSpec.model_validate(doc["spec"])
                seen += 1
    assert seen >= 3


# --- the CRD accepts exactly what the router accepts ----------------------------------------
#
# (value, the router accepts it). Pydantic checks the CRD's patterns with Rust's regex here;
# the API server checks the same patterns with Go's RE2: they use only syntax the two (and
# Python's re, for the router's own checks) read alike, see event_router/config/models.py.

HOST_253 = ".".join(["a" * 63] * 3 + ["b" * 61])
BIND_ADDRESSES: list[tuple[str, bool]] = [
    ("0.0.0.0:8080", True),
    ("localhost:1", True),
    ("127.0.0.1:65535", True),
    ("router.svc.cluster.local.:08080", True),
    ("_svc-1.example:443", True),
    (f"{'a' * 63}.b:80", True),
    (f"{HOST_253}:80", True),
    ("[::1]:8082", True),
    ("[::]:80", True),
    ("[fe80::1%eth0]:9000", True),
    ("[::ffff:192.0.2.1]:80", True),
    ("[2001:db8:0:0:0:0:0:1]:443", True),
    (":8080", False),
    ("0.0.0.0:0", False),
    ("0.0.0.0:00000", False),
    ("host:99999", False),
    ("host:65536", False),
    ("host:000001", False),
    ("host:+80", False),
    ("host: 80", False),
    ("host:\u0668\u0660", False),  # Arabic-Indic digits: int() reads them, RE2 does not
    ("host:8080\n", False),
    ("host\n:8080", False),
    ("0.0.0.0", False),
    ("host:http", False),
    ("[::1]", False),
    ("::1:80", False),
    ("http://h:80", False),
    ("h:80/x", False),
    ("bad host:80", False),
    ("-host:80", False),
    ("a..b:80", False),
    (f"{'a' * 64}:80", False),
    (f"{HOST_253}c:80", False),  # 254 characters
    ("[zz]:80", False),
    ("[:::1]:80", False),
    ("[1:2:3:4:5:6:7:8:9]:80", False),
    ("[1:2:3:4::5:6:7:8]:80", False),
    ("[::1.2.3.04]:80", False),
    ("[fe80::1%]:80", False),
    ("[fe80::1%a b]:80", False),
    ("[::1]:80]:90", False),
]
# destination.uri.host: Go's net/url Host (the port may be in it), IPv6 in brackets
URI_HOSTS: list[tuple[str, bool]] = [
    ("gateway.corp.local", True),
    ("gateway.corp.local:8080", True),
    ("127.0.0.1", True),
    ("127.0.0.1:18082", True),
    ("[::1]", True),
    ("[::1]:8080", True),
    ("[fe80::1%eth0]:9000", True),
    (f"{HOST_253}", True),
    (f"{HOST_253}:80", True),
    ("sink.svc.cluster.local.:08080", True),
    ("localhost", True),
    ("_svc-1.example", True),
    ("[2001:db8::1]", True),
    ("[::ffff:192.0.2.1]", True),
    ("", False),
    ("::1", False),
    ("::1:8080", False),
    ("[::1", False),
    ("[::1]8080", False),
    ("[zz]:80", False),
    ("host:", False),
    ("host:0", False),
    ("host:65536", False),
    (":8080", False),
    ("h/x", False),
    ("user@h", False),
    ("bad host", False),
    (f"{HOST_253}c", False),  # 254 characters
    (f"{HOST_253}c:80", False),
    ("host:80\n", False),
]
REGIONS: list[tuple[str, bool]] = [
    ("us-west-1", True),
    ("eu-central-1", True),
    ("ap-southeast-2", True),
    ("us-gov-west-1", True),
    ("cn-north-1", True),
    ("il-central-1", True),
    ("eu-isoe-west-10", True),
    (f"us-{'a' * 57}-1", True),  # 62 characters
    ("US West", False),
    ("us-west", False),
    ("usa-west-1", False),
    ("us--west-1", False),
    ("us-west-1a", False),
    ("us-west-1\n", False),
    (" us-west-1", False),
    ("us-west-\u0661", False),  # an Arabic-Indic digit: Unicode \d, not RE2's
    ("", False),
    (f"us-{'a' * 60}-1", False),  # 65 characters
]
ARN_PREFIX = "arn:aws:events:us-east-1:1:rule/"
RULE_ARNS: list[tuple[str, bool]] = [
    ("arn:aws:events:us-west-1:123456789012:rule/router", True),
    ("arn:aws-cn:events:cn-north-1:123456789012:rule/bus/r_1", True),
    ("arn:aws-us-gov:events:us-gov-west-1:1:rule/a.b-c", True),
    ("arn:aws:events::123:rule/x", True),
    ("arn:aws:events:us-east-1::rule/x", True),
    ("arn:aws:events:us-east-1:1:rule/\u00fc", True),
    ("arn:a_b:events:x:1:rule/:", True),
    (ARN_PREFIX + "r" * (1600 - len(ARN_PREFIX)), True),  # 1600 characters
    ("vmware-event-router", False),
    ("arn:", False),
    ("arn:aws:sns:us-east-1:1:rule/x", False),
    ("arn:aws:events:us-east-1:1:rule/", False),
    ("arn:aws:events:us-east-1:1:rule/a b", False),
    ("arn:aws:events:us-east-1:1:rule/a\u00a0b", False),
    ("arn:aws:events:us-east-1:1:rule/x\n", False),
    ("arn:aws:events:us-east-1:12a:rule/x", False),
    ("arn:\u00e4ws:events:us-east-1:1:rule/x", False),
    ("arn:aws:events:us-east-1:\u0661:rule/x", False),
    ("arn:aws:events:us east-1:1:rule/x", False),
    ("ARN:aws:events:us-east-1:1:rule/x", False),
    (ARN_PREFIX + "r" * (1601 - len(ARN_PREFIX)), False),  # 1601 characters
]
WEBHOOK_PATHS: list[tuple[str, bool]] = [
    ("/webhook", True),
    ("/a/b-c_d.e", True),
    ("/hook/\u00fc", True),
    ("//", True),
    ("/%20", True),
    ("/a;b", True),
    ("/a:b@c", True),
    ("/" + "p" * 1023, True),  # 1024 characters
    ("/", False),
    ("webhook", False),
    ("", False),
    ("/a b", False),
    ("/a?x=1", False),
    ("/a#f", False),
    ("/a\tb", False),
    ("/a\u00a0b", False),
    ("/a\u3000b", False),
    ("/\u2028", False),
    ("/x\n", False),
    ("/" + "p" * 1024, False),  # 1025 characters
]

_IAM = {"type": "aws_iam_role"}
_EB = {"region": "us-west-1", "eventBus": "b", "ruleARN": AWS["ruleARN"]}
Corpus = list[tuple[str, bool]]
Data = Callable[[str], Any]
#: field -> (corpus, the router's model and data, the CRD's model and data)
AGREEMENT: dict[str, tuple[Corpus, Any, Data, Any, Data]] = {
    "knative.destination.uri.host": (
        URI_HOSTS,
        models.URIObject,
        lambda v: {"scheme": "http", "host": v},
        crd.URISpec,
        lambda v: {"scheme": "http", "host": v},
    ),
    "knative.destination.uri.host with port": (
        [(h, ok and not re.search(":[0-9]+$", h)) for h, ok in URI_HOSTS],
        models.URIObject,
        lambda v: {"scheme": "http", "host": v, "port": 80},
        crd.URISpec,
        lambda v: {"scheme": "http", "host": v, "port": 80},
    ),
    "webhook.bindAddress": (
        BIND_ADDRESSES,
        models.WebhookConfig,
        lambda v: {"bindAddress": v, "path": "/webhook"},
        crd.WebhookSpec,
        lambda v: {"bindAddress": v, "path": "/webhook"},
    ),
    "metricsProvider.default.bindAddress": (
        BIND_ADDRESSES,
        models.MetricsDefaultConfig,
        lambda v: {"bindAddress": v},
        crd.MetricsDefaultSpec,
        lambda v: {"bindAddress": v},
    ),
    "awsEventBridge.region": (
        REGIONS,
        models.AWSEventBridgeConfig,
        lambda v: {**_EB, "region": v, "auth": _IAM},
        crd.EventBridgeSpec,
        lambda v: {**_EB, "region": v, "auth": _IAM},
    ),
    "awsEventBridge.ruleARN": (
        RULE_ARNS,
        models.AWSEventBridgeConfig,
        lambda v: {**_EB, "ruleARN": v, "auth": _IAM},
        crd.EventBridgeSpec,
        lambda v: {**_EB, "ruleARN": v, "auth": _IAM},
    ),
    "webhook.path": (
        WEBHOOK_PATHS,
        models.WebhookConfig,
        lambda v: {"bindAddress": "0.0.0.0:8080", "path": v},
        crd.WebhookSpec,
        lambda v: {"bindAddress": "0.0.0.0:8080", "path": v},
    ),
}


def _accepts(model: Any, data: Any) -> bool:
    try:
        model.model_validate(data)
    except ValidationError:
        return False
    return True


@pytest.mark.parametrize("field", list(AGREEMENT))
def test_crd_accepts_exactly_what_the_router_accepts(field: str) -> None:
    corpus, router_model, router_data, crd_model, crd_data = AGREEMENT[field]
    good = sum(ok for _, ok in corpus)
    assert good >= 8 and len(corpus) - good >= 8, "at least 8 good and 8 bad values"
    for value, ok in corpus:
        assert _accepts(router_model, router_data(value)) is ok, f"router: {value!r}"
        assert _accepts(crd_model, crd_data(value)) is ok, f"CRD: {value!r}"


def test_space_class_is_what_python_calls_whitespace() -> None:
    """The router refuses whitespace with str.isspace(); the CRD spells it out."""
    klass = re.compile(f"[{models.SPACE_CLASS}]")
    for code in range(sys.maxunicode + 1):
        c = chr(code)
        assert bool(klass.fullmatch(c)) is c.isspace(), hex(code)


def test_bind_address_ipv6_is_what_ipaddress_reads() -> None:
    """The IPv6 part of the bind address pattern against the standard library, on random
    and systematically built candidates."""
    pattern = re.compile(models.IPV6_PATTERN)
    rng = random.Random(7)

    def ipaddress_reads(text: str) -> bool:
        try:
            ipaddress.IPv6Address(text)
        except ValueError:
            return False
        return True

    candidates = ["".join(rng.choices("0123456789abcdefABCDEF:.::", k=rng.randint(0, 18)))
                  for _ in range(20000)]  # fmt: skip
    for _ in range(20000):
        parts = rng.choices(["", "0", "1", "ffff", "12345", "g"], k=rng.randint(0, 9))
        text = ":".join(parts)
        if rng.random() < 0.4:
            octets = rng.choices(["0", "1", "255", "256", "01", "99"], k=rng.choice([3, 4, 4]))
            text += ":" + ".".join(octets)
        candidates.append(text)
    for _ in range(2000):
        ip = ipaddress.IPv6Address(rng.getrandbits(128) & rng.choice([0, 0xFFFF, 2**128 - 1]))
        candidates += [str(ip), ip.exploded, f"{str(ip).rstrip(':')}:1.2.3.4", f"::ffff:{ip}"]
    for text in candidates:
        assert bool(pattern.fullmatch(text)) is ipaddress_reads(text), repr(text)
