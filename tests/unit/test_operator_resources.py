"""Pure builders of the operator: rendered router config, credentials, children, sinks,
Deployment readiness."""

from __future__ import annotations

import base64
from pathlib import Path
from typing import Any

import pytest
import yaml

from event_router.config.loader import ConfigError, load_config, parse_config
from event_router.operator import certificates, resources
from event_router.operator.crd import RouterConfigSpec
from event_router.operator.reconciler import Reconciler, merge_conditions
from event_router.operator.runtimes import deployment_state
from event_router.operator.secrets import CredentialsError, decode, secret_uses
from event_router.operator.sinks import (
    Resolver,
    SinkError,
    Target,
    addressable_url,
    service_url,
    uri_string,
)
from tests.unit.test_operator_crd import base_spec

OWNER = resources.Owner(name="vc-router", namespace="team-a", uid="1234-uid")
CREDS = {"vc-creds": {"username": "administrator@vsphere.local", "password": "p@ss w0rd!"}}


def spec(**over: Any) -> RouterConfigSpec:
    data = base_spec()
    data.update(over)
    return RouterConfigSpec.model_validate(data)


def render(
    runtime: str = "deployment", s: RouterConfigSpec | None = None, *, mount: bool = False
) -> dict[str, Any]:
    return resources.render_config(
        "vc-router",
        "team-a",
        s or spec(),
        CREDS,
        "http://broker-ingress.knative/team-a/default",
        runtime=runtime,
        mount_credentials=mount,
    )


def test_rendered_config_is_a_valid_router_config_with_inline_credentials() -> None:
    rendered = render()
    config = parse_config(rendered)
    auth = config.eventProvider.vcenter.auth  # type: ignore[union-attr]
    assert auth is not None and auth.basicAuth is not None
    assert auth.basicAuth.username == "administrator@vsphere.local"
    assert auth.basicAuth.password.get_secret_value() == "p@ss w0rd!"
    dest = config.eventProcessor.knative.destination  # type: ignore[union-attr]
    assert dest.uri_string() == "http://broker-ingress.knative/team-a/default"
    assert config.eventProvider.vcenter.checkpoint is True  # type: ignore[union-attr]
    assert config.metricsProvider is not None
    assert config.metricsProvider.default.bindAddress == "0.0.0.0:8082"


def test_inprocess_render_drops_the_metrics_server() -> None:
    s = spec(metricsProvider={"name": "m", "default": {"bindAddress": "127.0.0.1:9999"}})
    assert "metricsProvider" not in render("inprocess", s)
    kept = render("deployment", s)
    assert kept["metricsProvider"]["default"]["bindAddress"] == "0.0.0.0:9999"
    assert resources.metrics_port(kept) == 9999


def test_missing_secret_and_missing_key_name_secret_field_and_keys_never_values() -> None:
    with pytest.raises(CredentialsError) as e:
        resources.render_config(
            "x", "team-a", spec(), {"vc-creds": None}, "http://s", runtime="inprocess"
        )
    assert e.value.reason == "CredentialsMissing"
    assert "team-a/vc-creds" in e.value.message
    assert "eventProvider.vcenter.auth.secretRef.name" in e.value.message
    with pytest.raises(CredentialsError) as e2:
        resources.render_config(
            "x",
            "team-a",
            spec(),
            {"vc-creds": {"username": "admin", "token": "t0ps3cret"}},
            "http://s",
            runtime="inprocess",
        )
    assert e2.value.reason == "CredentialsInvalid"
    assert "password" in e2.value.message and "has: token, username" in e2.value.message
    assert "t0ps3cret" not in e2.value.message and "admin" not in e2.value.message


#: a Horizon provider whose credentials are in the Secret "ad"
HORIZON_PROVIDER: dict[str, Any] = {
    "type": "horizon",
    "name": "h",
    "horizon": {
        "address": "https://h.example.com",
        "auth": {"type": "active_directory", "secretRef": {"name": "ad"}},
    },
}


