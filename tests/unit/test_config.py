# ruff: noqa: E501  (the table of malformed configs reads best one case per line)
"""RouterConfig models and loader: the original's examples parse, malformed configs fail
with one line naming the field path, the value and what is allowed; secrets never shown."""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any

import jsonschema
import pytest
import yaml

from event_router.config import ConfigError, load_config, parse_config
from event_router.config.models import RouterConfig, parse_bind_address
from event_router.config.schema import SCHEMA_PATH, build_schema, render

ROOT = Path(__file__).resolve().parents[2]
EXAMPLES = sorted((ROOT / "examples").glob("*.yaml"))
SECRETS = ("ReplaceMe", "webhook-pass", "ZYXWVUTSRQPO", "hunter2-secret")


def example(name: str) -> dict[str, Any]:
    data: dict[str, Any] = yaml.safe_load((ROOT / "examples" / name).read_text())
    return data


# --- examples ---------------------------------------------------------------------------


def test_examples_exist() -> None:
    names = {p.name for p in EXAMPLES}
    # every configuration the original README documents, as files
    assert {
        "vcenter-knative.yaml",
        "vcenter-openfaas.yaml",
        "vcenter-aws-eventbridge.yaml",
        "vcenter-aws-iam-role.yaml",
        "horizon-knative.yaml",
        "webhook-knative.yaml",
        "vcsim-knative-uri.yaml",
    } <= names


@pytest.mark.parametrize("path", EXAMPLES, ids=lambda p: p.name)
def test_every_example_parses(path: Path) -> None:
    config = load_config(path)
    assert isinstance(config, RouterConfig)
    assert config.apiVersion == "event-router.vmware.com/v1alpha1"
    assert config.eventProvider.settings is not None
    assert config.eventProcessor.settings is not None


def test_readme_overview_example_values() -> None:
    config = load_config(ROOT / "examples" / "vcenter-knative.yaml")
    vc = config.eventProvider.vcenter
    assert vc is not None and vc.checkpoint is True and vc.checkpointDir == "./checkpoints"
    assert vc.auth.basicAuth is not None
    assert vc.auth.basicAuth.password.get_secret_value() == "ReplaceMe"
    assert "ReplaceMe" not in repr(config)  # SecretStr hides it
    kn = config.eventProcessor.knative
    assert kn is not None and kn.encoding == "binary"
    assert kn.destination.ref is not None and kn.destination.ref.kind == "Broker"
    assert kn.destination.uri_string() is None
    assert config.metricsProvider is not None
    assert config.metricsProvider.default.bindAddress == "0.0.0.0:8082"
    assert config.metadata.labels == {"key": "value"}
    # defaults of our extensions
    assert config.checkpoint.periodSeconds == 5.0 and config.checkpoint.maxAgeSeconds == 3600


def test_openfaas_async_alias_and_iam_role() -> None:
    data = example("vcenter-openfaas.yaml")
    data["eventProcessor"]["openfaas"]["async"] = True
    config = parse_config(data)
    assert config.eventProcessor.openfaas is not None
    assert config.eventProcessor.openfaas.async_ is True
    assert config.model_dump(by_alias=True)["eventProcessor"]["openfaas"]["async"] is True
    iam = load_config(ROOT / "examples" / "vcenter-aws-iam-role.yaml")
    assert iam.eventProcessor.awsEventBridge is not None
    assert iam.eventProcessor.awsEventBridge.auth.type == "aws_iam_role"


