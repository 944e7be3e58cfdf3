"""The RouterConfig CRD: generated from the pydantic spec models, committed in crds/, and
the same invalid specs rejected by pydantic here and by the API server in
tests/integration/test_operator_crd.py (the cases live here, shared)."""

from __future__ import annotations

import copy
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import yaml
from pydantic import ValidationError

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
    assert cols == ["Provider", "Source", "Processor", "Sink", "Ready", "Reason", "Age"]
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
