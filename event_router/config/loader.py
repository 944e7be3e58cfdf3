"""Load and validate a RouterConfig, with one actionable line per error.

One file serves both shapes: the original router's file (``eventProvider`` ... at the top
level) and the custom resource (the same fields under ``spec:``). Every error line reads
``<field.path>: <message> (got <value>; allowed: ...)``; values of credentials are never
shown.

Limits, checked before anything else so that no input crashes or stalls the loader (each
reported as one line naming the field, exit 2 from ``event-router -validate``):

* the file: at most :data:`MAX_FILE_BYTES` (1 MiB), UTF-8, one YAML document;
* nesting: at most :data:`MAX_DEPTH` levels of mappings and lists;
* any key or value: at most :data:`MAX_SCALAR_CHARS` characters; a number at most
  :data:`MAX_NUMBER_CHARS` characters (YAML would otherwise build a 5,000-digit integer);
* YAML aliases: at most :data:`MAX_ALIASES` (no "billion laughs");
* every line of an error: at most :data:`MAX_LINE_CHARS` characters (values are quoted
  shortened; a long value is never echoed whole).
"""

from __future__ import annotations

import difflib
import os
import re
import typing
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel, ValidationError

from event_router.config.models import (
    AUTH_BLOCKS,
    CREDENTIAL_KEYS,
    ERROR_TYPE,
    UNION_TAGS,
    RouterConfig,
    RouterSpec,
    show,
)

__all__ = ["ConfigError", "check_files", "load_config", "parse_config"]

#: fields of the CR's ``metadata`` that the router keeps; the rest belongs to Kubernetes
_KEPT_METADATA = ("name", "labels")
_CR_TOP = ("apiVersion", "kind", "metadata", "spec", "status")
_SECRET_FIELDS = frozenset({"password", "secretKey", "accessKey"})
_SHOWN_IN_AUTH = frozenset({"type", "username", "domain", "name"})

#: the largest config file read (bytes)
MAX_FILE_BYTES = 1_048_576
#: the deepest nesting of mappings and lists
MAX_DEPTH = 32
#: the longest key or value (characters)
MAX_SCALAR_CHARS = 65_536
#: the longest number (characters, as written)
MAX_NUMBER_CHARS = 32
#: the most YAML aliases (``*name``) in one file
MAX_ALIASES = 64
#: the longest line of an error message
MAX_LINE_CHARS = 400
#: the longest key of a field path shown in an error
_MAX_KEY_CHARS = 64


def clip(line: str, limit: int = MAX_LINE_CHARS) -> str:
    """``line`` cut to ``limit`` characters (with "...") and without control characters."""
    line = "".join(ch if ch.isprintable() else repr(ch)[1:-1] for ch in line)
    return line if len(line) <= limit else line[: limit - 3] + "..."


class ConfigError(Exception):
    """The config is invalid; ``errors`` holds one line per problem."""

    def __init__(self, errors: list[str], source: str | None = None) -> None:
        errors = [clip(e) for e in errors]
        self.errors = errors
        self.source = source
        where = f"{source}: " if source else ""
        super().__init__(f"{where}invalid config:\n  " + "\n  ".join(errors))


# --- YAML ---------------------------------------------------------------------------------


class _StrictLoader(yaml.SafeLoader):
    """SafeLoader that rejects duplicate keys (PyYAML silently keeps the last one)."""


def _construct_mapping(loader: _StrictLoader, node: yaml.MappingNode, deep: bool = False) -> Any:
    seen: dict[Any, yaml.Mark] = {}
    for key_node, _ in node.value:
        key = loader.construct_object(key_node, deep=deep)
        if isinstance(key, typing.Hashable) and key in seen:
            first = seen[key]
            raise yaml.constructor.ConstructorError(
                None,
                None,
                f"duplicate key {key!r} (first at line {first.line + 1}, "
                f"column {first.column + 1})",
                key_node.start_mark,
            )
        if isinstance(key, typing.Hashable):
            seen[key] = key_node.start_mark
    return loader.construct_mapping(node, deep=deep)


_StrictLoader.add_constructor(
    yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG,
    _construct_mapping,
)


def _key_text(value: str) -> str:
    return value if len(value) <= _MAX_KEY_CHARS else value[: _MAX_KEY_CHARS - 3] + "..."


def _join(parent: str, part: str | int) -> str:
    if isinstance(part, int):
        return f"{parent}[{part}]"
    return f"{parent}.{part}" if parent else part


