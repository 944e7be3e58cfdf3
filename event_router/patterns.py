"""Amazon EventBridge event patterns, compiled once and matched locally (pure, no I/O).

:func:`compile_pattern` validates a pattern (a JSON string or the parsed object) and returns
a :class:`Pattern` whose :meth:`Pattern.matches` applies it to an event (a JSON-like dict).
A malformed or unsupported pattern raises :class:`PatternError` naming the offending part,
e.g. ``detail.vm[0].numeric: operator '>>' is not a comparison (allowed: <, <=, =, >=, >)``.

The language is EventBridge's (see the "Content filtering in Amazon EventBridge event
patterns" and "Comparison operators" pages of the EventBridge user guide):

* a pattern is an object; each key names a field of the event; a nested object descends
  into the field, an array lists the values (or filters) one of which the field must match;
  all keys must match (AND), the values of one array are alternatives (OR);
* exact values: strings, numbers (compared by value: ``5`` matches ``5.0``), ``true``,
  ``false`` and ``null`` (``null`` matches a field that is present and null, not a missing
  one); booleans never equal numbers;
* event arrays: a field whose value is an array matches when any element matches; arrays
  of objects are descended into element by element (fields of one sub-pattern must match in
  the same element);
* filters: ``prefix`` and ``suffix`` (string, or ``{"equals-ignore-case": ...}``),
  ``equals-ignore-case``, ``anything-but`` (a value, a list of values, or one of
  ``prefix``/``suffix``/``equals-ignore-case``/``wildcard``), ``numeric`` (one or two
  comparisons: ``[">", 0, "<=", 5]``), ``exists`` (leaf fields only), ``cidr`` (IPv4 or
  IPv6), ``wildcard`` (``*`` matches any run of characters, ``\\*`` a literal star),
  ``shellstyle`` (the original router's Quamina operator: ``*`` matches any run, no
  escapes, ``**`` not allowed) and ``$or`` (a list of at least two sub-patterns).

Only ``{"exists": false}`` matches a missing field (``anything-but`` needs the field
present; a present value that is not a string satisfies ``anything-but`` prefix/suffix).
"""

from __future__ import annotations

import ipaddress
import json
import math
import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

__all__ = ["OPERATORS", "Pattern", "PatternError", "compile_pattern", "matches"]

OPERATORS = (
    "anything-but",
    "cidr",
    "equals-ignore-case",
    "exists",
    "numeric",
    "prefix",
    "shellstyle",
    "suffix",
    "wildcard",
)
_COMPARISONS = ("<", "<=", "=", ">=", ">")
_ANYTHING_BUT_OPERATORS = ("equals-ignore-case", "prefix", "suffix", "wildcard")

_MISSING: Any = object()

#: a leaf predicate gets the field's scalar value (or _MISSING) and answers
Predicate = Callable[[Any], bool]


class PatternError(ValueError):
    """A pattern that EventBridge would reject or that this matcher cannot apply."""

    def __init__(self, path: str, message: str) -> None:
        super().__init__(f"{path or '<pattern>'}: {message}")
        self.path = path
        self.reason = message


# --- compiled form ----------------------------------------------------------------------


@dataclass(frozen=True)
class _Leaf:
    """A field whose value must match one of ``predicates``."""

    key: str
    predicates: tuple[Predicate, ...]
    #: the field may be missing (an ``exists: false`` filter is among the alternatives)
    missing_ok: bool


@dataclass(frozen=True)
class _Node:
    """An object pattern: every leaf, every child and every ``$or`` must match."""

    leaves: tuple[_Leaf, ...]
    children: tuple[tuple[str, _Node], ...]
    ors: tuple[tuple[_Node, ...], ...]


class Pattern:
    """A compiled EventBridge pattern."""

    def __init__(self, source: dict[str, Any], root: _Node) -> None:
        self.source = source
        self._root = root

    def matches(self, event: dict[str, Any]) -> bool:
        """True when ``event`` (a JSON-like dict) matches the pattern."""
        return _match_node(self._root, event)

    def __repr__(self) -> str:
        return f"Pattern({json.dumps(self.source, sort_keys=True)})"


def compile_pattern(pattern: str | dict[str, Any]) -> Pattern:
    """Validate and compile ``pattern``; raise :class:`PatternError` naming the bad part."""
    if isinstance(pattern, str):
        try:
            parsed = json.loads(pattern)
        except json.JSONDecodeError as exc:
            raise PatternError("", f"not valid JSON ({exc.msg} at char {exc.pos})") from None
    else:
        parsed = pattern
    if not isinstance(parsed, dict):
        raise PatternError("", f"a pattern must be a JSON object (got {_show(parsed)})")
    return Pattern(parsed, _compile_node(parsed, ""))


