"""What the fuzz sends: values drawn from an endpoint's published JSON Schema, the same values
broken on purpose, and raw junk.

- :func:`valid` — ``hypothesis_jsonschema.from_schema`` of the published request schema, with
  a few fields steered where a random valid value would touch this machine (:data:`STEERED`:
  a path that ``memory.index`` would crawl or a repository ``tasks.submit`` would branch).
- :func:`broken` — a valid value with one thing wrong: a required field gone, a field of the
  wrong JSON type, a field past its limit (length, range, items, blank, NUL), an unknown
  field, a field nested past :data:`bus.limits.MAX_NESTING`, or no object at all.
- :func:`junk` — bytes that are not a request: random bytes, invalid UTF-8 inside a JSON
  string, lone surrogates, deep brackets (past the limit and past Python's recursion limit),
  truncated JSON, NaN and huge numbers, and a payload just under the server's ``max_payload``.

Whether a value fits its schema is decided afterwards, by validating it against the schema
(:func:`fits`), not by which strategy made it: a "broken" value may happen to fit.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import jsonschema
from hypothesis import strategies as st
from hypothesis_jsonschema import from_schema

from bus.limits import MAX_NESTING
from tests.fuzz.targets import Target

Value = Any
Strategy = st.SearchStrategy


@dataclass(frozen=True)
class Places:
    """Directories of the stack that steered fields may name."""

    repo: Path  # a small git repository
    plain: Path  # a directory that is no repository
    missing: Path  # a path that does not exist


def _paths(places: Places) -> Strategy[str]:
    return st.sampled_from(
        [str(places.repo), str(places.plain), str(places.missing), str(places.repo / "report.py")]
    )


#: (target id, field) → a strategy for that field's valid values, given the stack's places.
#: ``memory.index`` would crawl any directory it is given ("." is this checkout, "/" the
#: machine) and ``tasks.submit`` would make worktrees and branches in any repository, so
#: their paths come from the stack's own directories; ``tasks.wait`` and the infra
#: operations legitimately wait up to an hour, so their waits stay short.
STEERED: dict[tuple[str, str], Callable[[Places], Strategy[Any]]] = {
    ("memory.index", "path"): _paths,
    ("tasks.submit", "repo"): _paths,
    ("tasks.wait", "timeout_s"): lambda _: st.floats(0.01, 1.0),
    **{
        (f"infra.{op}", "wait_s"): (lambda _: st.floats(0.0, 1.0))
        for op in ("preview", "up", "refresh", "destroy", "scale")
    },
    ("llm.complete", "timeout_s"): lambda _: st.sampled_from([0.0, 5.0, 30.0]),
}


_validators: dict[int, tuple[dict[str, Any], jsonschema.Draft202012Validator]] = {}


def fits(schema: dict[str, Any], value: Value) -> bool:
    """Whether ``value`` is valid against ``schema`` (Draft 2020-12; one validator per
    schema, kept with it)."""
    kept = _validators.get(id(schema))
    if kept is None or kept[0] is not schema:
        kept = _validators[id(schema)] = (schema, jsonschema.Draft202012Validator(schema))
    return kept[1].is_valid(value)


def valid(target: Target, places: Places) -> Strategy[dict[str, Any]]:
    """Values of the target's published request schema (steered fields replaced)."""
    steered = {
        name: make(places)
        for (target_id, name), make in STEERED.items()
        if target_id == target.declared.id
    }
    base = from_schema(target.schema)
    if not steered:
        return base

    def steer(value: dict[str, Any]) -> Strategy[dict[str, Any]]:
        fields = {k: s for k, s in steered.items() if k in value}
        return st.fixed_dictionaries(fields).map(lambda chosen: {**value, **chosen})

    return base.flatmap(steer)


# ---- schema walking ---------------------------------------------------------------------


def resolve(schema: dict[str, Any], node: dict[str, Any]) -> dict[str, Any]:
    """``node`` with a local ``$ref`` followed (once per level) and ``anyOf`` left as is."""
    while isinstance(node.get("$ref"), str):
        name = node["$ref"].removeprefix("#/$defs/")
        node = schema.get("$defs", {}).get(name, {})
    return node


def root(schema: dict[str, Any]) -> dict[str, Any]:
    return resolve(schema, schema)


def variants(schema: dict[str, Any], node: dict[str, Any]) -> list[dict[str, Any]]:
    """The alternatives of ``node`` (its ``anyOf`` members, or itself), resolved."""
    node = resolve(schema, node)
    members = node.get("anyOf") or node.get("oneOf")
    return [resolve(schema, m) for m in members] if members else [node]