@pytest.mark.parametrize(
    ("uri", "url"),
    [
        ({"scheme": "http", "host": "gateway.corp.local"}, "http://gateway.corp.local"),
        ({"scheme": "https", "host": "h", "port": 8443, "path": "/in"}, "https://h:8443/in"),
        ({"scheme": "http", "host": "[::1]", "port": 80}, "http://[::1]:80"),
        # the original's forms: Go's net/url Host carries the port
        ({"scheme": "http", "host": "gateway.corp.local:8080"}, "http://gateway.corp.local:8080"),
        ({"scheme": "http", "host": "127.0.0.1:18082", "path": "x"}, "http://127.0.0.1:18082/x"),
        ({"scheme": "https", "host": "[::1]:8443", "path": "/in"}, "https://[::1]:8443/in"),
        ({"scheme": "http", "host": "[fe80::1%eth0]"}, "http://[fe80::1%eth0]"),
        # the path escaped as Go's url.URL.EscapedPath does
        ({"scheme": "http", "host": "h", "path": "/a b/%/?;=@"}, "http://h/a%20b/%25/%3F;=@"),
        ("http://127.0.0.1:9000/events?x=1", "http://127.0.0.1:9000/events?x=1"),
    ],
)
def test_knative_uri_object_and_string(uri: Any, url: str) -> None:
    data = example("vcsim-knative-uri.yaml")
    data["eventProcessor"]["knative"]["destination"] = {"uri": uri}
    config = parse_config(data)
    assert config.eventProcessor.knative is not None
    assert config.eventProcessor.knative.destination.uri_string() == url


def test_cr_shape_reads_the_same_settings() -> None:
    flat = example("webhook-knative.yaml")
    cr = {
        "apiVersion": flat["apiVersion"],
        "kind": flat["kind"],
        "metadata": {
            "name": "r1",
            "namespace": "vmware",
            "uid": "0d7c",
            "resourceVersion": "42",
            "labels": {"a": "b"},
            "annotations": {"x": "y"},
        },
        "spec": {k: v for k, v in flat.items() if k not in ("apiVersion", "kind", "metadata")},
        "status": {"conditions": []},
    }
    from_cr = parse_config(cr)
    assert from_cr.metadata.name == "r1" and from_cr.metadata.labels == {"a": "b"}
    from_file = parse_config(flat)
    assert from_cr.eventProvider == from_file.eventProvider
    assert from_cr.eventProcessor == from_file.eventProcessor


def test_parse_bind_address() -> None:
    assert parse_bind_address("0.0.0.0:8080") == ("0.0.0.0", 8080)
    assert parse_bind_address("localhost:1") == ("localhost", 1)
    assert parse_bind_address("router.svc.cluster.local:65535")[1] == 65535
    assert parse_bind_address("[::1]:8082") == ("::1", 8082)
    assert parse_bind_address("[fe80::1%eth0]:08080") == ("fe80::1%eth0", 8080)
    assert parse_bind_address("[::ffff:192.0.2.1]:80") == ("::ffff:192.0.2.1", 80)
    for bad in ("0.0.0.0", ":8080", "0.0.0.0:0", "host:65536", "host:http", "[::1]", "::1:80",
                "http://h:80", "h:80/x", "bad host:80", "[zz]:80",
                # as strict as the CRD's pattern (RE2): ASCII digits, at most 5 of them, no
                # trailing newline, an IPv6 address ipaddress reads, a host of <= 253 chars
                "host:000001", "host:\u0668\u0660", "host:8080\n", "host\n:8080", "[:::1]:80",
                "[fe80::1%a b]:80", ".".join(["a" * 63] * 4) + ":80"):  # fmt: skip
        with pytest.raises(ValueError):
            parse_bind_address(bad)


@pytest.mark.parametrize(
    ("username", "fragment"),
    [("admin@corp.local", "UPN user names are not supported"),
     ("CORP\\admin", "DOMAIN\\user names are not supported")],
)  # fmt: skip
def test_horizon_user_name_is_the_plain_name(username: str, fragment: str) -> None:
    """docs/horizon.md: a UPN or DOMAIN\\user name is rejected, the domain goes in domain."""
    field = "eventProvider.horizon.auth.activeDirectoryAuth.username"
    data = example(HK)
    edit(data, field, username)
    with pytest.raises(ConfigError) as info:
        parse_config(data)
    (line,) = [e for e in info.value.errors if e.startswith(f"{field}:")]
    assert fragment in line and f"(got {username!r};" in line
    assert "with the domain in activeDirectoryAuth.domain" in line
    edit(data, field, "administrator")
    parse_config(data)


