"""A Secret is usable by a RouterConfig only with the Secret's consent (the annotation
``event-router.vmware.com/routerconfigs``): the pure rule and the reconciler's status."""

from __future__ import annotations

import base64
from typing import Any

import pytest

from event_router.operator.reconciler import Reconciler
from event_router.operator.secrets import CONSENT_ANNOTATION, SecretUse, consent_error, consents
from event_router.operator.sinks import Resolver
from tests.unit.test_operator_crd import base_spec
from tests.unit.test_operator_resources import FakeKube


@pytest.mark.parametrize(
    ("value", "name", "ok"),
    [
        (None, "a", False),
        ("", "a", False),
        ("*", "a", True),
        ("a", "a", True),
        ("b,a", "a", True),
        (" b , a ", "a", True),
        ("b, *", "a", True),
        ("ab", "a", False),
        ("a*", "a", False),
        ("A", "a", False),
        ("b,c", "a", False),
    ],
)
def test_consent_rule(value: str | None, name: str, ok: bool) -> None:
    annotations = {} if value is None else {CONSENT_ANNOTATION: value}
    assert consents(annotations, name) is ok


def test_other_annotations_and_labels_do_not_consent() -> None:
    assert not consents({"event-router.vmware.com/routerconfig": "*"}, "a")
    assert not consents(None, "a")


def test_the_refusal_names_the_secret_the_field_and_the_exact_fix() -> None:
    use = SecretUse("eventProcessor.knative.auth", "basic_auth", "db")
    e = consent_error(use, "ns", "evil", None)
    assert e.reason == "CredentialsNotPermitted"
    assert "Secret ns/db (referenced by eventProcessor.knative.auth.secretRef.name)" in e.message
    assert f"has no annotation {CONSENT_ANNOTATION}" in e.message
    assert f"kubectl annotate secret db -n ns {CONSENT_ANNOTATION}=evil" in e.message
    e = consent_error(use, "ns", "evil", {CONSENT_ANNOTATION: "good," + "x" * 500})
    assert "does not list evil" in e.message and len(e.message) < 600


class SecretKube(FakeKube):
    def __init__(self, body: dict[str, Any], secrets: dict[str, dict[str, Any]]) -> None:
        super().__init__(body)
        self.secrets = secrets

    def get(self, api_version: str, kind: str, namespace: str, name: str) -> dict[str, Any] | None:
        if kind == "Secret":
            return self.secrets.get(name)
        return super().get(api_version, kind, namespace, name)


class RecordingRuntime:
    name = "inprocess"

    def __init__(self) -> None:
        self.rendered: list[dict[str, Any]] = []

    def ca_files(self, key: Any, refs: Any, pems: Any) -> list[str]:
        return []

    async def apply(self, owner: Any, rendered: dict[str, Any], *args: Any, **kwargs: Any) -> Any:
        from event_router.operator.runtimes import RuntimeState

        self.rendered.append(rendered)
        return RuntimeState(True, True, "RouterRunning", "running")


def secret(name: str, annotations: dict[str, str] | None) -> dict[str, Any]:
    enc = {
        k: base64.b64encode(v.encode()).decode()
        for k, v in {"username": "dbuser", "password": "db-password-123"}.items()
    }
    meta: dict[str, Any] = {"name": name, "resourceVersion": "7"}
    if annotations is not None:
        meta["annotations"] = annotations
    return {"metadata": meta, "data": enc}


async def reconcile(annotations: dict[str, str] | None) -> tuple[SecretKube, RecordingRuntime]:
    spec = base_spec()
    spec["eventProcessor"]["knative"]["destination"] = {
        "uri": {"scheme": "https", "host": "attacker.example"}
    }
    spec["eventProcessor"]["knative"]["auth"] = {"type": "basic_auth", "secretRef": {"name": "db"}}
    body = {
        "apiVersion": "event-router.vmware.com/v1alpha1",
        "kind": "RouterConfig",
        "metadata": {"name": "evil", "namespace": "ns", "uid": "u", "generation": 1},
        "spec": spec,
    }
    secrets = {"db": secret("db", annotations)}
    # the vcenter provider's own Secret consents: only the knative one is at stake
    for s in base_spec_secret_names(spec):
        if s != "db":
            secrets[s] = secret(s, {CONSENT_ANNOTATION: "*"})
    kube, runtime = SecretKube(body, secrets), RecordingRuntime()
    rec = Reconciler(kube, Resolver(None), runtime)  # type: ignore[arg-type]
    await rec.reconcile("ns", "evil")
    return kube, runtime


def base_spec_secret_names(spec: dict[str, Any]) -> list[str]:
    from event_router.operator.crd import RouterConfigSpec
    from event_router.operator.resources import referenced_secrets

    return referenced_secrets(RouterConfigSpec.model_validate(spec))


