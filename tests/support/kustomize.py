"""Render a kustomization the way ``kubectl kustomize`` does, for the few features the
repository's kustomizations use: ``resources`` (files, or directories with their own
kustomization), ``patches`` with an inline strategic-merge ``$patch: delete`` of one object,
and inline JSON 6902 patches (``test``, ``replace``, ``add``, ``remove``) with a ``target``.
Anything else raises, so a kustomization that grows past this fails loudly here."""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import yaml

_KNOWN = {"apiVersion", "kind", "resources", "patches", "images"}


def _key(doc: dict[str, Any]) -> tuple[str, str, str, str]:
    meta = doc.get("metadata") or {}
    return (doc["apiVersion"], doc["kind"], meta.get("namespace", ""), meta["name"])


def _matches(doc: dict[str, Any], target: dict[str, Any]) -> bool:
    group, _, version = doc["apiVersion"].rpartition("/")
    meta = doc.get("metadata") or {}
    wanted = {
        "group": group,
        "version": version,
        "kind": doc["kind"],
        "name": meta.get("name"),
        "namespace": meta.get("namespace"),
    }
    return all(wanted.get(k) == v for k, v in target.items())


def _pointer(path: str) -> list[str | int]:
    parts: list[str | int] = []
    for raw in path.lstrip("/").split("/"):
        part = raw.replace("~1", "/").replace("~0", "~")
        parts.append(int(part) if part.isdigit() else part)
    return parts


def _json6902(doc: dict[str, Any], ops: list[dict[str, Any]]) -> None:
    for op in ops:
        *parents, last = _pointer(op["path"])
        node: Any = doc
        for p in parents:
            node = node[p]
        if op["op"] == "test":
            if node[last] != op["value"]:
                raise AssertionError(f"kustomize test failed at {op['path']}: {node[last]!r}")
        elif op["op"] == "replace":
            node[last] = op["value"]
        elif op["op"] == "add":
            if isinstance(node, list):
                node.insert(len(node) if last == "-" else int(last), op["value"])
            else:
                node[last] = op["value"]
        elif op["op"] == "remove":
            del node[last]
        else:
            raise NotImplementedError(op["op"])


def render(directory: Path) -> list[dict[str, Any]]:
    kust = yaml.safe_load((directory / "kustomization.yaml").read_text())
    unknown = set(kust) - _KNOWN
    if unknown:
        raise NotImplementedError(f"{directory}: kustomization fields {sorted(unknown)}")
    docs: list[dict[str, Any]] = []
    for res in kust.get("resources") or []:
        path = (directory / res).resolve()
        if path.is_dir():
            docs.extend(render(path))
        else:
            docs.extend(d for d in yaml.safe_load_all(path.read_text()) if d)
    docs = copy.deepcopy(docs)
    for patch in kust.get("patches") or []:
        body = yaml.safe_load(patch["patch"])
        if isinstance(body, dict) and body.get("$patch") == "delete":
            gone = _key({**body, "metadata": body["metadata"]})
            before = len(docs)
            docs = [d for d in docs if _key(d) != gone]
            if len(docs) != before - 1:
                raise AssertionError(f"kustomize: nothing to delete for {gone}")
        elif isinstance(body, list):
            targets = [d for d in docs if _matches(d, patch["target"])]
            if not targets:
                raise AssertionError(f"kustomize: no target {patch['target']}")
            for d in targets:
                _json6902(d, body)
        else:
            raise NotImplementedError(f"patch {body!r}")
    return docs
