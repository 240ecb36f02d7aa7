"""Structured output: ask for JSON against a schema, validate it, and say what to repair.

A model with the ``json_schema`` capability gets ``response_format: json_schema``; one with
only ``json_mode`` gets ``json_object`` and the schema in a system message. Either way the
answer is validated (``jsonschema``, Draft 2020-12) before it is returned as ``data``; an
invalid answer gets one repair attempt that quotes the validation error.
"""

from __future__ import annotations

import functools
import json
from typing import Any

import jsonschema
import msgspec

from adapters.llm.config import ModelSpec
from bus.errors import BadRequestError

MAX_QUOTED_ERROR = 600  # characters of the validation error quoted back to the model


class InvalidOutput(Exception):
    """The answer is not JSON, or not valid against the schema; the message says why."""


def check_schema(schema: dict[str, Any]) -> None:
    """Raises BadRequestError naming ``response_schema`` when it is not a JSON Schema."""
    try:
        _validator(_canonical(schema))
    except jsonschema.SchemaError:
        raise BadRequestError("response_schema: not a valid JSON Schema (Draft 2020-12)") from None


def response_format(spec: ModelSpec, schema: dict[str, Any], name: str) -> dict[str, Any]:
    if "json_schema" in spec.capabilities:
        return {"type": "json_schema", "json_schema": {"name": name, "schema": schema}}
    return {"type": "json_object"}


def instructions(spec: ModelSpec, schema: dict[str, Any]) -> dict[str, str] | None:
    """The system message that carries the schema, for a model without ``json_schema``."""
    if "json_schema" in spec.capabilities:
        return None
    text = json.dumps(schema, separators=(",", ":"), sort_keys=True)
    return {
        "role": "system",
        "content": "Answer with one JSON object only, valid against this JSON Schema: " + text,
    }


def parse(text: str, schema: dict[str, Any]) -> Any:
    """The answer as a validated object. Raises InvalidOutput."""
    body = _unfenced(text)
    try:
        value = json.loads(body)
    except ValueError as exc:
        raise InvalidOutput(f"not JSON: {exc}") from None
    error = jsonschema.exceptions.best_match(_validator(_canonical(schema)).iter_errors(value))
    if error is not None:
        where = "/".join(str(p) for p in error.absolute_path) or "(root)"
        raise InvalidOutput(f"at {where}: {error.message}")
    return value


def repair(
    messages: list[dict[str, str]], answer: str, error: InvalidOutput
) -> list[dict[str, str]]:
    """The messages of the repair attempt: the invalid answer and what is wrong with it."""
    why = str(error)[:MAX_QUOTED_ERROR]
    return [
        *messages,
        {"role": "assistant", "content": answer},
        {
            "role": "user",
            "content": "That answer is not valid against the schema ("
            + why
            + "). Reply again with only the corrected JSON object.",
        },
    ]


def _unfenced(text: str) -> str:
    """Models often wrap JSON in a Markdown fence; the object is what is inside it."""
    body = text.strip()
    if body.startswith("```"):
        body = body.split("\n", 1)[1] if "\n" in body else ""
        body = body.rsplit("```", 1)[0]
    return body.strip()


def _canonical(schema: dict[str, Any]) -> bytes:
    return msgspec.json.encode(schema, order="sorted")


@functools.lru_cache(maxsize=256)
def _validator(schema: bytes) -> jsonschema.protocols.Validator:
    loaded = json.loads(schema)
    cls = jsonschema.validators.validator_for(loaded, default=jsonschema.Draft202012Validator)
    cls.check_schema(loaded)
    return cls(loaded)
