"""The edge's pure parts: scopes, allow-lists, rate buckets, schema inlining, validation."""

from __future__ import annotations

from typing import Annotated, Any, Literal

import msgspec
import pytest

from edge.access import Principal, check_pattern, check_scope
from edge.limits import RateLimiter
from edge.schema import InputValidator, closed, inline_refs, object_schema


@pytest.mark.parametrize(
    ("scopes", "service", "endpoint", "access", "allowed"),
    [
        (("*",), "memory", "store", "", True),
        (("memory",), "memory", "store", "", True),
        (("memory:*",), "memory", "store", "", True),
        (("memory:search",), "memory", "search", "", True),
        (("memory:search",), "memory", "store", "", False),
        (("memory:read",), "memory", "search", "read", True),
        (("memory:read",), "memory", "store", "", False),
        (("echo",), "memory", "search", "", False),
        ((), "memory", "search", "", False),
    ],
    ids=[
        "all",
        "service",
        "service-star",
        "endpoint",
        "other-endpoint",
        "read-class",
        "read-class-write",
        "other-service",
        "none",
    ],
)
def test_principal_scopes(
    scopes: tuple[str, ...], service: str, endpoint: str, access: str, allowed: bool
) -> None:
    assert Principal("t", scopes=scopes).may_call(service, endpoint, access) is allowed


@pytest.mark.parametrize("scope", ["", "a:b:c", "mem ory", "*:x", "a:", "a.b"])
def test_bad_scopes_are_refused(scope: str) -> None:
    with pytest.raises(ValueError, match="must be"):
        check_scope(scope)


@pytest.mark.parametrize("pattern", ["", "a b", "x;rm", "é"])
def test_bad_tool_patterns_are_refused(pattern: str) -> None:
    with pytest.raises(ValueError, match="tool pattern"):
        check_pattern(pattern)


def test_tool_patterns_are_shell_style() -> None:
    principal = Principal("t", tools=("memory_*", "echo_say"))
    assert principal.lists("memory_search")
    assert principal.lists("echo_say")
    assert not principal.lists("echo_crash")
    assert Principal("t").lists("anything")  # no patterns: every tool


def test_rate_limiter_allows_the_burst_then_asks_to_wait() -> None:
    limiter = RateLimiter(rate_per_s=2.0, burst=3)
    waits = [limiter.acquire("a", now=10.0) for _ in range(4)]
    assert waits[:3] == [0.0, 0.0, 0.0]
    assert waits[3] == pytest.approx(0.5)
    assert RateLimiter.retry_after(waits[3]) == "1"
    assert limiter.acquire("b", now=10.0) == 0.0  # buckets are per key
    assert limiter.acquire("a", now=10.5) == 0.0  # refilled at the rate


class Leaf(msgspec.Struct):
    name: str


class Tree(msgspec.Struct):
    """Refers to itself: its definition must stay under $defs."""

    leaf: Leaf
    children: list[Tree] = []


class Holder(msgspec.Struct):
    tree: Tree


def test_inline_refs_inlines_plain_and_keeps_recursive_definitions() -> None:
    schema = inline_refs(msgspec.json.schema(Holder))
    tree = schema["properties"]["tree"]
    assert schema["type"] == "object"
    assert tree["properties"]["leaf"]["properties"]["name"] == {"type": "string"}
    assert tree["properties"]["children"]["items"] == {"$ref": "#/$defs/Tree"}
    assert set(schema["$defs"]) == {"Tree"}
    assert "$ref" not in str(schema["$defs"]["Tree"]["properties"]["leaf"])


def test_object_schema_wraps_a_union_root() -> None:
    class A(msgspec.Struct, tag=True):
        a: int

    class B(msgspec.Struct, tag=True):
        b: int

    schema = object_schema(msgspec.json.schema(A | B))
    assert schema["type"] == "object"
    assert "anyOf" in schema


