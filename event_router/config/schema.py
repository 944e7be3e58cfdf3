"""JSON Schema of the RouterConfig file, generated from the models, for editors.

``python -m event_router.config.schema`` rewrites the shipped
``event_router/config/routerconfig.schema.json``; ``--check`` exits 1 when it is stale;
``--stdout`` prints it instead. The schema accepts both shapes: the original's file (fields
at the top level) and the custom resource (fields under ``spec``).

The schema is a help for editors; the models stay the authority. Beyond field names, types,
enums and ranges it carries the rules an editor can check without running anything: the
block matching ``type``, the auth sub-object matching its type, the auth types allowed in
each place, exactly one of ``uri``/``ref``, and the shapes of URLs, ``bindAddress``, the
webhook ``path``, the rule ARN and the Horizon user name (patterns that accept no less than
the models). Only rules across sections (the metrics port vs the webhook port) and files on
disk are left to ``-validate``.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

from pydantic.json_schema import models_json_schema

from event_router.config.models import AUTH_BLOCKS, RouterConfig, RouterConfigResource

SCHEMA_PATH = Path(__file__).with_name("routerconfig.schema.json")
SCHEMA_ID = "https://github.com/vmware-samples/event-router/routerconfig.schema.json"


def build_schema() -> dict[str, Any]:
    """The schema as a dict (deterministic: same models, same output)."""
    refs, top = models_json_schema(
        [(RouterConfig, "validation"), (RouterConfigResource, "validation")],
        by_alias=True,
        ref_template="#/$defs/{model}",
    )
    _add_cross_field_rules(top["$defs"])
    _add_value_rules(top["$defs"])
    _drop_generated_titles(top["$defs"])
    schema: dict[str, Any] = {
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        "$id": SCHEMA_ID,
        "title": "RouterConfig",
        "description": (
            "Configuration of event-router (compatible with the VMware Event Router's "
            "file): the fields at the top level, or under spec as a custom resource."
        ),
        "anyOf": [
            refs[(RouterConfig, "validation")],
            refs[(RouterConfigResource, "validation")],
        ],
        "$defs": top["$defs"],
    }
    return schema


def _type_blocks(blocks: dict[str, str]) -> list[dict[str, Any]]:
    """``if type == t then the t block is required and the others are absent``."""
    rules: list[dict[str, Any]] = []
    for type_, block in blocks.items():
        others = [b for b in blocks.values() if b != block]
        rules.append(
            {
                "if": {"properties": {"type": {"const": type_}}, "required": ["type"]},
                "then": {
                    "required": [block],
                    "not": {"anyOf": [{"required": [o]} for o in others]},
                },
            }
        )
    return rules


def _add_cross_field_rules(defs: dict[str, Any]) -> None:
    """What editors can check beyond field types: the block matching ``type``, the auth
    sub-object matching its type, exactly one of ``uri``/``ref``, one port in ``uri``."""
    defs["EventProvider"]["allOf"] = _type_blocks(
        {"vcenter": "vcenter", "horizon": "horizon", "webhook": "webhook", "vcsim": "vcsim"}
    )
    defs["EventProcessor"]["allOf"] = _type_blocks(
        {"knative": "knative", "openfaas": "openfaas", "aws_event_bridge": "awsEventBridge"}
    )
    auth_blocks = ["basicAuth", "awsAccessKeyAuth", "activeDirectoryAuth"]
    auth_rules = []
    for type_, block in AUTH_BLOCKS.items():
        others = [b for b in auth_blocks if b != block]
        then: dict[str, Any] = {"not": {"anyOf": [{"required": [o]} for o in others]}}
        if block:
            then["required"] = [block]
        auth_rules.append({"if": {"properties": {"type": {"const": type_}}}, "then": then})
    defs["Auth"]["allOf"] = auth_rules
    defs["Destination"]["oneOf"] = [{"required": ["uri"]}, {"required": ["ref"]}]
    # uri: port (our extension) not together with a port in host (the original's form)
    defs["URIObject"]["if"] = {"required": ["port"]}
    defs["URIObject"]["then"] = {"properties": {"host": {"not": {"pattern": ":[0-9]+$"}}}}


_PORT = r"0*([1-9][0-9]{0,3}|[1-5][0-9]{4}|6[0-4][0-9]{3}|65[0-4][0-9]{2}|655[0-2][0-9]|6553[0-5])"
_HOST = r"(\[[0-9A-Fa-f:.]+(%[^\]]+)?\]|[A-Za-z0-9_][A-Za-z0-9_-]{0,62}(\.[A-Za-z0-9_-]{1,63})*\.?)"
#: host:port (hostnames allowed, IPv6 in brackets), as parse_bind_address
BIND_ADDRESS = f"^{_HOST}:{_PORT}$"
#: destination.uri.host: host or host:port, as split_uri_host
URI_HOST = f"^{_HOST}(:{_PORT})?$"
#: http(s)://host..., no credentials in the URL, as the models' URL check
HTTP_URL = r"^[Hh][Tt][Tt][Pp][Ss]?://[^/?#@\s]+([/?#].*)?$"
#: the webhook path: starts with /, not / alone, no spaces, ? or #
WEBHOOK_PATH = r"^/[^\s?#]+$"
RULE_ARN = r"^arn:[A-Za-z0-9_-]+:events:[A-Za-z0-9_-]*:[0-9]*:rule/\S+$"

#: where an auth section may appear, and the auth types allowed there
AUTH_TYPES: dict[str, tuple[str, ...]] = {
    "VCenterConfig": ("basic_auth",),
    "HorizonConfig": ("active_directory",),
    "WebhookConfig": ("basic_auth",),
    "KnativeConfig": ("basic_auth",),
    "OpenFaaSConfig": ("basic_auth",),
    "AWSEventBridgeConfig": ("aws_access_key", "aws_iam_role"),
    "MetricsDefaultConfig": ("basic_auth",),
}


def _string_rule(prop: dict[str, Any], pattern: str) -> None:
    """Add ``pattern`` to a string property (also inside an optional/union one)."""
    if prop.get("type") == "string":
        prop["pattern"] = pattern
    for key in ("anyOf", "oneOf"):
        for option in prop.get(key, []):
            _string_rule(option, pattern)


def _add_value_rules(defs: dict[str, Any]) -> None:
    """Patterns and per-place auth types (see the module doc)."""
    for name in ("WebhookConfig", "MetricsDefaultConfig"):
        _string_rule(defs[name]["properties"]["bindAddress"], BIND_ADDRESS)
    for name, field in (
        ("VCenterConfig", "address"),
        ("HorizonConfig", "address"),
        ("OpenFaaSConfig", "address"),
        ("AWSEventBridgeConfig", "endpoint"),
        ("Destination", "uri"),
    ):
        _string_rule(defs[name]["properties"][field], HTTP_URL)
    _string_rule(defs["URIObject"]["properties"]["host"], URI_HOST)
    _string_rule(defs["WebhookConfig"]["properties"]["path"], WEBHOOK_PATH)
    _string_rule(defs["AWSEventBridgeConfig"]["properties"]["ruleARN"], RULE_ARN)
    # only Horizon uses active_directory: no UPN (user@domain), no DOMAIN\user
    defs["ActiveDirectoryAuth"]["properties"]["username"]["pattern"] = "^[^@\\\\]+$"
    for name, allowed in AUTH_TYPES.items():
        props = defs[name]["properties"]
        props["auth"] = {
            "allOf": [props["auth"], {"properties": {"type": {"enum": list(allowed)}}}],
            "description": f"auth types allowed here: {', '.join(allowed)}",
        }


def _drop_generated_titles(defs: dict[str, Any]) -> None:
    """pydantic titles every property after its name ("Insecuressl"); an editor shows the
    name itself better."""
    for model in defs.values():
        for prop in model.get("properties", {}).values():
            prop.pop("title", None)


def render() -> str:
    return json.dumps(build_schema(), indent=2, sort_keys=True) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m event_router.config.schema")
    group = parser.add_mutually_exclusive_group()
    group.add_argument("--check", action="store_true", help="exit 1 if the shipped file is stale")
    group.add_argument("--stdout", action="store_true", help="print the schema")
    parser.add_argument("--output", type=Path, default=SCHEMA_PATH, help="file to write")
    args = parser.parse_args(argv)
    text = render()
    if args.stdout:
        sys.stdout.write(text)
        return 0
    if args.check:
        current = args.output.read_text(encoding="utf-8") if args.output.exists() else ""
        if current != text:
            print(
                f"{args.output} is stale; run: python -m event_router.config.schema",
                file=sys.stderr,
            )
            return 1
        return 0
    args.output.write_text(text, encoding="utf-8")
    print(f"wrote {args.output}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