# --- malformed configs: (base example, edits, expected line start, expected fragment) -----

DROP = object()


def edit(data: dict[str, Any], path: str, value: Any) -> None:
    keys = path.split(".")
    node = data
    for key in keys[:-1]:
        node = node.setdefault(key, {})
    if value is DROP:
        del node[keys[-1]]
    else:
        node[keys[-1]] = value


AK = {
    "type": "aws_access_key",
    "awsAccessKeyAuth": {"accessKey": "AK", "secretKey": "ZYXWVUTSRQPO"},
}
VK, WK, VA, HK, VO = (
    "vcenter-knative.yaml",
    "webhook-knative.yaml",
    "vcenter-aws-eventbridge.yaml",
    "horizon-knative.yaml",
    "vcenter-openfaas.yaml",
)
DEST = "eventProcessor.knative.destination"
VC = "eventProvider.vcenter"
HOOK = "eventProvider.webhook"
EB = "eventProcessor.awsEventBridge"

MALFORMED: list[tuple[str, str, dict[str, Any], str, str]] = [
    ("api-version", VK, {"apiVersion": "v1"}, "apiVersion:", "allowed: event-router.vmware.com/v1alpha1"),
    ("kind", VK, {"kind": "Router"}, "kind:", "got 'Router'; allowed: RouterConfig"),
    ("no-metadata", VK, {"metadata": DROP}, "metadata:", "required"),
    ("no-metadata-name", VK, {"metadata.name": DROP}, "metadata.name:", "required"),
    ("label-not-string", VK, {"metadata.labels": {"env": 1}}, "metadata.labels.env:", "string"),
    ("top-level-typo", VK, {"eventProcesor": {}}, "eventProcesor:", "did you mean 'eventProcessor'"),
    ("provider-type", VK, {"eventProvider.type": "vcentre"}, "eventProvider.type:",
     "got 'vcentre'; allowed: vcenter, horizon, webhook, vcsim"),
    ("provider-no-name", VK, {"eventProvider.name": DROP}, "eventProvider.name:", "required"),
    ("provider-empty-name", VK, {"eventProvider.name": ""}, "eventProvider.name:", "must not be empty"),
    ("type-block-mismatch", VK, {"eventProvider.type": "horizon"}, "eventProvider.vcenter:",
     "not allowed when type is 'horizon'"),
    ("type-block-missing", VK, {"eventProvider.vcenter": DROP}, "eventProvider.vcenter:",
     "required when type is 'vcenter'"),
    ("vcenter-field-typo", VK, {f"{VC}.adress": "https://x"}, f"{VC}.adress:",
     "did you mean 'address'"),
    ("vcenter-address", VK, {f"{VC}.address": "my-vcenter"}, f"{VC}.address:",
     "expected an http:// or https:// URL (got 'my-vcenter')"),
    ("vcenter-address-creds", VK, {f"{VC}.address": "https://u:hunter2-secret@vc/sdk"},
     f"{VC}.address:", "credentials in the URL are not allowed"),
    ("vcenter-insecure", VK, {f"{VC}.insecureSSL": "maybe"}, f"{VC}.insecureSSL:", "boolean"),
    ("vcenter-auth-type", VK, {f"{VC}.auth": {"type": "aws_iam_role"}}, f"{VC}.auth.type:",
     "got 'aws_iam_role'; allowed: basic_auth"),
    ("vcenter-auth-unknown-type", VK, {f"{VC}.auth.type": "kerberos"}, f"{VC}.auth.type:",
     "allowed: basic_auth, aws_access_key, aws_iam_role, active_directory"),
    ("vcenter-no-basicauth", VK, {f"{VC}.auth.basicAuth": DROP}, f"{VC}.auth.basicAuth:",
     "required when type is 'basic_auth'"),
    ("vcenter-no-auth", VK, {f"{VC}.auth": DROP}, f"{VC}.auth:", "required"),
    ("password-number", VK, {f"{VC}.auth.basicAuth.password": 12345},
     f"{VC}.auth.basicAuth.password:", "quote the value"),
    ("password-typo", VK, {f"{VC}.auth.basicAuth.pasword": "hunter2-secret"},
     f"{VC}.auth.basicAuth.pasword:", "did you mean 'password'"),
    ("page-size", VK, {f"{VC}.pageSize": 5000}, f"{VC}.pageSize:",
     "out of range (got 5000; allowed: an integer from 1 to 1000)"),
    ("batch-window", VK, {f"{VC}.batchWindowSeconds": 2}, f"{VC}.batchWindowSeconds:",
     "out of range (got 2; allowed: a number from 0 to 1)"),
    ("processor-type-block", VK, {"eventProcessor.type": "openfaas"}, "eventProcessor.knative:",
     "not allowed when type is 'openfaas'"),
    ("processor-extra-block", VK, {"eventProcessor.openfaas": {"address": "http://gw:8080"}},
     "eventProcessor.openfaas:", "not allowed when type is 'knative' (allowed: knative"),
    ("encoding", VK, {"eventProcessor.knative.encoding": "json"}, "eventProcessor.knative.encoding:",
     "got 'json'; allowed: binary, structured"),
    ("destination-empty", VK, {DEST: {}}, f"{DEST}:", "exactly one of uri or ref is required"),
    ("destination-both", VK, {f"{DEST}.uri": "http://x"}, f"{DEST}.ref:", "got both"),
    ("uri-scheme", VK, {DEST: {"uri": {"scheme": "ftp", "host": "x"}}}, f"{DEST}.uri.scheme:",
     "got 'ftp'; allowed: http, https"),
    ("uri-string", VK, {DEST: {"uri": "gateway.local"}}, f"{DEST}.uri:", "http:// or https://"),
    ("uri-port", VK, {DEST: {"uri": {"scheme": "http", "host": "x", "port": 70000}}},
     f"{DEST}.uri.port:", "65535"),
    ("uri-two-ports", VK, {DEST: {"uri": {"scheme": "http", "host": "x:8080", "port": 9090}}},
     f"{DEST}.uri.port:", "not allowed when host carries a port too"),
    ("uri-host-port", VK, {DEST: {"uri": {"scheme": "http", "host": "x:99999"}}},
     f"{DEST}.uri.host:", "port '99999' is not a number from 1 to 65535"),
    ("uri-bare-ipv6", VK, {DEST: {"uri": {"scheme": "http", "host": "::1"}}},
     f"{DEST}.uri.host:", "IPv6 hosts are written in brackets"),
    ("uri-host-path", VK, {DEST: {"uri": {"scheme": "http", "host": "h/x"}}},
     f"{DEST}.uri.host:", "scheme and path are fields of their own"),
    ("ref-kind", VK, {f"{DEST}.ref.kind": DROP}, f"{DEST}.ref.kind:", "required"),
    ("knative-auth", VK, {"eventProcessor.knative.auth": AK}, "eventProcessor.knative.auth.type:",
     "allowed: basic_auth"),
    ("webhook-path-root", WK, {f"{HOOK}.path": "/"}, f"{HOOK}.path:", "must not be /"),
    ("webhook-path-relative", WK, {f"{HOOK}.path": "webhook"}, f"{HOOK}.path:", "must start with /"),
    ("bind-scheme", WK, {f"{HOOK}.bindAddress": "http://0.0.0.0:8080"}, f"{HOOK}.bindAddress:",
     "no URI scheme"),
    ("bind-no-port", WK, {f"{HOOK}.bindAddress": "0.0.0.0"}, f"{HOOK}.bindAddress:", "host:port"),
    ("bind-port-0", WK, {f"{HOOK}.bindAddress": "0.0.0.0:0"}, f"{HOOK}.bindAddress:", "1 to 65535"),
    ("bind-ipv6", WK, {f"{HOOK}.bindAddress": "::1:8080"}, f"{HOOK}.bindAddress:", "[::1]:8080"),
    ("bind-no-host", WK, {f"{HOOK}.bindAddress": ":8080"}, f"{HOOK}.bindAddress:", "0.0.0.0:<port>"),
    ("metrics-same-port", WK, {"metricsProvider.default.bindAddress": "127.0.0.1:8080"},
     "metricsProvider.default.bindAddress:", "same port as eventProvider.webhook.bindAddress"),
    ("auth-extra-block", WK, {f"{HOOK}.auth.awsAccessKeyAuth": AK["awsAccessKeyAuth"]},
     f"{HOOK}.auth.awsAccessKeyAuth:", "not allowed with type 'basic_auth' (allowed: only basicAuth)"),
    ("horizon-upn", HK, {"eventProvider.horizon.auth.activeDirectoryAuth.username": "admin@corp.local"},
     "eventProvider.horizon.auth.activeDirectoryAuth.username:", "UPN"),
    ("horizon-domain-user", HK, {"eventProvider.horizon.auth.activeDirectoryAuth.username": "CORP\\admin"},
     "eventProvider.horizon.auth.activeDirectoryAuth.username:", "DOMAIN\\user names are not supported"),
    ("horizon-auth-type", HK, {"eventProvider.horizon.auth": {"type": "basic_auth",
     "basicAuth": {"username": "u", "password": "ReplaceMe"}}}, "eventProvider.horizon.auth.type:",
     "got 'basic_auth'; allowed: active_directory"),
    ("eventbridge-auth", VA, {f"{EB}.auth": {"type": "basic_auth",
     "basicAuth": {"username": "u", "password": "ReplaceMe"}}}, f"{EB}.auth.type:",
     "allowed: aws_access_key, aws_iam_role"),
    ("iam-role-with-keys", VA, {f"{EB}.auth.type": "aws_iam_role"}, f"{EB}.auth.awsAccessKeyAuth:",
     "not allowed with type 'aws_iam_role' (allowed: no sub-object)"),
    ("rule-arn", VA, {f"{EB}.ruleARN": "vmware-event-router"}, f"{EB}.ruleARN:", "rule ARN"),
    ("region", VA, {f"{EB}.region": "US West"}, f"{EB}.region:", "AWS region"),
    ("eventbridge-no-auth", VA, {f"{EB}.auth": DROP}, f"{EB}.auth:", "required"),
    ("eventbridge-key-name", VA, {"eventProcessor.aws_event_bridge": {}},
     "eventProcessor.aws_event_bridge:", "unknown field"),
    ("openfaas-async", VO, {"eventProcessor.openfaas.async": "sometimes"},
     "eventProcessor.openfaas.async:", "boolean"),
    ("metrics-type", VO, {"metricsProvider.type": "prometheus"}, "metricsProvider.type:",
     "allowed: default"),
    ("metrics-username", VO, {"metricsProvider.default.auth.basicAuth.username": ""},
     "metricsProvider.default.auth.basicAuth.username:", "must not be empty"),
    ("root-cas-string", VK, {"certificates.rootCAs": "/etc/ca.pem"}, "certificates.rootCAs:",
     "must be a list"),
    ("checkpoint-period", VK, {"checkpoint.periodSeconds": 0}, "checkpoint.periodSeconds:",
     "allowed: a number from 0.1 to 3600"),
]  # fmt: skip


