"""Every request field of every endpoint states its limit in the schema it publishes.

A string has a ``maxLength`` (or is an enum, or a pattern that bounds it); an array has
``maxItems``; a number that sizes work (a wait, a count) has bounds. The few free-form
objects are listed in :data:`FREE_FORM` with what bounds them instead. No stack is needed:
the schemas are those the agents' endpoints publish (``EndpointSpec.metadata``).
"""

from __future__ import annotations

import json
import re
from typing import Any

import pytest

from bus.handlers import collect
from tests.fuzz.targets import AGENTS

#: (endpoint id, field) → what bounds it, since its schema cannot
FREE_FORM = {
    ("memory.store", "metadata"): "nesting (29 levels), the text byte limit and max_payload",
    ("memory.session.save", "context"): "nesting, the text byte limit and max_payload",
    ("llm.complete", "response_schema"): "nesting, max_payload; must be a valid JSON Schema",
}
#: a pattern whose every match is bounded: anchored, and made of bounded repetitions
_BOUNDED = re.compile(r"^\^.*\{\d+,\d+\}\)?\??\$$")


def _requests() -> list[tuple[str, dict[str, Any]]]:
    found = []
    for cls in AGENTS:
        endpoints, _ = collect(cls)
        for spec in endpoints.values():
            schema = json.loads(spec.metadata()["request_schema"])
            found.append((f"{cls.name}.{spec.subject_tail}", schema))
    return found


def _unbounded(schema: dict[str, Any], node: dict[str, Any], where: str) -> list[str]:
    """Where under ``node`` a value has no stated limit."""
    if "$ref" in node:
        node = schema["$defs"][node["$ref"].removeprefix("#/$defs/")]
    problems: list[str] = []
    for member in node.get("anyOf", []):
        problems += _unbounded(schema, member, where)
    kind = node.get("type")
    if kind == "string" and "enum" not in node and "maxLength" not in node:
        if not _BOUNDED.match(node.get("pattern", "")):
            problems.append(f"{where}: string without maxLength")
    if kind == "array":
        if "maxItems" not in node:
            problems.append(f"{where}: array without maxItems")
        problems += _unbounded(schema, node.get("items", {}), f"{where}[]")
    if kind == "object":
        props = node.get("properties")
        if props is None:
            problems.append(f"{where}: free-form object")
        for name, child in (props or {}).items():
            problems += _unbounded(schema, child, f"{where}.{name}")
    return problems


@pytest.mark.parametrize(("endpoint", "schema"), _requests(), ids=[e for e, _ in _requests()])
def test_request_schema_states_every_limit(endpoint: str, schema: dict[str, Any]) -> None:
    problems = _unbounded(schema, schema, "$")
    allowed = {f"$.{field}: free-form object" for (e, field) in FREE_FORM if e == endpoint}
    assert [p for p in problems if p not in allowed] == []
