"""The HTTP API's OpenAPI 3.1 document, generated from the same endpoint schemas as the tools.

Each public endpoint is ``POST /v1/<service>/<endpoint>``; its msgspec ``$defs`` become
``components/schemas`` named ``<service>.<Type>``, so two services may both have a
``SearchRequest``. Request types are closed (``additionalProperties: false``) and without the
edge's own ``progress_subject``, as the edge validates them; a type that is also part of a
reply stays open, since replies may gain fields. A memory endpoint that takes a namespace says
how namespaces work in its description and declares ``?namespace=`` and ``Sophia-Namespace``.
"""

from __future__ import annotations

from typing import Any

from bus.limits import NAMESPACE_CHARS
from edge.catalog import Endpoint, without_progress
from edge.namespaces import described, takes_namespace
from edge.schema import closed

_DEFS = "#/$defs/"
ERROR_STATUSES = {
    "400": "The body does not fit the endpoint's schema",
    "401": "No valid bearer token",
    "403": "The token's scopes do not reach this endpoint",
    "404": "Not found",
    "413": "Body too large",
    "429": "Rate limit exceeded; see Retry-After",
    "500": "Internal error",
    "503": "Service unavailable",
    "504": "The service did not answer in time",
}


NAMESPACE_PARAMETERS = [
    {
        "name": name,
        "in": where,
        "required": False,
        "description": "The namespace of a request whose body names none (the body's wins; "
        "the query wins over the header).",
        "schema": {"type": "string", "maxLength": NAMESPACE_CHARS},
    }
    for name, where in (("namespace", "query"), ("Sophia-Namespace", "header"))
]


def _rewrite(node: Any, service: str) -> Any:
    if isinstance(node, list):
        return [_rewrite(item, service) for item in node]
    if not isinstance(node, dict):
        return node
    out = {}
    for key, value in node.items():
        if key == "$defs":
            continue
        if key == "$ref" and isinstance(value, str) and value.startswith(_DEFS):
            value = f"#/components/schemas/{service}.{value[len(_DEFS) :]}"
        out[key] = _rewrite(value, service)
    return out


def _register(
    schema: dict[str, Any], service: str, components: dict[str, Any], *, request: bool
) -> dict[str, Any]:
    root = str(schema.get("$ref", "")).removeprefix(_DEFS)
    for name, definition in schema.get("$defs", {}).items():
        key = f"{service}.{name}"
        if not request:
            components[key] = _rewrite(definition, service)
            continue
        if name == root:
            definition = without_progress(definition)
        components.setdefault(key, closed(_rewrite(definition, service)))
    return _rewrite(schema, service)


def _operation(endpoint: Endpoint, components: dict[str, Any]) -> dict[str, Any]:
    request = _register(endpoint.raw_request_schema, endpoint.service, components, request=True)
    response = _register(endpoint.raw_response_schema, endpoint.service, components, request=False)
    summary = (endpoint.description.splitlines() or [endpoint.tool_name])[0]
    responses: dict[str, Any] = {
        "200": {"description": "The reply", "content": {"application/json": {"schema": response}}}
    }
    responses.update({code: {"$ref": f"#/components/responses/E{code}"} for code in ERROR_STATUSES})
    operation: dict[str, Any] = {
        "operationId": endpoint.tool_name,
        "tags": [endpoint.service],
        "summary": summary[:120],
        "description": described(endpoint),
        "requestBody": {"required": True, "content": {"application/json": {"schema": request}}},
        "responses": responses,
    }
    if takes_namespace(endpoint):
        operation["parameters"] = NAMESPACE_PARAMETERS
    return operation


def _plain_get(summary: str) -> dict[str, Any]:
    body = {"application/json": {"schema": {"type": "object"}}}
    return {
        "get": {
            "summary": summary,
            "security": [],
            "responses": {
                "200": {"description": "Yes", "content": body},
                "503": {"description": "No", "content": body},
            },
        }
    }


def document(endpoints: list[Endpoint], version: str) -> dict[str, Any]:
    """The OpenAPI document for ``endpoints`` (public ones; callers filter)."""
    components: dict[str, Any] = {
        "Error": {
            "type": "object",
            "properties": {"error": {"type": "string"}, "code": {"type": "integer"}},
            "required": ["error", "code"],
        }
    }
    paths: dict[str, Any] = {
        "/healthz": _plain_get("The edge process is up"),
        "/readyz": _plain_get("NATS is connected and services have been seen"),
    }
    for endpoint in endpoints:
        path = f"/v1/{endpoint.service}/{endpoint.name}"
        paths[path] = {"post": _operation(endpoint, components)}
    error = {"application/json": {"schema": {"$ref": "#/components/schemas/Error"}}}
    return {
        "openapi": "3.1.0",
        "info": {"title": "Sophia HTTP API", "version": version},
        "paths": paths,
        "components": {
            "schemas": components,
            "responses": {
                f"E{code}": {"description": text, "content": error}
                for code, text in ERROR_STATUSES.items()
            },
            "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer"}},
        },
        "security": [{"bearer": []}],
    }