@pytest.mark.parametrize(
    ("base", "edits", "start", "fragment"),
    [pytest.param(b, e, s, f, id=i) for i, b, e, s, f in MALFORMED],
)
def test_malformed_config_names_the_field(
    base: str, edits: dict[str, Any], start: str, fragment: str
) -> None:
    data = copy.deepcopy(example(base))
    for path, value in edits.items():
        edit(data, path, value)
    with pytest.raises(ConfigError) as info:
        parse_config(data)
    errors = info.value.errors
    matching = [line for line in errors if line.startswith(start)]
    assert matching, f"no error line starts with {start!r}: {errors}"
    assert any(fragment in line for line in matching), errors
    text = "\n".join(errors) + str(info.value)
    for secret in SECRETS:
        assert secret not in text


def test_at_least_30_malformed_cases() -> None:
    assert len(MALFORMED) >= 30


def test_several_errors_reported_together() -> None:
    data = example("vcenter-knative.yaml")
    data["eventProvider"]["type"] = "nope"
    data["eventProcessor"]["knative"]["encoding"] = "json"
    data["metadata"]["name"] = ""
    with pytest.raises(ConfigError) as info:
        parse_config(data)
    starts = sorted(line.split(":")[0] for line in info.value.errors)
    assert starts == ["eventProcessor.knative.encoding", "eventProvider.type", "metadata.name"]


