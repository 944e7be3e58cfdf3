"""JSON Schema of the RouterConfig file, generated from the models, for editors.

``python -m event_router.config.schema`` rewrites the shipped
``event_router/config/routerconfig.schema.json``; ``--check`` exits 1 when it is stale;
``--stdout`` prints it instead. The schema accepts both shapes: the original's file (fields
at the top level) and the custom resource (fields under ``spec``).

The schema is a help for editors; the models stay the authority (they also check what a
schema cannot say, such as the sub-object matching ``type``).
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
    sub-object matching its type, exactly one of ``uri``/``ref``."""
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