def test_active_directory_and_aws_credentials() -> None:
    data = base_spec()
    data["eventProvider"] = HORIZON_PROVIDER
    data["eventProcessor"] = {
        "type": "aws_event_bridge",
        "name": "eb",
        "awsEventBridge": {
            "region": "us-west-1",
            "eventBus": "default",
            "ruleARN": "arn:aws:events:us-west-1:123456789012:rule/r",
            "auth": {"type": "aws_iam_role"},
        },
    }
    s = RouterConfigSpec.model_validate(data)
    assert [u.secret for u in secret_uses(s.model_dump(exclude_none=True))] == ["ad"]
    rendered = resources.render_config(
        "h",
        "ns",
        s,
        {"ad": {"domain": "corp", "username": "u", "password": "p"}},
        None,
        runtime="inprocess",
    )
    config = parse_config(rendered)
    ad = config.eventProvider.horizon.auth.activeDirectoryAuth  # type: ignore[union-attr]
    assert ad is not None and ad.domain == "corp"
    assert config.eventProcessor.awsEventBridge.auth.type == "aws_iam_role"  # type: ignore[union-attr]


def test_decode_secret_data() -> None:
    raw = {"username": base64.b64encode(b"admin").decode(), "bad": "%%%"}
    assert decode(raw) == {"username": "admin"}


def test_config_hash_changes_with_spec_sink_and_secret_version_only() -> None:
    h = resources.config_hash(spec(), "http://a", {"vc-creds": "1"})
    assert h == resources.config_hash(spec(), "http://a", {"vc-creds": "1"})
    assert h != resources.config_hash(spec(), "http://b", {"vc-creds": "1"})
    assert h != resources.config_hash(spec(), "http://a", {"vc-creds": "2"})
    other = base_spec()
    other["eventProvider"]["vcenter"]["pageSize"] = 50
    assert h != resources.config_hash(
        RouterConfigSpec.model_validate(other), "http://a", {"vc-creds": "1"}
    )


def test_children_are_owned_labelled_and_least_privileged() -> None:
    rendered = render(mount=True)
    kids = resources.children(OWNER, rendered, "abc123", resources.RuntimeOptions())
    kinds = [k["kind"] for k in kids]
    assert kinds == ["ConfigMap", "ServiceAccount", "Role", "RoleBinding", "Deployment"]
    for k in kids:
        assert k["metadata"]["namespace"] == "team-a"
        ref = k["metadata"]["ownerReferences"][0]
        assert ref["uid"] == "1234-uid" and ref["kind"] == "RouterConfig" and ref["controller"]
        assert k["metadata"]["labels"]["event-router.vmware.com/routerconfig"] == "vc-router"
    config_map = kids[0]
    assert yaml.safe_load(config_map["data"]["config.yaml"]) == rendered
    assert "p@ss" not in yaml.safe_dump(kids)  # no credential in any child
    role = kids[2]
    assert role["rules"] == [
        {
            "apiGroups": [""],
            "resources": ["configmaps"],
            "resourceNames": ["vc-router-checkpoints"],
            "verbs": ["get", "update", "patch"],
        }
    ]
    cm = resources.checkpoint_configmap(OWNER)
    assert "ownerReferences" not in cm["metadata"], "checkpoints survive a delete (documented)"


def test_deployment_is_hardened_and_carries_the_config_hash() -> None:
    dep = resources.deployment(
        OWNER, render(mount=True), "abc123", resources.RuntimeOptions(image="img:1")
    )
    spec_ = dep["spec"]
    assert spec_["replicas"] == 1 and spec_["strategy"] == {"type": "Recreate"}
    tpl = spec_["template"]
    assert tpl["metadata"]["annotations"][resources.HASH_ANNOTATION] == "abc123"
    assert spec_["selector"]["matchLabels"].items() <= tpl["metadata"]["labels"].items()
    pod = tpl["spec"]
    assert pod["securityContext"]["runAsNonRoot"] is True
    (c,) = pod["containers"]
    assert c["image"] == "img:1"
    assert c["securityContext"]["readOnlyRootFilesystem"] is True
    assert c["securityContext"]["allowPrivilegeEscalation"] is False
    assert c["readinessProbe"]["httpGet"]["path"] == "/readyz"
    assert c["livenessProbe"]["httpGet"]["path"] == "/healthz"
    assert c["ports"][0] == {"name": "metrics", "containerPort": 8082, "protocol": "TCP"}
    assert c["resources"]["requests"] and c["resources"]["limits"]
    env = {e["name"]: e for e in c["env"]}
    assert env["EVENT_ROUTER_CHECKPOINT_CONFIGMAP"]["value"] == "vc-router-checkpoints"
    assert (
        env["EVENT_ROUTER_NAMESPACE"]["valueFrom"]["fieldRef"]["fieldPath"] == "metadata.namespace"
    )
    assert c["command"][:3] == ["event-router", "-config", "/etc/event-router/config.yaml"]
    assert "ReplaceMe" not in yaml.safe_dump(dep) and "p@ss" not in yaml.safe_dump(dep)


