"""The NATS service API reply schemas (``io.nats.micro.v1.*``), as JSON Schema documents.

Written from the published schemas' requirements: the fields ``nats micro`` relies on,
their types and patterns. Metadata maps are string to string.
"""

from __future__ import annotations

from typing import Any

NAME = {"type": "string", "pattern": "^[a-zA-Z0-9_-]+$", "minLength": 1}
SEMVER = {
    "type": "string",
    "pattern": (
        r"^(0|[1-9]\d*)\.(0|[1-9]\d*)\.(0|[1-9]\d*)"
        r"(?:-[0-9A-Za-z.-]+)?(?:\+[0-9A-Za-z.-]+)?$"
    ),
}
METADATA = {
    "oneOf": [{"type": "object", "additionalProperties": {"type": "string"}}, {"type": "null"}]
}
INT64 = {"type": "integer", "minimum": -(2**63) + 1, "maximum": 2**63 - 1}
IDENTITY = {"name": NAME, "id": {"type": "string", "minLength": 1}, "version": SEMVER}


def _reply(type_name: str, required: list[str], **properties: Any) -> dict[str, Any]:
    return {
        "type": "object",
        "required": ["type", "name", "id", "version", *required],
        "properties": {
            "type": {"type": "string", "const": f"io.nats.micro.v1.{type_name}"},
            **IDENTITY,
            "metadata": METADATA,
            **properties,
        },
    }


PING = _reply("ping_response", [])
INFO = _reply(
    "info_response",
    ["description"],
    description={"type": "string"},
    endpoints={
        "type": "array",
        "items": {
            "type": "object",
            "required": ["name", "subject"],
            "properties": {
                "name": NAME,
                "subject": {"type": "string", "minLength": 1},
                "queue_group": {"type": "string"},
                "metadata": METADATA,
            },
        },
    },
)
STATS = _reply(
    "stats_response",
    ["started", "endpoints"],
    started={"type": "string", "format": "date-time"},
    endpoints={
        "type": "array",
        "items": {
            "type": "object",
            "required": [
                "name",
                "subject",
                "num_requests",
                "num_errors",
                "last_error",
                "processing_time",
                "average_processing_time",
            ],
            "properties": {
                "name": NAME,
                "subject": {"type": "string", "minLength": 1},
                "num_requests": INT64,
                "num_errors": INT64,
                "last_error": {"type": "string"},
                "processing_time": INT64,
                "average_processing_time": INT64,
                "data": {"type": "object"},
            },
        },
    },
)
