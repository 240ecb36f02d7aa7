"""The fast acceptance check never accepts what jsonschema rejects, and accepts valid requests."""

from __future__ import annotations

import random
from typing import Annotated, Any, Literal

import jsonschema
import msgspec
import pytest

from agents.memory import MemoryAgent
from edge.precheck import compile_check
from edge.schema import InputValidator, object_schema


class Inner(msgspec.Struct, kw_only=True):
    name: Annotated[str, msgspec.Meta(min_length=1, max_length=8, pattern="^[a-z]+$")]
    weight: Annotated[float, msgspec.Meta(gt=0, lt=10)] = 1.0


class Everything(msgspec.Struct, kw_only=True):
    count: Annotated[int, msgspec.Meta(ge=1, le=100)]
    ratio: float = 0.5
    flag: bool = False
    mode: Literal["fast", "slow"] = "fast"
    tags: Annotated[list[str], msgspec.Meta(max_length=3)] = []
    scores: dict[str, int] = {}
    inner: Inner | None = None
    inners: list[Inner] = []
    maybe: int | str | None = None


def request_schemas() -> dict[str, dict[str, Any]]:
    schemas = {
        f"memory.{spec.name}": object_schema(msgspec.json.schema(spec.request_type))
        for spec in MemoryAgent._endpoints.values()
    }
    schemas["everything"] = object_schema(msgspec.json.schema(Everything))
    return schemas


SCHEMAS = request_schemas()
ODD_VALUES: list[Any] = [
    None, True, False, 0, 1, -1, 7, 1.0, 2.5, -0.0, 10**20, "", "a", "abc", "ABC", "x" * 300,
    [], [1], ["a", "b"], ["a", "b", "c", "d"], {}, {"a": 1}, {"name": "ok"},
]  # fmt: skip


def conforming(schema: dict[str, Any], rng: random.Random) -> Any:
    """A value that fits ``schema`` (a best effort: the oracle decides)."""
    if "anyOf" in schema:
        return conforming(rng.choice(schema["anyOf"]), rng)
    if "enum" in schema:
        return rng.choice(schema["enum"])
    kind = schema.get("type")
    if kind == "object":
        props = schema.get("properties", {})
        return {
            k: conforming(v, rng)
            for k, v in props.items()
            if rng.random() < 0.7 or k in schema.get("required", [])
        }
    if kind == "array":
        return [conforming(schema.get("items", {}), rng) for _ in range(rng.randint(0, 2))]
    if kind == "string":
        return rng.choice(["abc", "q", "hello world"])
    if kind == "integer":
        return rng.randint(int(schema.get("minimum", 0)), int(schema.get("maximum", 50)))
    if kind == "number":
        return rng.uniform(schema.get("exclusiveMinimum", 0) + 0.01, 5)
    if kind == "boolean":
        return rng.random() < 0.5
    return None  # fmt: skip


def mutated(value: Any, rng: random.Random) -> Any:
    """``value`` with some parts replaced by odd values, keys dropped or added."""
    if isinstance(value, dict):
        out = {
            k: (mutated(v, rng) if rng.random() < 0.8 else rng.choice(ODD_VALUES))
            for k, v in value.items()
        }
        if out and rng.random() < 0.2:
            out.pop(rng.choice(list(out)))
        if rng.random() < 0.15:
            out[rng.choice(["extra", "count", "text", "k"])] = rng.choice(ODD_VALUES)
        return out
    if isinstance(value, list):
        return [mutated(v, rng) for v in value] + (
            [rng.choice(ODD_VALUES)] if rng.random() < 0.2 else []
        )
    return rng.choice(ODD_VALUES) if rng.random() < 0.3 else value  # fmt: skip


@pytest.mark.parametrize("name", sorted(SCHEMAS), ids=sorted(SCHEMAS))
def test_precheck_never_accepts_what_jsonschema_rejects(name: str) -> None:
    schema = SCHEMAS[name]
    check = compile_check(schema)
    oracle = jsonschema.Draft202012Validator(schema)
    rng = random.Random(name)
    samples = [conforming(schema, rng) for _ in range(300)]
    samples += [mutated(s, rng) for s in samples for _ in range(3)] + ODD_VALUES
    wrongly_accepted = [v for v in samples if check(v) and not oracle.is_valid(v)]
    valid = [v for v in samples if oracle.is_valid(v)]
    accepted = [v for v in valid if check(v)]
    assert check is not None
    assert wrongly_accepted == []
    assert len(valid) > 100  # the samples exercise the accepting side too
    assert accepted == valid  # on this subset the check is exact, so jsonschema is rarely run


@pytest.mark.parametrize(
    ("schema", "value", "expected"),
    [
        ({"type": "integer"}, 3.0, True),  # JSON Schema: 3.0 is an integer
        ({"type": "integer"}, True, False),  # but a boolean is not
        ({"type": "number"}, False, False),
        ({"minimum": 1}, True, True),  # bounds skip non-numbers, booleans included
        ({"properties": {"a": {}}, "additionalProperties": False}, {"b": 1}, False),
        ({"type": "object", "additionalProperties": {"type": "string"}}, {"b": 1}, False),
        ({"enum": ["a", "b"]}, "c", False),
        ({"pattern": "^a"}, "ba", False),
        ({"maxLength": 2}, "abc", False),
        ({"maxItems": 1}, [1, 2], False),
    ],
    ids=["int-float", "int-bool", "num-bool", "min-bool", "no-extra", "extra-typed",
         "enum", "pattern", "max-length", "max-items"],
)  # fmt: skip
def test_precheck_follows_json_schema_edge_cases(
    schema: dict[str, Any], value: Any, expected: bool
) -> None:
    check = compile_check(schema)
    assert check is not None
    assert check(value) is expected
    assert jsonschema.Draft202012Validator(schema).is_valid(value) is expected


@pytest.mark.parametrize(
    "schema",
    [
        {"$ref": "#/$defs/Node", "$defs": {"Node": {"type": "object"}}},
        {"type": "array", "prefixItems": [{"type": "string"}]},
        {"oneOf": [{"type": "string"}]},
        {"enum": [1, True]},
        {"type": "object", "patternProperties": {"^x": {}}},
    ],
    ids=["ref", "prefix-items", "one-of", "non-string-enum", "pattern-properties"],
)
def test_precheck_declines_schemas_outside_its_subset(schema: dict[str, Any]) -> None:
    assert compile_check(schema) is None


def test_validator_names_the_field_when_the_precheck_rejects() -> None:
    validator = InputValidator(SCHEMAS["everything"])
    assert validator.problem({"count": 5}) is None
    assert validator.problem({"count": 0}) == "$.count: 0 is less than the minimum of 1"
    assert validator.problem({"count": 1.0}) is None  # 1.0 is an integer to JSON Schema