def test_webhook_gets_a_service_and_port() -> None:
    data = base_spec()
    data["eventProvider"] = {
        "type": "webhook",
        "name": "hook",
        "webhook": {"bindAddress": "0.0.0.0:8080", "path": "/webhook"},
    }
    s = RouterConfigSpec.model_validate(data)
    rendered = resources.render_config("h", "ns", s, {}, "http://x", runtime="deployment")
    kids = resources.children(OWNER, rendered, "h", resources.RuntimeOptions())
    svc = kids[-1]
    assert svc["kind"] == "Service" and svc["spec"]["ports"][0]["port"] == 8080
    dep = kids[-2]
    ports = dep["spec"]["template"]["spec"]["containers"][0]["ports"]
    assert {"name": "webhook", "containerPort": 8080, "protocol": "TCP"} in ports


def test_long_names_stay_within_limits() -> None:
    name = "a" * 200
    assert len(resources.router_name(name)) <= 46
    assert resources.router_name(name) != resources.router_name("a" * 199)
    assert len(resources.labels(name)["app.kubernetes.io/instance"]) <= 63


def test_sink_urls() -> None:
    t = Target("eventing.knative.dev/v1", "Broker", "default", "team-a")
    url = "http://broker-ingress.knative-eventing.svc.cluster.local/team-a/default"
    assert addressable_url({"status": {"address": {"url": url}}}, t) == url
    with pytest.raises(SinkError) as e:
        addressable_url(
            {
                "status": {
                    "conditions": [{"type": "Ready", "status": "False", "reason": "NoIngress"}]
                }
            },
            t,
        )
    assert e.value.reason == "SinkNotReady" and "Broker team-a/default" in e.value.message
    svc = Target("v1", "Service", "display", "team-a")
    assert service_url({"spec": {"ports": [{"port": 80}]}}, svc, "cluster.local") == (
        "http://display.team-a.svc.cluster.local"
    )
    assert service_url({"spec": {"ports": [{"port": 8080}]}}, svc, "k8s.local") == (
        "http://display.team-a.svc.k8s.local:8080"
    )
    assert uri_string({"scheme": "https", "host": "h", "port": 8443, "path": "events"}) == (
        "https://h:8443/events"
    )


def test_deployment_state() -> None:
    dep = resources.deployment(OWNER, render(), "h1", resources.RuntimeOptions())
    dep["metadata"]["generation"] = 2
    st = deployment_state(dep, "h1", "ns", "d")
    assert (st.deployed, st.ready, st.reason) == (True, False, "RouterStarting")
    dep["status"] = {"observedGeneration": 2, "updatedReplicas": 1, "availableReplicas": 1}
    assert deployment_state(dep, "h1", "ns", "d").ready
    assert not deployment_state(dep, "h2", "ns", "d").ready
    assert deployment_state(None, "h1", "ns", "d").reason == "DeploymentMissing"


def test_merge_conditions_keeps_transition_times() -> None:
    old = [{"type": "Ready", "status": "False", "reason": "X", "lastTransitionTime": "T0"}]
    same = merge_conditions(
        old, [{"type": "Ready", "status": "False", "reason": "Y", "message": ""}], 3
    )
    assert same[0]["lastTransitionTime"] == "T0" and same[0]["observedGeneration"] == 3
    flipped = merge_conditions(
        old, [{"type": "Ready", "status": "True", "reason": "Z", "message": ""}], 3
    )
    assert flipped[0]["lastTransitionTime"] != "T0"


# --- root CAs by reference (spec.certificates.rootCAs) -----------------------------------------

PEM = "-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----\n"
CA_SPEC = {
    "rootCAs": [
        {"configMapRef": {"name": "corp-ca", "key": "ca.crt"}},
        {"configMapRef": {"name": "sink-ca", "key": "bundle.pem"}},
    ]
}