_NUMBER_TAGS = frozenset({"tag:yaml.org,2002:int", "tag:yaml.org,2002:float"})


def _check_limits(text: str, source: str) -> None:
    """Walk the YAML *events* (an iterative parser: no recursion, nothing built yet) and
    raise :class:`ConfigError` at the first value beyond a limit, naming its field path."""
    resolver = yaml.resolver.Resolver()
    # a frame per open mapping/list: [path, is_mapping, next index or key, expecting a key]
    stack: list[list[Any]] = []
    aliases = 0

    def here() -> str:
        if not stack:
            return ""
        path, is_map, part, _ = stack[-1]
        if is_map:
            return _join(path, part if part is not None else "?")
        return _join(path, part)

    def advance() -> None:
        if not stack:
            return
        frame = stack[-1]
        if frame[1]:
            frame[3] = True
        else:
            frame[2] += 1

    def fail(path: str, message: str) -> None:
        raise ConfigError([f"{path or '(root)'}: {message}"], source)

    try:
        for event in yaml.parse(text, Loader=_StrictLoader):
            if isinstance(event, yaml.MappingStartEvent | yaml.SequenceStartEvent):
                path = (
                    here()
                    if not (stack and stack[-1][1] and stack[-1][3])
                    else _join(stack[-1][0], "?")
                )
                if len(stack) >= MAX_DEPTH:
                    fail(path, f"nested too deeply (allowed: at most {MAX_DEPTH} levels)")
                is_map = isinstance(event, yaml.MappingStartEvent)
                stack.append([path, is_map, None if is_map else 0, is_map])
            elif isinstance(event, yaml.MappingEndEvent | yaml.SequenceEndEvent):
                stack.pop()
                advance()
            elif isinstance(event, yaml.ScalarEvent):
                value = event.value
                key = bool(stack and stack[-1][1] and stack[-1][3])
                path = _join(stack[-1][0], "?") if key else here()
                if len(value) > MAX_SCALAR_CHARS:
                    what = "key" if key else "value"
                    fail(
                        path,
                        f"{what} too long ({len(value)} characters; allowed: at most "
                        f"{MAX_SCALAR_CHARS})",
                    )
                if key:
                    stack[-1][2] = _key_text(value)
                    stack[-1][3] = False
                    continue
                if (
                    event.style is None
                    and len(value) > MAX_NUMBER_CHARS
                    and resolver.resolve(yaml.ScalarNode, value, (True, False)) in _NUMBER_TAGS
                ):
                    fail(
                        path,
                        f"number too long ({len(value)} characters; allowed: a number of at "
                        f"most {MAX_NUMBER_CHARS} characters)",
                    )
                advance()
            elif isinstance(event, yaml.AliasEvent):
                aliases += 1
                if aliases > MAX_ALIASES:
                    fail(here(), f"too many YAML aliases (allowed: at most {MAX_ALIASES})")
                if stack and stack[-1][1] and stack[-1][3]:
                    stack[-1][2] = "?"
                    stack[-1][3] = False
                else:
                    advance()
    except yaml.YAMLError:
        return  # the loader reports syntax errors with their position


def _read_yaml(text: str, source: str) -> Any:
    _check_limits(text, source)
    try:
        docs = [d for d in yaml.load_all(text, Loader=_StrictLoader) if d is not None]
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        where = f"line {mark.line + 1}, column {mark.column + 1}" if mark else "unknown position"
        problem = exc.problem or exc.context or "syntax error"
        raise ConfigError([f"{source}:{where}: invalid YAML: {problem}"], source) from None
    except yaml.YAMLError as exc:
        raise ConfigError([f"{source}: invalid YAML: {exc}"], source) from None
    except (RecursionError, ValueError, OverflowError, MemoryError) as exc:
        # a last line of defence: the limits above should have caught it with its field
        raise ConfigError(
            [
                f"{source}: the YAML cannot be read ({type(exc).__name__}; see the limits in "
                "docs/configuration.md)"
            ],
            source,
        ) from None
    if not docs:
        raise ConfigError([f"{source}: the file is empty (expected a RouterConfig)"], source)
    if len(docs) > 1:
        raise ConfigError(
            [f"{source}: holds {len(docs)} YAML documents (allowed: exactly one RouterConfig)"],
            source,
        )
    return docs[0]


#: the environment variable naming the credentials directory (see resolve_credentials)
CREDENTIALS_DIR_ENV = "EVENT_ROUTER_CREDENTIALS_DIR"