def properties(schema: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return root(schema).get("properties", {})


# ---- one thing wrong --------------------------------------------------------------------

_OTHER_TYPE = {
    "string": [0, True, None, [], {}],
    "integer": ["1", 1.5, None, [], True],
    "number": ["1.0", None, [], {}],
    "boolean": [0, "true", None],
    "array": ["x", 0, {}, None],
    "object": ["x", 0, [], None],
    "null": [0, "", []],
}


def _wrong_values(node: dict[str, Any]) -> list[Value]:
    kind = node.get("type")
    if isinstance(kind, str):
        return _OTHER_TYPE.get(kind, [None])
    if "enum" in node:
        return ["not-one-of-them", 7]
    return [[[]], float("nan")]


def _past_limits(node: dict[str, Any]) -> list[Value]:
    """Values just past each limit ``node`` states (and blank or NUL-holding strings)."""
    out: list[Value] = []
    if "maxLength" in node:
        out.append("x" * (node["maxLength"] + 1))
    if node.get("minLength", 0) >= 1:
        out.append("")
    if node.get("pattern"):
        # none of them names a place on this machine: a broken ``path`` must not be crawled
        out += ["   ", "\x00", "a b", "a:b?*", "\u2028"]
    if node.get("type") == "string":
        out += ["\x00", " \t\n"]
    for key, step in (("maximum", 1), ("exclusiveMaximum", 0), ("minimum", -1)):
        if key in node:
            out.append(node[key] + step)
    if "exclusiveMinimum" in node:
        out.append(node["exclusiveMinimum"])
    if node.get("type") in ("integer", "number"):
        out += [2**64, -(2**63) - 1, 1e308]
    if "maxItems" in node:
        item = node.get("items", {})
        out.append(
            ["x" if resolve({}, item).get("type") == "string" else 0] * (node["maxItems"] + 1)
        )
    if node.get("minItems", 0) >= 1:
        out.append([])
    return out


def deep(depth: int, leaf: Value = 0, kind: str = "list") -> Value:
    """A value nested ``depth`` containers deep, built without recursion."""
    value = leaf
    for _ in range(depth):
        value = [value] if kind == "list" else {"a": value}
    return value


def _mutations(schema: dict[str, Any], value: dict[str, Any]) -> list[Value]:
    """Every one-thing-wrong variant of ``value`` this module knows for ``schema``."""
    props = properties(schema)
    required = root(schema).get("required", [])
    out: list[Value] = [{k: v for k, v in value.items() if k != name} for name in required]
    for name, node in props.items():
        for alternative in variants(schema, node)[:1]:
            out += [{**value, name: wrong} for wrong in _wrong_values(alternative)]
            out += [{**value, name: bad} for bad in _past_limits(alternative)]
        out.append({**value, name: deep(MAX_NESTING + 1, kind="dict")})
    out.append({**value, "no_such_field": 1})
    out += [[value], "x", 0, None, True, deep(MAX_NESTING + 4)]
    return out


def broken(target: Target, places: Places) -> Strategy[Value]:
    """A valid value of the target's schema with one thing wrong (see the module docstring)."""
    return valid(target, places).flatmap(
        lambda value: st.sampled_from(_mutations(target.schema, value))
    )


# ---- raw bytes --------------------------------------------------------------------------

FIXED_JUNK: list[bytes] = [
    b"",
    b"{",
    b"}",
    b"[]",
    b"null",
    b'{"a":',
    b"\xff\xfe\xfd",
    b'{"x": "\xff\xfe"}',
    b'{"x": "\xc3\x28"}',
    b'{"x": "\\ud800"}',
    b'{"x": "\\udc00\\ud800"}',
    b"\x00" * 64,
    b'{"x": NaN}',
    b'{"x": Infinity}',
    b'{"x": 1e999999}',
    b'{"x": -1e999999}',
    b'{"x": 123456789012345678901234567890123456789}',
    b"\xef\xbb\xbf{}",  # a BOM
    b'{"a": 1, "a": 2}',
    b"[" * (MAX_NESTING + 1) + b"]" * (MAX_NESTING + 1),
    b"[" * 5_000 + b"]" * 5_000,
    b'{"a":' * 3_000 + b"0" + b"}" * 3_000,
    b"[" * 100_000,
]


def junk_for(target: Target) -> Strategy[bytes]:
    """Raw payloads for ``target``: random bytes and text, and the schema's own field names
    around invalid UTF-8 (the fixed nasties, :data:`FIXED_JUNK`, are sent to every endpoint
    as they are)."""
    names = sorted(properties(target.schema)) or ["x"]
    with_names = st.builds(
        lambda name, raw: b'{"' + name.encode() + b'": "' + raw + b'"}',
        st.sampled_from(names),
        st.binary(min_size=1, max_size=16).filter(_not_utf8),
    )
    return st.one_of(
        st.binary(max_size=512),
        with_names,
        st.text(max_size=64).map(lambda s: s.encode("utf-8", "surrogatepass")),
    )


def _not_utf8(raw: bytes) -> bool:
    try:
        raw.decode("utf-8")
    except UnicodeDecodeError:
        return b'"' not in raw and b"\\" not in raw
    return False


def near_limit(target: Target, size: int) -> bytes:
    """A JSON object of ``target`` about ``size`` bytes long: its first string field (or an
    unknown one) filled with text."""
    names = [n for n, node in properties(target.schema).items() if _is_string(target, node)]
    name = names[0] if names else "padding"
    shell = json.dumps({name: ""}).encode()
    return json.dumps({name: "x" * max(0, size - len(shell))}).encode()


def _is_string(target: Target, node: dict[str, Any]) -> bool:
    return any(v.get("type") == "string" for v in variants(target.schema, node))


def json_bytes(value: Value) -> bytes:
    """``value`` as JSON text; NaN and infinities as JSON has no words for them (Python's)."""
    return json.dumps(value, allow_nan=True).encode()