def test_cr_shape_errors_are_prefixed_with_spec() -> None:
    flat = example("vcenter-knative.yaml")
    spec = {k: v for k, v in flat.items() if k not in ("apiVersion", "kind", "metadata")}
    spec["eventProvider"]["type"] = "webhook"
    cr = {"apiVersion": flat["apiVersion"], "kind": "Oops", "metadata": {"name": "x"}, "spec": spec}
    with pytest.raises(ConfigError) as info:
        parse_config(cr)
    errors = info.value.errors
    assert any(e.startswith("kind: ") for e in errors), errors
    assert any(e.startswith("spec.eventProvider.vcenter: not allowed") for e in errors), errors
    assert any(e.startswith("spec.eventProvider.webhook: required") for e in errors), errors


def test_cr_shape_with_fields_outside_spec() -> None:
    flat = example("vcenter-knative.yaml")
    flat["spec"] = {}
    with pytest.raises(ConfigError) as info:
        parse_config(flat)
    assert any(
        e.startswith("eventProvider: unknown field next to spec; it belongs under spec")
        for e in info.value.errors
    )


def test_not_a_mapping() -> None:
    with pytest.raises(ConfigError) as info:
        parse_config(["a"])  # type: ignore[arg-type]
    assert info.value.errors == ["(root): expected a mapping of RouterConfig fields (got a list)"]