def resolve_credentials(data: Any, directory: str | None) -> Any:
    """Credentials by reference, read from files: every ``auth`` holding
    ``secretRef: {name: N}`` (the custom resource's form) gets its inline block from
    ``<directory>/N/<key>`` (keys per type: :data:`CREDENTIAL_KEYS`, e.g. ``username``,
    ``password``), as the operator's router pods mount the referenced Secrets (read-only,
    only those keys). A copy; ``data`` is not changed. :class:`ConfigError` names the field
    when the directory is not given or a file is missing."""
    errors: list[str] = []

    def convert(node: Any, path: str) -> Any:
        if isinstance(node, list):
            return [convert(v, f"{path}[{i}]") for i, v in enumerate(node)]
        if not isinstance(node, dict):
            return node
        out: dict[str, Any] = {}
        for key, value in node.items():
            sub = f"{path}.{key}" if path else str(key)
            ref = value.get("secretRef") if key == "auth" and isinstance(value, dict) else None
            if ref is None:
                out[key] = convert(value, sub)
                continue
            out[key] = {k: v for k, v in value.items() if k != "secretRef"}
            name = ref.get("name") if isinstance(ref, dict) else None
            keys = CREDENTIAL_KEYS.get(str(value.get("type")))
            if not isinstance(name, str) or not name or "/" in name or name.startswith("."):
                errors.append(f"{sub}.secretRef.name: must be a Secret name (got {show(name)})")
            elif keys is None:
                continue  # the type's own error follows from validation
            elif not directory:
                errors.append(
                    f"{sub}.secretRef: credentials by reference need {CREDENTIALS_DIR_ENV}, "
                    f"the directory holding <secret name>/<key> files ({', '.join(keys)})"
                )
            elif keys:
                block: dict[str, str] = {}
                for k in keys:
                    file = Path(directory) / name / k
                    try:
                        block[k] = file.read_text(encoding="utf-8")
                    except (OSError, UnicodeDecodeError) as exc:
                        why = "not found" if isinstance(exc, FileNotFoundError) else "unreadable"
                        errors.append(
                            f"{sub}.secretRef.name: {file} {why} (needs: {', '.join(keys)})"
                        )
                        break
                else:
                    out[key][AUTH_BLOCKS[str(value["type"])] or "unused"] = block
        return out

    result = convert(data, "")
    if errors:
        raise ConfigError(errors)
    return result


def load_config(
    path: str | os.PathLike[str], *, credentials_dir: str | None = None
) -> RouterConfig:
    """Read a YAML (or JSON) file in either shape and validate it. ``credentials_dir``:
    where ``auth.secretRef`` credentials are read from (:func:`resolve_credentials`)."""
    source = str(path)
    try:
        with Path(path).open("rb") as f:
            raw = f.read(MAX_FILE_BYTES + 1)
        if len(raw) > MAX_FILE_BYTES:
            raise ConfigError(
                [
                    f"{source}: the config file is too large (more than {MAX_FILE_BYTES} bytes; "
                    f"allowed: at most {MAX_FILE_BYTES} bytes, 1 MiB)"
                ],
                source,
            )
        text = raw.decode("utf-8")
    except FileNotFoundError:
        raise ConfigError([f"{source}: config file not found"], source) from None
    except IsADirectoryError:
        raise ConfigError([f"{source}: is a directory (expected a config file)"], source) from None
    except UnicodeDecodeError as exc:
        raise ConfigError(
            [f"{source}: not UTF-8 text (byte {exc.start}; allowed: a UTF-8 YAML or JSON file)"],
            source,
        ) from None
    except OSError as exc:
        raise ConfigError(
            [f"{source}: cannot read the config file: {exc.strerror or exc}"], source
        ) from None
    try:
        data = _read_yaml(text, source)
        if credentials_dir is not None or _has_secret_ref(data):
            data = resolve_credentials(data, credentials_dir)
        return parse_config(data)
    except ConfigError as exc:
        exc.source = source
        raise


def _has_secret_ref(node: Any) -> bool:
    if isinstance(node, dict):
        if isinstance(node.get("auth"), dict) and "secretRef" in node["auth"]:
            return True
        return any(_has_secret_ref(v) for v in node.values())
    if isinstance(node, list):
        return any(_has_secret_ref(v) for v in node)
    return False


# --- shapes ---------------------------------------------------------------------------------