@pytest.mark.parametrize(
    ("value", "message"),
    [
        ({"tree": {"leaf": {"name": 1}}}, "$.tree.leaf.name: must be string"),
        ({"tree": {}}, "$.tree.leaf: required field is missing"),
        (
            {"tree": {"leaf": {"name": "x"}, "children": [{"leaf": {}}]}},
            "$.tree.children[0].leaf.name: required field is missing",
        ),
        ({"tree": {"leaf": {"name": "x"}, "colour": "red"}}, "$.tree.colour: unknown field"),
        ({"tree": {"leaf": {"name": "x"}, "a b": 1}}, "$.tree[…]: unknown field"),
        ({"tree": {"leaf": {"name": "x"}}}, None),
    ],
    ids=["wrong-type", "missing", "nested-in-list", "unknown-field", "odd-unknown-key", "valid"],
)
def test_validator_names_the_field(value: dict[str, Any], message: str | None) -> None:
    validator = InputValidator(closed(inline_refs(msgspec.json.schema(Holder))))
    assert validator.problem(value) == message


class Limited(msgspec.Struct):
    kind: Literal["code", "doc"] = "doc"
    text: Annotated[str, msgspec.Meta(min_length=1, max_length=8, pattern=r"\S")] = "x"
    k: Annotated[int, msgspec.Meta(ge=1, le=100)] = 10
    free: dict[str, Any] = {}


@pytest.mark.parametrize(
    ("value", "message"),
    [
        ({"kind": "sk-live-SECRET"}, "$.kind: must be one of code, doc"),
        ({"text": "sk-live-SECRET-long"}, "$.text: must be at most 8 characters"),
        ({"text": ""}, "$.text: must not be empty"),
        ({"text": "   "}, "$.text: must not be blank"),
        ({"k": 1000}, "$.k: must be at most 100"),
        ({"k": "sk-live-SECRET"}, "$.k: must be integer"),
    ],
    ids=["enum", "too-long", "empty", "blank", "too-big", "wrong-type"],
)
def test_validator_states_the_rule_and_never_the_value(value: dict[str, Any], message: str) -> None:
    validator = InputValidator(closed(object_schema(msgspec.json.schema(Limited))))
    problem = validator.problem(value)
    assert problem == message
    assert "SECRET" not in problem


def test_closed_schemas_keep_free_form_objects_open() -> None:
    schema = closed(object_schema(msgspec.json.schema(Limited)))
    assert schema["additionalProperties"] is False
    assert "additionalProperties" not in schema["properties"]["free"]
    assert InputValidator(schema).problem({"free": {"anything": 1}}) is None


def test_validator_message_is_bounded() -> None:
    validator = InputValidator({"type": "object", "properties": {"t": {"type": "integer"}}})
    problem = validator.problem({"t": "x" * 10_000})
    assert problem is not None and len(problem) <= 200


@pytest.mark.parametrize(
    ("env", "message"),
    [
        (
            {"SOPHIA_EDGE_MAX_BODY_BYTES": "10"},
            "SOPHIA_EDGE_MAX_BODY_BYTES: must be a whole number from 1024 to 67108864",
        ),
        (
            {"SOPHIA_EDGE_CALL_TIMEOUT_S": "0"},
            "SOPHIA_EDGE_CALL_TIMEOUT_S: must be a number greater than 0 and at most 3600",
        ),
        ({"SOPHIA_EDGE_TOOLS": " , "}, "SOPHIA_EDGE_TOOLS: must name at least one pattern"),
        (
            {"SOPHIA_EDGE_DISCOVERY_WINDOW_S": "5"},
            "SOPHIA_EDGE_DISCOVERY_WINDOW_S: must be below edge_discovery_s",
        ),
        ({"SOPHIA_EDGE_RATE_BURST": "many"}, "SOPHIA_EDGE_RATE_BURST: Expected `int`, got `str`"),
    ],
    ids=["body-too-small", "timeout-zero", "no-tools", "window-too-long", "not-a-number"],
)
def test_edge_settings_name_the_variable(env: dict[str, str], message: str) -> None:
    from bus.config import load
    from bus.errors import ConfigError
    from edge.config import EdgeSettings

    with pytest.raises(ConfigError) as caught:
        load(EdgeSettings, env)
    assert caught.value.description.startswith(message)