def test_root_ca_references_resolve_or_name_configmap_key_and_field() -> None:
    s = spec(certificates=CA_SPEC)
    refs = certificates.ca_refs(s)
    assert [(r.configmap, r.key, r.field) for r in refs] == [
        ("corp-ca", "ca.crt", "certificates.rootCAs[0].configMapRef"),
        ("sink-ca", "bundle.pem", "certificates.rootCAs[1].configMapRef"),
    ]
    good = {"corp-ca": {"ca.crt": PEM}, "sink-ca": {"bundle.pem": PEM + PEM}}
    assert certificates.collect_pems("team-a", refs, good) == [PEM, PEM + PEM]

    with pytest.raises(certificates.CertificatesError) as e:
        certificates.collect_pems("team-a", refs, {**good, "sink-ca": None})
    assert e.value.reason == "CertificatesMissing"
    assert e.value.message == (
        "ConfigMap team-a/sink-ca (referenced by certificates.rootCAs[1].configMapRef) "
        "not found; create it with key bundle.pem holding the PEM CA bundle"
    )
    with pytest.raises(certificates.CertificatesError) as e:
        certificates.collect_pems("team-a", refs, {**good, "corp-ca": {"tls.crt": PEM}})
    assert e.value.reason == "CertificatesMissing"
    assert "team-a/corp-ca" in e.value.message and "lacks key ca.crt (has: tls.crt)" in (
        e.value.message
    )
    with pytest.raises(certificates.CertificatesError) as e:
        certificates.collect_pems("team-a", refs, {**good, "corp-ca": {"ca.crt": "hello"}})
    assert e.value.reason == "CertificatesInvalid" and "not a PEM certificate bundle" in (
        e.value.message
    )
    # binaryData counts too (a PEM stored as bytes)
    cm = {"binaryData": {"ca.crt": base64.b64encode(PEM.encode()).decode()}}
    assert certificates.configmap_text(cm) == {"ca.crt": PEM}
    assert certificates.configmap_text(None) is None


def test_deployment_mounts_root_cas_read_only_and_renders_their_paths() -> None:
    s = spec(certificates=CA_SPEC)
    refs = certificates.ca_refs(s)
    paths = certificates.deployment_paths(refs)
    assert paths == ["/etc/event-router-ca/ca-0.pem", "/etc/event-router-ca/ca-1.pem"]
    rendered = resources.render_config(
        "vc-router", "team-a", s, CREDS, "http://sink", runtime="deployment", root_cas=paths
    )
    assert rendered["certificates"] == {"rootCAs": paths}
    parse_config(rendered)  # the router's loader accepts it (files checked at router start)
    dep = resources.deployment(OWNER, rendered, "h", resources.RuntimeOptions(), refs)
    pod = dep["spec"]["template"]["spec"]
    (container,) = pod["containers"]
    mount = next(m for m in container["volumeMounts"] if m["name"] == "root-cas")
    assert mount == {"name": "root-cas", "mountPath": "/etc/event-router-ca", "readOnly": True}
    volume = next(v for v in pod["volumes"] if v["name"] == "root-cas")
    assert volume["projected"]["sources"] == [
        {"configMap": {"name": "corp-ca", "items": [{"key": "ca.crt", "path": "ca-0.pem"}]}},
        {"configMap": {"name": "sink-ca", "items": [{"key": "bundle.pem", "path": "ca-1.pem"}]}},
    ]
    # no certificates: no volume, no mount, nothing rendered
    plain = resources.deployment(OWNER, render(), "h", resources.RuntimeOptions())
    assert all(v["name"] != "root-cas" for v in plain["spec"]["template"]["spec"]["volumes"])
    assert "certificates" not in render()


def test_config_hash_follows_the_ca_configmap_version() -> None:
    s = spec(certificates=CA_SPEC)
    h1 = resources.config_hash(s, "http://sink", {"vc-creds": "1", "configmap/corp-ca": "7"})
    h2 = resources.config_hash(s, "http://sink", {"vc-creds": "1", "configmap/corp-ca": "8"})
    assert h1 != h2


def test_inprocess_ca_stage_is_private_idempotent_and_cleaned_up() -> None:
    stage = certificates.CAStage()
    key = ("team-a", "vc")
    try:
        first = stage.stage(key, [PEM])
        (path,) = first
        assert Path(path).read_text() == PEM
        assert Path(path).stat().st_mode & 0o777 == 0o600
        assert Path(path).parent.stat().st_mode & 0o777 == 0o700
        assert stage.stage(key, [PEM]) == first  # same content, same file
        second = stage.stage(key, [PEM + PEM])
        assert second != first and Path(first[0]).exists()  # the old router may still read it
        stage.prune(key, second)
        assert not Path(first[0]).exists() and Path(second[0]).exists()
        other = stage.stage(("team-b", "vc"), [PEM])
        stage.remove(key)
        assert not Path(second[0]).exists() and Path(other[0]).exists()
        base = stage.base
    finally:
        stage.close()
    assert not base.exists()