def parse_config(data: dict[str, Any]) -> RouterConfig:
    """Validate a config given as a mapping: the fields at the top level (the original's
    file) or under ``spec:`` (the custom resource). Raises :class:`ConfigError`."""
    if not isinstance(data, dict):
        raise ConfigError([f"(root): expected a mapping of RouterConfig fields (got {show(data)})"])
    if "spec" not in data:
        return _validate(data, prefix="")
    errors: list[str] = []
    for key in data:
        if key not in _CR_TOP:
            hint = ""
            if key in RouterSpec.model_fields:
                hint = f"; it belongs under spec (spec.{key})"
            errors.append(
                f"{key}: unknown field next to spec{hint} (allowed at the top level: "
                f"{', '.join(_CR_TOP)})"
            )
    spec = data["spec"]
    if not isinstance(spec, dict):
        errors.append(f"spec: expected a mapping (got {show(spec)})")
    metadata = data.get("metadata")
    if errors:
        raise ConfigError(errors)
    flat: dict[str, Any] = {k: v for k, v in data.items() if k in ("apiVersion", "kind")}
    if isinstance(metadata, dict):
        flat["metadata"] = {k: v for k, v in metadata.items() if k in _KEPT_METADATA}
    elif "metadata" in data:
        flat["metadata"] = metadata
    for key, value in spec.items():
        if key in ("apiVersion", "kind", "metadata"):
            raise ConfigError([f"spec.{key}: belongs at the top level, not under spec"])
        flat[key] = value
    return _validate(flat, prefix="spec.", top=("apiVersion", "kind", "metadata"))


def _validate(data: dict[str, Any], prefix: str, top: Iterable[str] = ()) -> RouterConfig:
    try:
        return RouterConfig.model_validate(data)
    except ValidationError as exc:
        raise ConfigError(format_errors(exc, prefix=prefix, top=tuple(top))) from None


# --- error lines --------------------------------------------------------------------------


def _part(text: str) -> str | int:
    """A list index in a problem's field path (``eventProcessors.1.name``) as an int."""
    return int(text) if text.isdigit() else text


def _path(loc: Iterable[str | int]) -> str:
    out = ""
    for part in loc:
        if isinstance(part, int):
            out += f"[{part}]"
        else:
            part = _key_text(str(part))
            out += f".{part}" if out else part
    return out or "(root)"


def _model_of(annotation: Any) -> type[BaseModel] | None:
    """The pydantic model inside an annotation (through Optional, Annotated, list, ...)."""
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return annotation
    origin = typing.get_origin(annotation)
    if origin is None:
        return None
    for arg in typing.get_args(annotation):
        found = _model_of(arg)
        if found is not None:
            return found
    return None


def _field(model: type[BaseModel], name: str) -> Any:
    for fname, info in model.model_fields.items():
        if name in (fname, info.alias):
            return info
    return None


def _model_at(loc: Iterable[str | int]) -> type[BaseModel] | None:
    model: type[BaseModel] | None = RouterConfig
    for part in loc:
        if model is None:
            return None
        if isinstance(part, int):
            continue
        info = _field(model, part)
        if info is None:
            return None
        model = _model_of(info.annotation)
    return model


def _allowed_fields(model: type[BaseModel]) -> list[str]:
    return [info.alias or name for name, info in model.model_fields.items()]


def _is_secret(loc: tuple[str | int, ...]) -> bool:
    names = [p for p in loc if isinstance(p, str)]
    if not names:
        return False
    if names[-1] in _SECRET_FIELDS:
        return True
    in_auth = "auth" in names
    return in_auth and names[-1] not in _SHOWN_IN_AUTH


def _got(value: Any, loc: tuple[str | int, ...]) -> str:
    if _is_secret(loc) and not isinstance(value, dict | list):
        return "got a value that is not shown"
    return f"got {show(value)}"