def matches(pattern: str | dict[str, Any], event: dict[str, Any]) -> bool:
    """One-off convenience: compile ``pattern`` and apply it to ``event``."""
    return compile_pattern(pattern).matches(event)


# --- matching ---------------------------------------------------------------------------


def _match_node(node: _Node, value: Any) -> bool:
    if isinstance(value, list):
        # an array of objects: some element must match the whole sub-pattern
        return any(_match_node(node, v) for v in _flatten(value) if isinstance(v, dict)) or (
            not any(isinstance(v, dict) for v in _flatten(value)) and _match_node(node, _MISSING)
        )
    obj: dict[str, Any] = value if isinstance(value, dict) else {}
    for leaf in node.leaves:
        if not _match_leaf(leaf, obj.get(leaf.key, _MISSING)):
            return False
    for key, child in node.children:
        if not _match_node(child, obj.get(key, _MISSING)):
            return False
    return all(any(_match_node(alt, value) for alt in alts) for alts in node.ors)


def _match_leaf(leaf: _Leaf, value: Any) -> bool:
    if isinstance(value, list):
        scalars = [v for v in _flatten(value) if not isinstance(v, dict)]
        if not scalars:
            # an empty array, or only objects: no leaf value here
            return leaf.missing_ok
        return any(p(v) for v in scalars for p in leaf.predicates)
    if isinstance(value, dict):
        # exists/comparisons only apply to leaf values, an object counts as missing
        value = _MISSING
    if value is _MISSING:
        return leaf.missing_ok
    return any(p(value) for p in leaf.predicates)


def _flatten(values: list[Any]) -> Iterator[Any]:
    for v in values:
        if isinstance(v, list):
            yield from _flatten(v)
        else:
            yield v


# --- compiling --------------------------------------------------------------------------


def _join(path: str, key: str) -> str:
    return f"{path}.{key}" if path else key


def _show(value: Any) -> str:
    text = json.dumps(value) if not isinstance(value, str) else repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


def _compile_node(obj: dict[str, Any], path: str) -> _Node:
    if not obj:
        raise PatternError(path, "an empty object matches nothing; remove it or add fields")
    leaves: list[_Leaf] = []
    children: list[tuple[str, _Node]] = []
    ors: list[tuple[_Node, ...]] = []
    for key, value in obj.items():
        here = _join(path, key)
        if key == "$or":
            if not isinstance(value, list) or len(value) < 2:
                raise PatternError(
                    here, f"$or needs an array of at least two objects (got {_show(value)})"
                )
            alts = []
            for i, alt in enumerate(value):
                if not isinstance(alt, dict):
                    raise PatternError(
                        f"{here}[{i}]", f"each $or alternative must be an object (got {_show(alt)})"
                    )
                alts.append(_compile_node(alt, f"{here}[{i}]"))
            ors.append(tuple(alts))
        elif isinstance(value, dict):
            children.append((key, _compile_node(value, here)))
        elif isinstance(value, list):
            leaves.append(_compile_leaf(key, value, here))
        else:
            raise PatternError(
                here,
                f"a field must map to an object or an array of values (got {_show(value)}; "
                f"write [{json.dumps(value)}] for an exact match)",
            )
    return _Node(tuple(leaves), tuple(children), tuple(ors))


def _compile_leaf(key: str, values: list[Any], path: str) -> _Leaf:
    if not values:
        raise PatternError(path, "an empty array matches nothing (allowed: at least one value)")
    predicates: list[Predicate] = []
    missing_ok = False
    exact: list[Any] = []
    for i, item in enumerate(values):
        here = f"{path}[{i}]"
        if isinstance(item, dict):
            if len(item) != 1:
                raise PatternError(
                    here,
                    f"a filter object holds exactly one operator (got {_show(item)}; "
                    f"allowed: {', '.join(OPERATORS)})",
                )
            ((op, arg),) = item.items()
            if op == "exists":
                if not isinstance(arg, bool):
                    raise PatternError(
                        f"{here}.exists", f"must be true or false (got {_show(arg)})"
                    )
                if arg:
                    predicates.append(_always)
                else:
                    missing_ok = True
                continue
            predicates.append(_compile_filter(op, arg, f"{here}.{op}"))
        elif isinstance(item, list):
            raise PatternError(here, f"nested arrays are not allowed (got {_show(item)})")
        else:
            _check_number(item, here)
            exact.append(item)
    if exact:
        predicates.insert(0, _exact_predicate(exact))
    return _Leaf(key, tuple(predicates), missing_ok)