# --- files ------------------------------------------------------------------------------


def test_yaml_syntax_error_has_line_and_column(tmp_path: Path) -> None:
    path = tmp_path / "config.yaml"
    path.write_text("apiVersion: x\nkind: RouterConfig\nmetadata:\n  name: a\n   bad: [1\n")
    with pytest.raises(ConfigError) as info:
        load_config(path)
    (line,) = info.value.errors
    assert line.startswith(f"{path}:line 5, column ") and "invalid YAML" in line


def test_duplicate_keys_are_rejected(tmp_path: Path) -> None:
    path = tmp_path / "config.yaml"
    text = (ROOT / "examples" / "vcenter-knative.yaml").read_text()
    path.write_text(text + "eventProvider:\n  type: webhook\n")
    with pytest.raises(ConfigError) as info:
        load_config(path)
    (line,) = info.value.errors
    assert "duplicate key 'eventProvider' (first at line 8, column 1)" in line
    assert f"line {text.count(chr(10)) + 1}, column 1" in line


@pytest.mark.parametrize(
    ("content", "fragment"),
    [("", "the file is empty"), ("# only a comment\n", "the file is empty"),
     ("a: 1\n---\nb: 2\n", "holds 2 YAML documents")],
)  # fmt: skip
def test_empty_and_multi_document_files(tmp_path: Path, content: str, fragment: str) -> None:
    path = tmp_path / "config.yaml"
    path.write_text(content)
    with pytest.raises(ConfigError) as info:
        load_config(path)
    assert fragment in info.value.errors[0]