# --- bind addresses in the router pod ----------------------------------------------------------


def webhook_spec(bind: str, metrics: str | None = None) -> RouterConfigSpec:
    data = base_spec()
    data["eventProvider"] = {
        "type": "webhook",
        "name": "hook",
        "webhook": {"bindAddress": bind, "path": "/webhook"},
    }
    if metrics is not None:
        data["metricsProvider"] = {"name": "m", "default": {"bindAddress": metrics}}
    return RouterConfigSpec.model_validate(data)


@pytest.mark.parametrize("bind", ["127.0.0.1:9000", "localhost:9000", "[::1]:9000"])
def test_webhook_listens_on_all_interfaces_in_the_pod_with_its_port(bind: str) -> None:
    s = webhook_spec(bind)
    rendered = resources.render_config("h", "ns", s, {}, "http://x", runtime="deployment")
    assert rendered["eventProvider"]["webhook"]["bindAddress"] == "0.0.0.0:9000"
    assert rendered["metricsProvider"]["default"]["bindAddress"] == "0.0.0.0:8082"
    parse_config(rendered)
    kids = resources.children(OWNER, rendered, "h", resources.RuntimeOptions())
    svc = kids[-1]
    assert svc["kind"] == "Service"
    assert svc["spec"]["ports"] == [{"name": "webhook", "port": 9000, "targetPort": "webhook"}]
    ports = kids[-2]["spec"]["template"]["spec"]["containers"][0]["ports"]
    assert {"name": "webhook", "containerPort": 9000, "protocol": "TCP"} in ports
    # the spec itself is untouched, and the in-process runtime listens where it says
    assert s.eventProvider.webhook is not None and s.eventProvider.webhook.bindAddress == bind
    inproc = resources.render_config("h", "ns", s, {}, "http://x", runtime="inprocess")
    assert inproc["eventProvider"]["webhook"]["bindAddress"] == bind


@pytest.mark.parametrize(
    ("bind", "metrics", "got"),
    [
        # no metricsProvider: the pod's metrics port is 8082
        ("127.0.0.1:8082", None, "got '127.0.0.1:8082'; without spec.metricsProvider"),
        # different hosts, which the router alone allows; in the pod both are 0.0.0.0
        ("127.0.0.1:9100", "10.0.0.5:9100", "got '127.0.0.1:9100' and '10.0.0.5:9100'"),
    ],
)
def test_webhook_port_equal_to_the_metrics_port_names_both_fields(
    bind: str, metrics: str | None, got: str
) -> None:
    s = webhook_spec(bind, metrics)
    with pytest.raises(resources.RenderError) as e:
        resources.render_config("h", "ns", s, {}, "http://x", runtime="deployment")
    msg = str(e.value)
    assert msg.startswith(
        "spec.eventProvider.webhook.bindAddress and spec.metricsProvider.default.bindAddress: "
    )
    assert "both use port" in msg and got in msg
    # one process per router only in the pod: in-process it is fine
    resources.render_config("h", "ns", s, {}, "http://x", runtime="inprocess")


def test_a_bind_address_the_router_refuses_is_a_render_error_naming_the_field() -> None:
    """A RouterConfig stored before the CRD checked ports as the router does (etcd keeps it)
    and a spec that skipped validation both end here."""
    s = spec(metricsProvider={"name": "m", "default": {"bindAddress": "0.0.0.0:8083"}})
    assert s.metricsProvider is not None
    s.metricsProvider.default.bindAddress = "0.0.0.0:0"  # no validation on assignment
    with pytest.raises(resources.RenderError) as e:
        render("deployment", s)
    assert str(e.value) == (
        "spec.metricsProvider.default.bindAddress: port '0' is not a number from 1 to 65535 "
        "(got '0.0.0.0:0')"
    )
    assert isinstance(e.value, ValueError)
    hook = webhook_spec("127.0.0.1:9000")
    assert hook.eventProvider.webhook is not None
    hook.eventProvider.webhook.bindAddress = ":9000"
    with pytest.raises(resources.RenderError) as e:
        resources.render_config("h", "ns", hook, {}, "http://x", runtime="deployment")
    assert e.value.field == "spec.eventProvider.webhook.bindAddress"
    assert "the host is missing" in e.value.message


