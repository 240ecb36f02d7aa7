"""Endpoint JSON Schemas as MCP and OpenAPI need them, and input validation against them.

msgspec publishes a schema as ``{"$ref": "#/$defs/X", "$defs": {...}}``; MCP clients want the
object itself at the root, so references are inlined (recursive types keep a ``$defs`` of their
own). Validation runs before anything reaches the bus and names the offending field.
"""

from __future__ import annotations

import copy
from collections.abc import Iterable
from typing import Any

import jsonschema
from jsonschema.exceptions import ValidationError, best_match

from edge.precheck import compile_check

_DEFS_PREFIX = "#/$defs/"
MAX_MESSAGE = 200


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


def field_path(parts: Iterable[Any]) -> str:
    """``$.filters.tags[0]`` for the path ``["filters", "tags", 0]``."""
    text = "$"
    for part in parts:
        text += f"[{part}]" if isinstance(part, int) else f".{part}"
    return text


def _describe(error: ValidationError) -> str:
    if error.validator == "required" and isinstance(error.instance, dict):
        missing = [f for f in error.validator_value if f not in error.instance]
        if missing:
            return f"{field_path([*error.absolute_path, missing[0]])}: required field is missing"
    text = f"{field_path(error.absolute_path)}: {error.message}"
    return text if len(text) <= MAX_MESSAGE else text[: MAX_MESSAGE - 1] + "…"


class InputValidator:
    """Checks a decoded request against one endpoint's request schema (built once)."""

    def __init__(self, schema: dict[str, Any]) -> None:
        cls = jsonschema.validators.validator_for(schema, default=jsonschema.Draft202012Validator)
        self._validator = cls(schema)
        self._accepts = compile_check(schema) if cls is jsonschema.Draft202012Validator else None

    def problem(self, value: Any) -> str | None:
        """``None`` when ``value`` fits; otherwise one line naming the first bad field."""
        if self._accepts is not None and self._accepts(value):
            return None  # certainly valid; anything else is jsonschema's to judge
        if self._validator.is_valid(value):
            return None
        error = best_match(self._validator.iter_errors(value))
        return _describe(error) if error is not None else "$: does not fit the schema"