@pytest.mark.parametrize("annotations", [None, {}, {CONSENT_ANNOTATION: "good-one"}])
async def test_a_secret_without_consent_is_never_rendered(
    annotations: dict[str, str] | None,
) -> None:
    kube, runtime = await reconcile(annotations)
    cond = {c["type"]: c for c in kube.statuses[-1]["conditions"]}
    assert (cond["CredentialsReady"]["status"], cond["CredentialsReady"]["reason"]) == (
        "False",
        "CredentialsNotPermitted",
    )
    assert cond["Ready"]["reason"] == "CredentialsNotPermitted"
    assert "Secret ns/db (referenced by eventProcessor.knative.auth" in cond["Ready"]["message"]
    assert runtime.rendered == []
    assert "db-password-123" not in repr(kube.statuses) + repr(kube.events)


@pytest.mark.parametrize("value", ["*", "evil", "other, evil"])
async def test_a_consenting_secret_is_used(value: str) -> None:
    kube, runtime = await reconcile({CONSENT_ANNOTATION: value})
    cond = {c["type"]: c for c in kube.statuses[-1]["conditions"]}
    assert cond["CredentialsReady"]["status"] == "True", cond
    (rendered,) = runtime.rendered
    basic = rendered["eventProcessor"]["knative"]["auth"]["basicAuth"]
    assert basic == {"username": "dbuser", "password": "db-password-123"}


def _auth(name: str, type_: str = "basic_auth") -> dict[str, Any]:
    return {"type": type_, "secretRef": {"name": name}}


def _uri() -> dict[str, Any]:
    return {"destination": {"uri": {"scheme": "https", "host": "attacker.example"}}}


#: every place a secretRef can be: (field, spec with that auth naming the Secret "db")
PLACES: list[tuple[str, dict[str, Any]]] = [
    (
        "eventProvider.vcenter.auth",
        {
            "eventProvider": {"type": "vcenter", "name": "v", "vcenter": {
                "address": "https://attacker.example/sdk", "auth": _auth("db")}},
            "eventProcessor": {"type": "knative", "name": "k", "knative": _uri()},
        },
    ),
    (
        "eventProvider.horizon.auth",
        {
            "eventProvider": {"type": "horizon", "name": "h", "horizon": {
                "address": "https://attacker.example", "auth": _auth("db", "active_directory")}},
            "eventProcessor": {"type": "knative", "name": "k", "knative": _uri()},
        },
    ),
    (
        "eventProvider.webhook.auth",
        {
            "eventProvider": {"type": "webhook", "name": "w", "webhook": {
                "bindAddress": "0.0.0.0:8080", "path": "/hook", "auth": _auth("db")}},
            "eventProcessor": {"type": "knative", "name": "k", "knative": _uri()},
        },
    ),
    (
        "eventProcessor.openfaas.auth",
        {
            "eventProvider": {"type": "webhook", "name": "w", "webhook": {
                "bindAddress": "0.0.0.0:8080", "path": "/hook"}},
            "eventProcessor": {"type": "openfaas", "name": "o", "openfaas": {
                "address": "https://attacker.example", "auth": _auth("db")}},
        },
    ),
    (
        "eventProcessor.awsEventBridge.auth",
        {
            "eventProvider": {"type": "webhook", "name": "w", "webhook": {
                "bindAddress": "0.0.0.0:8080", "path": "/hook"}},
            "eventProcessor": {"type": "aws_event_bridge", "name": "a", "awsEventBridge": {
                "region": "us-west-1", "eventBus": "b",
                "ruleARN": "arn:aws:events:us-west-1:123456789012:rule/r",
                "endpoint": "https://attacker.example",
                "auth": _auth("db", "aws_access_key")}},
        },
    ),
    (
        "metricsProvider.default.auth",
        {
            "eventProvider": {"type": "webhook", "name": "w", "webhook": {
                "bindAddress": "0.0.0.0:8080", "path": "/hook"}},
            "eventProcessor": {"type": "knative", "name": "k", "knative": _uri()},
            "metricsProvider": {"name": "m", "default": {
                "bindAddress": "0.0.0.0:9090", "auth": _auth("db")}},
        },
    ),
]  # fmt: skip


@pytest.mark.parametrize(("field", "spec"), PLACES, ids=[p[0] for p in PLACES])
async def test_every_secret_ref_needs_consent(field: str, spec: dict[str, Any]) -> None:
    body = {
        "apiVersion": "event-router.vmware.com/v1alpha1",
        "kind": "RouterConfig",
        "metadata": {"name": "evil", "namespace": "ns", "uid": "u", "generation": 1},
        "spec": spec,
    }
    data = {k: "x-value-123" for k in ("domain", "username", "password", "accessKey", "secretKey")}
    enc = {k: base64.b64encode(v.encode()).decode() for k, v in data.items()}
    kube = SecretKube(
        body, {"db": {"metadata": {"name": "db", "resourceVersion": "1"}, "data": enc}}
    )
    runtime = RecordingRuntime()
    rec = Reconciler(kube, Resolver(None), runtime)  # type: ignore[arg-type]
    await rec.reconcile("ns", "evil")
    cond = {c["type"]: c for c in kube.statuses[-1]["conditions"]}
    assert cond["CredentialsReady"]["reason"] == "CredentialsNotPermitted", cond
    assert f"(referenced by {field}.secretRef.name)" in cond["CredentialsReady"]["message"]
    assert runtime.rendered == []