def _message(err: Any, loc: tuple[str | int, ...]) -> str:
    kind = err["type"]
    ctx = err.get("ctx") or {}
    value = err.get("input")
    if kind == "missing":
        return "required field is missing"
    if kind == "extra_forbidden":
        parent = _model_at(loc[:-1])
        allowed = _allowed_fields(parent) if parent else []
        name = str(loc[-1])
        close = difflib.get_close_matches(name, allowed, n=1, cutoff=0.6)
        hint = f"; did you mean {close[0]!r}?" if close else ""
        listed = f" (allowed: {', '.join(allowed)})" if allowed else ""
        return f"unknown field{hint}{listed}"
    if kind == "literal_error":
        choices = ", ".join(re.findall(r"'([^']*)'", str(ctx.get("expected", ""))))
        return f"not allowed ({_got(value, loc)}; allowed: {choices})"
    if kind in ("model_type", "model_attributes_type", "dict_type"):
        return f"must be a mapping ({_got(value, loc)})"
    if kind == "list_type":
        return f"must be a list ({_got(value, loc)})"
    if kind == "string_too_short" and ctx.get("min_length") == 1:
        return "must not be empty"
    if kind == "too_short":
        got = ctx.get("actual_length")
        return f"must hold at least {ctx.get('min_length')} item(s) (got {got})"
    if kind == "too_long":
        got = ctx.get("actual_length")
        return f"must hold at most {ctx.get('max_length')} item(s) (got {got})"
    if kind == "string_pattern_mismatch" and loc and loc[-1] == "region":
        return f"not an AWS region name ({_got(value, loc)}; allowed: a region such as us-west-1)"
    if kind in _RANGE_ERRORS or (
        kind in ("int_type", "float_type", "int_parsing", "float_parsing")
        and isinstance(value, bool | str)
    ):
        bounds = _allowed_range(loc)
        if bounds:
            if kind == "finite_number":
                what = "must be a finite number"
            else:
                what = "out of range" if kind in _RANGE_ERRORS else _TYPE_WORDS[kind]
            return f"{what} ({_got(value, loc)}; allowed: {bounds})"
    if kind == "string_type" and isinstance(value, int | float | bool):
        return f"must be a string; quote the value in YAML ({_got(value, loc)})"
    msg = str(err["msg"])
    if kind == "value_error":
        msg = msg.removeprefix("Value error, ")
    msg = msg.replace("Input should be", "must be").replace("String should", "must")
    return f"{msg} ({_got(value, loc)})"


_RANGE_ERRORS = frozenset(
    {"greater_than", "greater_than_equal", "less_than", "less_than_equal", "finite_number"}
)
_TYPE_WORDS = {
    "int_type": "must be an integer",
    "int_parsing": "must be an integer",
    "float_type": "must be a number",
    "float_parsing": "must be a number",
}


def _allowed_range(loc: tuple[str | int, ...]) -> str | None:
    """``"0.1 to 3600"`` for a bounded number field (from its ``ge``/``le``), else None."""
    if not loc or not isinstance(loc[-1], str):
        return None
    parent = _model_at(loc[:-1])
    info = _field(parent, loc[-1]) if parent else None
    if info is None:
        return None
    low = high = None
    for m in info.metadata:
        low = getattr(m, "ge", low)
        high = getattr(m, "le", high)
    if low is None or high is None:
        return None
    kind = "an integer" if info.annotation in (int, int | None) else "a number"

    def num(x: float) -> str:
        return f"{x:g}" if isinstance(x, float) else str(x)

    return f"{kind} from {num(low)} to {num(high)}"


def format_errors(exc: ValidationError, prefix: str = "", top: tuple[str, ...] = ()) -> list[str]:
    """One line per error: ``<field.path>: <message>``. ``prefix`` goes before every path
    whose first element is not in ``top`` (``spec.`` for the CR shape)."""
    lines: list[str] = []
    for err in exc.errors(include_url=False):
        loc = tuple(p for p in err["loc"] if not (isinstance(p, str) and p in UNION_TAGS))
        if err["type"] == ERROR_TYPE:
            problems = (err.get("ctx") or {}).get("problems", [])
            entries = [
                (loc + (tuple(_part(p) for p in field.split(".")) if field else ()), message)
                for field, message in problems
            ]
        else:
            entries = [(loc, _message(err, loc))]
        for where, message in entries:
            pre = prefix if where and where[0] not in top else ""
            line = f"{pre}{_path(where)}: {message}"
            if line not in lines:
                lines.append(line)
    return lines


# --- files the config points to -------------------------------------------------------------


def check_files(config: RouterConfig) -> list[str]:
    """Problems with files the config names (root CA bundles), one line each."""
    errors: list[str] = []
    certs = config.certificates
    for i, ca in enumerate(certs.rootCAs if certs else []):
        path = Path(ca)
        if not path.is_file():
            errors.append(f"certificates.rootCAs[{i}]: file not found (got {ca!r})")
            continue
        try:
            head = path.read_text(encoding="utf-8", errors="replace")
        except OSError as exc:
            errors.append(f"certificates.rootCAs[{i}]: cannot read {ca!r}: {exc.strerror}")
            continue
        if "-----BEGIN CERTIFICATE-----" not in head:
            errors.append(
                f"certificates.rootCAs[{i}]: not a PEM certificate bundle (got {ca!r}; "
                "allowed: a file with -----BEGIN CERTIFICATE----- blocks)"
            )
    return errors