def test_horizon_secret_with_a_domain_user_name_fails_the_routers_validation() -> None:
    """The operator renders the Secret's username inline; the router's model refuses a
    DOMAIN\\user or UPN name there (the reconciler reports InvalidConfig)."""
    data = base_spec()
    data["eventProvider"] = HORIZON_PROVIDER
    s = RouterConfigSpec.model_validate(data)
    for username in ("CORP\\admin", "admin@corp.local"):
        secrets = {"ad": {"domain": "corp", "username": username, "password": "p"}}
        rendered = resources.render_config("h", "ns", s, secrets, "http://x", runtime="inprocess")
        with pytest.raises(ConfigError) as e:
            parse_config(rendered)
        assert any(
            line.startswith("eventProvider.horizon.auth.activeDirectoryAuth.username:")
            for line in e.value.errors
        ), e.value.errors


# --- the reconciler turns a render error into Ready=False InvalidConfig --------------------------


class FakeKube:
    def __init__(self, body: dict[str, Any]) -> None:
        self.body = body
        self.statuses: list[dict[str, Any]] = []
        self.events: list[tuple[str, str, str]] = []

    def get(self, api_version: str, kind: str, namespace: str, name: str) -> dict[str, Any] | None:
        return self.body if kind == "RouterConfig" else None

    def patch_status(self, namespace: str, name: str, status: dict[str, Any]) -> None:
        self.statuses.append(status)
        self.body["status"] = status

    def event(self, involved: dict[str, Any], *, type_: str, reason: str, message: str) -> None:
        self.events.append((type_, reason, message))


class FakeRuntime:
    name = "deployment"

    def __init__(self) -> None:
        self.applied = 0

    def ca_files(self, key: Any, refs: Any, pems: Any) -> list[str]:
        return []

    async def apply(self, *args: Any, **kwargs: Any) -> Any:
        self.applied += 1
        raise AssertionError("a config that cannot be rendered must not be applied")


async def reconcile_webhook(bind: str) -> tuple[FakeKube, FakeRuntime]:
    data = base_spec()
    data["eventProvider"] = {
        "type": "webhook",
        "name": "hook",
        "webhook": {"bindAddress": bind, "path": "/webhook"},
    }
    data["eventProcessor"]["knative"]["destination"] = {"uri": {"scheme": "http", "host": "s"}}
    body = {
        "apiVersion": "event-router.vmware.com/v1alpha1",
        "kind": "RouterConfig",
        "metadata": {"name": "h", "namespace": "ns", "uid": "u", "generation": 1},
        "spec": data,
    }
    kube, runtime = FakeKube(body), FakeRuntime()
    rec = Reconciler(kube, Resolver(None), runtime)  # type: ignore[arg-type]
    await rec.reconcile("ns", "h")
    return kube, runtime


def conditions(kube: FakeKube) -> dict[str, dict[str, Any]]:
    return {c["type"]: c for c in kube.statuses[-1]["conditions"]}


async def test_reconcile_reports_a_port_collision_as_invalid_config() -> None:
    kube, runtime = await reconcile_webhook("127.0.0.1:8082")
    cond = conditions(kube)
    assert (cond["Ready"]["status"], cond["Ready"]["reason"]) == ("False", "InvalidConfig")
    assert cond["Ready"]["message"].startswith(
        "spec.eventProvider.webhook.bindAddress and spec.metricsProvider.default.bindAddress: "
        "both use port 8082"
    )
    assert cond["CredentialsReady"]["status"] == "True"
    assert (cond["Deployed"]["status"], cond["Deployed"]["reason"]) == ("False", "Waiting")
    assert runtime.applied == 0
    assert ("Warning", "InvalidConfig", cond["Ready"]["message"]) in kube.events