def _always(_value: Any) -> bool:
    return True


def _is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def _check_number(value: Any, path: str) -> None:
    if isinstance(value, float) and not math.isfinite(value):
        raise PatternError(path, f"numbers must be finite (got {value})")


def _exact_predicate(values: list[Any]) -> Predicate:
    strings = frozenset(v for v in values if isinstance(v, str))
    numbers = frozenset(float(v) for v in values if _is_number(v))
    bools = frozenset(v for v in values if isinstance(v, bool))
    null = any(v is None for v in values)

    def exact(value: Any) -> bool:
        if isinstance(value, str):
            return value in strings
        if isinstance(value, bool):
            return value in bools
        if _is_number(value):
            return float(value) in numbers
        return value is None and null

    return exact


def _string_arg(op: str, arg: Any, path: str, *, allow_list: bool = False) -> list[str]:
    if isinstance(arg, str):
        return [arg]
    if allow_list and isinstance(arg, list) and arg and all(isinstance(a, str) for a in arg):
        return list(arg)
    allowed = "a string or a non-empty array of strings" if allow_list else "a string"
    raise PatternError(path, f"{op} takes {allowed} (got {_show(arg)})")


def _compile_filter(op: str, arg: Any, path: str) -> Predicate:
    if op == "prefix" or op == "suffix":
        return _compile_affix(op, arg, path, allow_list=False)
    if op == "equals-ignore-case":
        folded = frozenset(s.casefold() for s in _string_arg(op, arg, path, allow_list=True))
        return lambda v: isinstance(v, str) and v.casefold() in folded
    if op == "wildcard":
        regexes = [_wildcard_regex(s, path) for s in _string_arg(op, arg, path, allow_list=True)]
        return lambda v: isinstance(v, str) and any(r.fullmatch(v) for r in regexes)
    if op == "shellstyle":
        regexes = [_shellstyle_regex(s, path) for s in _string_arg(op, arg, path, allow_list=True)]
        return lambda v: isinstance(v, str) and any(r.fullmatch(v) for r in regexes)
    if op == "numeric":
        return _compile_numeric(arg, path)
    if op == "cidr":
        return _compile_cidr(arg, path)
    if op == "anything-but":
        return _compile_anything_but(arg, path)
    raise PatternError(
        path.rpartition(".")[0],
        f"unknown operator {op!r} (allowed: {', '.join(OPERATORS)})",
    )


def _compile_affix(op: str, arg: Any, path: str, *, allow_list: bool) -> Predicate:
    ignore_case = False
    if isinstance(arg, dict):
        if set(arg) != {"equals-ignore-case"}:
            raise PatternError(
                path,
                f'{op} takes a string or {{"equals-ignore-case": <string>}} (got {_show(arg)})',
            )
        ignore_case = True
        arg = arg["equals-ignore-case"]
        path = f"{path}.equals-ignore-case"
    texts = tuple(_string_arg(op, arg, path, allow_list=allow_list))
    if ignore_case:
        folded = tuple(t.casefold() for t in texts)
        if op == "prefix":
            return lambda v: isinstance(v, str) and v.casefold().startswith(folded)
        return lambda v: isinstance(v, str) and v.casefold().endswith(folded)
    if op == "prefix":
        return lambda v: isinstance(v, str) and v.startswith(texts)
    return lambda v: isinstance(v, str) and v.endswith(texts)


def _wildcard_regex(text: str, path: str) -> re.Pattern[str]:
    out: list[str] = []
    i = 0
    while i < len(text):
        c = text[i]
        if c == "\\":
            if i + 1 < len(text) and text[i + 1] in "*\\":
                out.append(re.escape(text[i + 1]))
                i += 2
                continue
            raise PatternError(
                path, f"invalid escape in {text!r} at {i} (allowed: \\* and \\\\ only)"
            )
        if c == "*":
            if i + 1 < len(text) and text[i + 1] == "*":
                raise PatternError(path, f"consecutive wildcards in {text!r} are not allowed")
            out.append(".*")
        else:
            out.append(re.escape(c))
        i += 1
    return re.compile("".join(out), re.DOTALL)