def test_missing_file_and_directory(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as info:
        load_config(tmp_path / "nope.yaml")
    assert info.value.errors == [f"{tmp_path / 'nope.yaml'}: config file not found"]
    with pytest.raises(ConfigError) as info:
        load_config(tmp_path)
    assert "is a directory" in info.value.errors[0]


def test_json_file_is_read(tmp_path: Path) -> None:
    path = tmp_path / "config.json"
    path.write_text(json.dumps(example("webhook-knative.yaml")))
    assert load_config(path).eventProvider.type == "webhook"


# --- JSON schema ------------------------------------------------------------------------


def test_shipped_schema_is_current() -> None:
    assert SCHEMA_PATH.read_text(encoding="utf-8") == render(), (
        "routerconfig.schema.json is stale: run python -m event_router.config.schema"
    )


@pytest.mark.parametrize("path", EXAMPLES, ids=lambda p: p.name)
def test_schema_accepts_examples(path: Path) -> None:
    jsonschema.Draft202012Validator(build_schema()).validate(yaml.safe_load(path.read_text()))


def test_schema_rejects_unknown_field_and_bad_enum() -> None:
    validator = jsonschema.Draft202012Validator(build_schema())
    data = example("vcenter-knative.yaml")
    data["eventProvider"]["vcenter"]["adress"] = "x"
    assert not validator.is_valid(data)
    data = example("vcenter-knative.yaml")
    data["eventProcessor"]["knative"]["encoding"] = "json"
    assert not validator.is_valid(data)


@pytest.mark.parametrize(
    ("edits", "what"),
    [
        ({"eventProvider.type": "horizon"}, "provider block does not match type"),
        ({"eventProcessor.openfaas": {"address": "http://gw:8080"}}, "second processor block"),
        ({f"{DEST}.uri": "http://x"}, "both uri and ref"),
        ({f"{VC}.auth.type": "aws_iam_role"}, "aws_iam_role with basicAuth"),
        ({f"{VC}.auth.basicAuth": DROP}, "basic_auth without basicAuth"),
    ],
)
def test_schema_checks_cross_field_rules_for_editors(edits: dict[str, Any], what: str) -> None:
    validator = jsonschema.Draft202012Validator(build_schema())
    data = example(VK)
    for path, value in edits.items():
        edit(data, path, value)
    assert not validator.is_valid(data), what


# rules across sections (ports of two listeners) are for -validate, not for an editor
NOT_IN_SCHEMA = {"metrics-same-port"}


@pytest.mark.parametrize(
    ("base", "edits"),
    [pytest.param(b, e, id=i) for i, b, e, _, _ in MALFORMED if i not in NOT_IN_SCHEMA],
)
def test_schema_flags_what_an_editor_can_check(base: str, edits: dict[str, Any]) -> None:
    validator = jsonschema.Draft202012Validator(build_schema())
    data = copy.deepcopy(example(base))
    for path, value in edits.items():
        edit(data, path, value)
    assert not validator.is_valid(data)


@pytest.mark.parametrize(
    ("base", "path", "value"),
    [
        (WK, f"{HOOK}.bindAddress", "localhost:1"),
        (WK, f"{HOOK}.bindAddress", "[::1]:8443"),
        (WK, f"{HOOK}.bindAddress", "[fe80::1%eth0]:65535"),
        (WK, f"{HOOK}.bindAddress", "router.svc.cluster.local.:08080"),
        (WK, f"{HOOK}.path", "/a/b-c_d.e"),
        (VK, f"{VC}.address", "HTTPS://[::1]:8443/sdk?x=1"),
        (VK, DEST, {"uri": "http://127.0.0.1:9000/events?x=1#f"}),
        (HK, "eventProvider.horizon.auth.activeDirectoryAuth.username", "svc_router"),
        (VA, f"{EB}.ruleARN", "arn:aws-cn:events:cn-north-1:123456789012:rule/bus/r_1"),
        (VA, f"{EB}.auth", {"type": "aws_iam_role"}),
    ],
)
def test_schema_accepts_what_the_models_accept(base: str, path: str, value: Any) -> None:
    data = copy.deepcopy(example(base))
    edit(data, path, value)
    parse_config(data)  # the models accept it ...
    jsonschema.Draft202012Validator(build_schema()).validate(data)  # ... and so does the schema


def test_schema_properties_have_no_generated_titles() -> None:
    # an editor shows "insecureSSL", not pydantic's "Insecuressl"
    for model in build_schema()["$defs"].values():
        for name, prop in model.get("properties", {}).items():
            assert "title" not in prop, name