async def test_reconcile_reports_any_render_failure_as_invalid_config(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    def broken(*args: Any, **kwargs: Any) -> dict[str, Any]:
        raise KeyError("eventProvider")

    monkeypatch.setattr(resources, "render_config", broken)
    kube, runtime = await reconcile_webhook("127.0.0.1:9000")
    cond = conditions(kube)
    assert (cond["Ready"]["status"], cond["Ready"]["reason"]) == ("False", "InvalidConfig")
    assert "could not be rendered (KeyError: 'eventProvider')" in cond["Ready"]["message"]
    assert runtime.applied == 0


def test_long_names_get_distinct_label_values_within_63_characters() -> None:
    a, b = "x" * 70 + "-a", "x" * 70 + "-b"
    la, lb = resources.label_value(a), resources.label_value(b)
    assert len(la) <= 63 and len(lb) <= 63 and la != lb
    assert resources.selector(a) != resources.selector(b)
    assert resources.label_value("short-name") == "short-name"


def test_the_pod_config_names_its_secrets_and_the_pod_mounts_only_the_needed_keys(
    tmp_path: Path,
) -> None:
    data = base_spec()
    data["eventProcessor"]["knative"]["auth"] = {"type": "basic_auth", "secretRef": {"name": "k"}}
    creds = {**CREDS, "k": {"username": "ku", "password": "kp", "extra": "not-needed"}}
    s = RouterConfigSpec.model_validate(data)
    pod_cfg = resources.render_config(
        "vc-router", "team-a", s, creds, "http://x", runtime="deployment", mount_credentials=True
    )
    assert pod_cfg["eventProvider"]["vcenter"]["auth"] == {
        "type": "basic_auth",
        "secretRef": {"name": "vc-creds"},
    }
    assert not resources.secret_values_present(pod_cfg)
    with pytest.raises(ValueError, match="credentials into a ConfigMap"):
        resources.config_configmap(OWNER, render())  # an inline render never goes there
    # still checked: a Secret that lacks a key fails the same way
    with pytest.raises(CredentialsError):
        resources.render_config(
            "vc-router", "team-a", s, {**creds, "k": {"username": "ku"}}, "http://x",
            runtime="deployment", mount_credentials=True,
        )  # fmt: skip
    dep = resources.deployment(OWNER, pod_cfg, "h", resources.RuntimeOptions())
    pod = dep["spec"]["template"]["spec"]
    (vol,) = [v for v in pod["volumes"] if v["name"] == "credentials"]
    assert vol["projected"]["sources"] == [
        {"secret": {"name": "k", "items": [{"key": "password", "path": "k/password"},
                                           {"key": "username", "path": "k/username"}]}},
        {"secret": {"name": "vc-creds", "items": [
            {"key": "password", "path": "vc-creds/password"},
            {"key": "username", "path": "vc-creds/username"}]}},
    ]  # fmt: skip
    (c,) = pod["containers"]
    mount = next(m for m in c["volumeMounts"] if m["name"] == "credentials")
    assert mount == {
        "name": "credentials",
        "mountPath": resources.CREDENTIALS_DIR,
        "readOnly": True,
    }
    env = {e["name"]: e.get("value") for e in c["env"]}
    assert env["EVENT_ROUTER_CREDENTIALS_DIR"] == resources.CREDENTIALS_DIR
    (cfg_vol,) = [v for v in pod["volumes"] if v["name"] == "config"]
    assert cfg_vol["configMap"]["name"] == "vc-router-router-config"
    # the router reads them back from such a directory: the same config as the inline one
    for name, keys in resources.credential_mounts(pod_cfg).items():
        (tmp_path / name).mkdir()
        for k in keys:
            (tmp_path / name / k).write_text(creds[name][k])
    cfg_file = tmp_path / "config.yaml"
    cfg_file.write_text(yaml.safe_dump(pod_cfg))
    from_files = load_config(cfg_file, credentials_dir=str(tmp_path))
    inline = resources.render_config(
        "vc-router", "team-a", s, creds, "http://x", runtime="deployment"
    )
    assert from_files == parse_config(inline)


def test_a_secret_ref_without_a_credentials_dir_names_the_field(tmp_path: Path) -> None:
    pod_cfg = render(mount=True)
    cfg_file = tmp_path / "config.yaml"
    cfg_file.write_text(yaml.safe_dump(pod_cfg))
    with pytest.raises(ConfigError) as e:
        load_config(cfg_file)
    assert e.value.errors[0].startswith(
        "eventProvider.vcenter.auth.secretRef: credentials by reference need "
        "EVENT_ROUTER_CREDENTIALS_DIR"
    )
    with pytest.raises(ConfigError) as e:
        load_config(cfg_file, credentials_dir=str(tmp_path))
    assert e.value.errors[0].startswith("eventProvider.vcenter.auth.secretRef.name: ")
    assert "vc-creds/username not found" in e.value.errors[0]


def _container_env(dep: dict[str, Any]) -> dict[str, Any]:
    return {e["name"]: e for e in dep["spec"]["template"]["spec"]["containers"][0]["env"]}


def test_two_vcenter_replicas_elect_a_leader_over_their_own_lease() -> None:
    rendered = render(mount=True)
    kids = resources.children(OWNER, rendered, "h", resources.RuntimeOptions(), replicas=2)
    kinds = [k["kind"] for k in kids]
    assert kinds == [
        "ConfigMap",
        "ServiceAccount",
        "Role",
        "RoleBinding",
        "Deployment",
        "PodDisruptionBudget",
    ]
    role, dep, pdb = kids[2], kids[4], kids[5]
    # the router may get and update its own Lease, by name only (never create or list)
    assert role["rules"][1] == {
        "apiGroups": ["coordination.k8s.io"],
        "resources": ["leases"],
        "resourceNames": ["vc-router-router"],
        "verbs": ["get", "update"],
    }
    spec_ = dep["spec"]
    assert spec_["replicas"] == 2
    # a new pod (a standby) is up before an old one goes; the Lease keeps one leader
    assert spec_["strategy"] == {
        "type": "RollingUpdate",
        "rollingUpdate": {"maxSurge": 1, "maxUnavailable": 0},
    }
    env = _container_env(dep)
    assert env["EVENT_ROUTER_LEASE"]["value"] == "vc-router-router"
    assert env["EVENT_ROUTER_POD_NAME"]["valueFrom"]["fieldRef"]["fieldPath"] == "metadata.name"
    (spread,) = spec_["template"]["spec"]["topologySpreadConstraints"]
    assert spread["topologyKey"] == "kubernetes.io/hostname"
    assert spread["whenUnsatisfiable"] == "ScheduleAnyway"  # a one-node cluster runs both
    assert spread["labelSelector"]["matchLabels"] == spec_["selector"]["matchLabels"]
    assert pdb["spec"] == {"maxUnavailable": 1, "selector": spec_["selector"]}
    lease = resources.lease(OWNER)
    assert lease["metadata"]["name"] == "vc-router-router"
    assert lease["metadata"]["ownerReferences"][0]["uid"] == "1234-uid"


def test_webhook_replicas_all_serve_without_a_lease() -> None:
    data = base_spec()
    data["eventProvider"] = {
        "type": "webhook",
        "name": "hook",
        "webhook": {"bindAddress": "0.0.0.0:8080", "path": "/webhook"},
    }
    data["replicas"] = 3
    s = RouterConfigSpec.model_validate(data)
    rendered = resources.render_config("h", "ns", s, {}, "http://x", runtime="deployment")
    assert "replicas" not in rendered  # the operator's, not the router's config
    kids = resources.children(OWNER, rendered, "h", resources.RuntimeOptions(), replicas=3)
    role = next(k for k in kids if k["kind"] == "Role")
    dep = next(k for k in kids if k["kind"] == "Deployment")
    assert [r["resources"] for r in role["rules"]] == [["configmaps"]]
    assert dep["spec"]["replicas"] == 3
    assert "EVENT_ROUTER_LEASE" not in _container_env(dep)
    assert {k["kind"] for k in kids} >= {"Service", "PodDisruptionBudget"}


def test_one_replica_keeps_recreate_and_no_lease_and_scaling_does_not_roll() -> None:
    dep = resources.deployment(OWNER, render(mount=True), "h", resources.RuntimeOptions())
    assert dep["spec"]["strategy"] == {"type": "Recreate"}
    assert "EVENT_ROUTER_LEASE" not in _container_env(dep)
    assert "topologySpreadConstraints" not in dep["spec"]["template"]["spec"]
    kids = resources.children(OWNER, render(mount=True), "h", resources.RuntimeOptions())
    kinds = [k["kind"] for k in kids]
    assert "PodDisruptionBudget" not in kinds
    assert resources.config_hash(spec(replicas=2), None, {}) == resources.config_hash(
        spec(), None, {}
    )


def test_deployment_state_names_the_leader_or_says_none_leads() -> None:
    from event_router.operator.runtimes import lease_holder

    dep = resources.deployment(OWNER, render(), "h1", resources.RuntimeOptions(), replicas=2)
    dep["metadata"]["generation"] = 1
    dep["status"] = {"observedGeneration": 1, "updatedReplicas": 2, "availableReplicas": 2}
    holder = lease_holder({"spec": {"holderIdentity": "vc-router-router-7d9f-abcde_1a2b3c4d"}})
    assert holder == "vc-router-router-7d9f-abcde"
    st = deployment_state(dep, "h1", "ns", "d", leader=holder)
    assert st.ready and st.leader == holder and st.available == 2
    assert "2/2 router pods available" in st.message and holder in st.message
    nobody = deployment_state(dep, "h1", "ns", "d", leader=lease_holder({"spec": {}}))
    assert (nobody.ready, nobody.reason) == (False, "NoLeader")