def _shellstyle_regex(text: str, path: str) -> re.Pattern[str]:
    if "**" in text:
        raise PatternError(path, f"adjacent '**' in {text!r} is not allowed")
    return re.compile(".*".join(re.escape(part) for part in text.split("*")), re.DOTALL)


_OPS: dict[str, Callable[[float, float], bool]] = {
    "<": lambda a, b: a < b,
    "<=": lambda a, b: a <= b,
    "=": lambda a, b: a == b,
    ">=": lambda a, b: a >= b,
    ">": lambda a, b: a > b,
}


def _compile_numeric(arg: Any, path: str) -> Predicate:
    if not isinstance(arg, list) or len(arg) not in (2, 4):
        raise PatternError(
            path,
            f'numeric takes one or two comparisons, e.g. [">", 0, "<=", 5] (got {_show(arg)})',
        )
    checks: list[tuple[Callable[[float, float], bool], float]] = []
    kinds: list[str] = []
    for j in range(0, len(arg), 2):
        op, bound = arg[j], arg[j + 1]
        if op not in _OPS:
            raise PatternError(
                f"{path}[{j}]",
                f"{_show(op)} is not a comparison (allowed: {', '.join(_COMPARISONS)})",
            )
        if not _is_number(bound) or not math.isfinite(bound):
            raise PatternError(f"{path}[{j + 1}]", f"expected a number (got {_show(bound)})")
        checks.append((_OPS[op], float(bound)))
        kinds.append("lower" if op in (">", ">=") else "upper" if op in ("<", "<=") else "=")
    if len(checks) == 2 and sorted(kinds) != ["lower", "upper"]:
        raise PatternError(
            path,
            f"two comparisons must be a lower bound (> or >=) and an upper bound (< or <=) "
            f"(got {_show(arg)})",
        )
    if len(checks) == 2:
        lo = checks[kinds.index("lower")][1]
        hi = checks[kinds.index("upper")][1]
        if lo > hi:
            raise PatternError(path, f"the range is empty: lower bound {lo} > upper bound {hi}")

    def numeric(value: Any) -> bool:
        if not _is_number(value):
            return False
        v = float(value)
        return all(fn(v, bound) for fn, bound in checks)

    return numeric


def _compile_cidr(arg: Any, path: str) -> Predicate:
    if not isinstance(arg, str):
        raise PatternError(path, f'cidr takes a string like "10.0.0.0/24" (got {_show(arg)})')
    try:
        network = ipaddress.ip_network(arg, strict=False)
    except ValueError:
        raise PatternError(
            path, f"{arg!r} is not an IPv4 or IPv6 network (e.g. 10.0.0.0/24, 2001:db8::/32)"
        ) from None

    def cidr(value: Any) -> bool:
        if not isinstance(value, str):
            return False
        try:
            return ipaddress.ip_address(value) in network
        except ValueError:
            return False

    return cidr


def _compile_anything_but(arg: Any, path: str) -> Predicate:
    if isinstance(arg, dict):
        if len(arg) != 1:
            raise PatternError(
                path,
                f"anything-but takes one operator (got {_show(arg)}; "
                f"allowed: {', '.join(_ANYTHING_BUT_OPERATORS)})",
            )
        ((op, inner),) = arg.items()
        here = f"{path}.{op}"
        if op in ("prefix", "suffix"):
            if isinstance(inner, dict):
                raise PatternError(here, f"anything-but {op} takes a string (got {_show(inner)})")
            positive = _compile_affix(op, inner, here, allow_list=True)
        elif op in ("equals-ignore-case", "wildcard"):
            positive = _compile_filter(op, inner, here)
        else:
            raise PatternError(
                path,
                f"unsupported operator {op!r} inside anything-but "
                f"(allowed: {', '.join(_ANYTHING_BUT_OPERATORS)})",
            )
        # like anything-but <value>: a present field that is not such a string matches
        return lambda v: not positive(v)
    values = arg if isinstance(arg, list) else [arg]
    if not values:
        raise PatternError(path, "anything-but needs at least one value")
    for j, v in enumerate(values):
        if not (isinstance(v, str) or _is_number(v)):
            raise PatternError(
                f"{path}[{j}]" if isinstance(arg, list) else path,
                f"anything-but takes strings or numbers (got {_show(v)})",
            )
        _check_number(v, path)
    if any(isinstance(v, str) for v in values) and any(_is_number(v) for v in values):
        raise PatternError(
            path, f"anything-but lists hold only strings or only numbers (got {_show(arg)})"
        )
    excluded = _exact_predicate(values)
    return lambda v: not excluded(v)
