"""Endpoint JSON Schemas as MCP and OpenAPI need them, and input validation against them.

msgspec publishes a schema as ``{"$ref": "#/$defs/X", "$defs": {...}}``; MCP clients want the
object itself at the root, so references are inlined (recursive types keep a ``$defs`` of their
own). At the edge, where a person or an editor typed the input, every object with declared
properties closes them (``additionalProperties: false``), so a misspelled field is a 400
naming it instead of a call that silently runs on defaults; on the bus unknown fields stay
accepted, for schema evolution.

Validation runs once at the edge (``jsonschema``, Draft 2020-12) before anything reaches the
bus, and its messages name the field and the rule — never the value, which may be a secret.
"""

from __future__ import annotations

import copy
from collections.abc import Iterable
from typing import Any

import jsonschema
from jsonschema.exceptions import ValidationError, best_match

from bus.errors import safe_text
from bus.subjects import is_token

_DEFS_PREFIX = "#/$defs/"


def inline_refs(schema: dict[str, Any]) -> dict[str, Any]:
    """Return ``schema`` with every non-recursive ``#/$defs/`` reference replaced by its target.

    Guarantee: the result is an equivalent schema; definitions that refer to themselves stay
    under ``$defs`` at the root so the result remains valid.
    """
    defs = schema.get("$defs", {})
    kept: dict[str, Any] = {}

    def walk(node: Any, stack: tuple[str, ...]) -> Any:
        if isinstance(node, list):
            return [walk(item, stack) for item in node]
        if not isinstance(node, dict):
            return node
        ref = node.get("$ref")
        if isinstance(ref, str) and ref.startswith(_DEFS_PREFIX):
            name = ref[len(_DEFS_PREFIX) :]
            if name in stack or name not in defs:
                if name in defs and name not in kept:
                    kept[name] = None  # placeholder: filled once, below
                    kept[name] = walk(defs[name], (*stack, name))
                return node
            target = walk(defs[name], (*stack, name))
            extra = {k: walk(v, stack) for k, v in node.items() if k not in ("$ref", "$defs")}
            return {**target, **extra}
        return {k: walk(v, stack) for k, v in node.items() if k != "$defs"}

    result = walk(schema, ())
    if kept:
        result["$defs"] = kept
    return result


def object_schema(schema: dict[str, Any]) -> dict[str, Any]:
    """An inlined schema whose root is ``type: object``, as MCP tool schemas must be."""
    inlined = inline_refs(copy.deepcopy(schema))
    if inlined.get("type") != "object":
        inlined = {"type": "object", **inlined}
    return inlined


def closed(schema: Any) -> Any:
    """``schema`` with ``additionalProperties: false`` on every object that lists its
    properties and says nothing about others (free-form objects stay open)."""
    if isinstance(schema, list):
        return [closed(item) for item in schema]
    if not isinstance(schema, dict):
        return schema
    result = {key: closed(value) for key, value in schema.items()}
    if "properties" in result and "additionalProperties" not in result:
        result["additionalProperties"] = False
    return result


def field_path(parts: Iterable[Any]) -> str:
    """``$.filters.tags[0]`` for the path ``["filters", "tags", 0]``; a key that is not a
    plain name (it came from the caller) is shown as ``[…]``."""
    text = "$"
    for part in parts:
        if isinstance(part, int):
            text += f"[{part}]"
        else:
            text += f".{part}" if is_token(str(part)) and len(str(part)) <= 64 else "[…]"
    return text


def _shown(value: Any) -> str:
    return ", ".join(str(v) for v in value) if isinstance(value, list) else str(value)


def _rule(error: ValidationError) -> str:
    """What the schema asked of the value, in words, from the schema alone."""
    keyword, limit = error.validator, error.validator_value
    if keyword == "type":
        return f"must be {' or '.join(limit) if isinstance(limit, list) else limit}"
    if keyword in ("enum", "const"):
        return f"must be one of {_shown(limit)}" if keyword == "enum" else f"must be {limit}"
    if keyword == "minLength":
        return "must not be empty" if limit == 1 else f"must be at least {limit} characters"
    if keyword == "maxLength":
        return f"must be at most {limit} characters"
    if keyword == "pattern":
        return "must not be blank" if limit == r"\S" else f"must match the pattern {limit}"
    words = {
        "minimum": "must be at least",
        "maximum": "must be at most",
        "exclusiveMinimum": "must be greater than",
        "exclusiveMaximum": "must be less than",
        "minItems": "must have at least this many items:",
        "maxItems": "must have at most this many items:",
    }
    if keyword in words:
        return f"{words[keyword]} {limit}"
    return f"does not fit the schema ({keyword})"


def describe(error: ValidationError) -> str:
    """One line naming the field and the rule it broke, never the value it had."""
    path = list(error.absolute_path)
    instance = error.instance
    if error.validator == "required" and isinstance(instance, dict):
        missing = [f for f in error.validator_value if f not in instance]
        if missing:
            return safe_text(f"{field_path([*path, missing[0]])}: required field is missing")
    if error.validator == "additionalProperties" and isinstance(instance, dict):
        known = error.schema.get("properties", {})
        extra = sorted(str(k) for k in instance if k not in known)
        if extra:
            return safe_text(f"{field_path([*path, extra[0]])}: unknown field")
    return safe_text(f"{field_path(path)}: {_rule(error)}")


class InputValidator:
    """Checks a decoded request against one endpoint's request schema (built once)."""

    def __init__(self, schema: dict[str, Any]) -> None:
        cls = jsonschema.validators.validator_for(schema, default=jsonschema.Draft202012Validator)
        self._validator = cls(schema)

    def problem(self, value: Any) -> str | None:
        """``None`` when ``value`` fits; otherwise one line naming the first bad field."""
        if self._validator.is_valid(value):
            return None
        error = best_match(self._validator.iter_errors(value))
        return describe(error) if error is not None else "$: does not fit the schema"
