"""Request schemas as the edge publishes them: ``/openapi.json`` for the HTTP API, ``tools/list``
for MCP. Both are closed (``additionalProperties: false``) and leave out the edge's own
``progress_subject``; they are what HTTP and MCP inputs are drawn from and judged against."""

from __future__ import annotations

from typing import Any

_COMPONENTS = "#/components/schemas/"


def _to_defs(node: Any) -> Any:
    if isinstance(node, list):
        return [_to_defs(item) for item in node]
    if not isinstance(node, dict):
        return node
    out = {}
    for key, value in node.items():
        if key == "$ref" and isinstance(value, str) and value.startswith(_COMPONENTS):
            value = "#/$defs/" + value.removeprefix(_COMPONENTS)
        out[key] = _to_defs(value)
    return out


def openapi_request_schemas(document: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """``{path: standalone JSON Schema}`` of every ``POST`` request body in ``document``:
    its component references rewritten to ``$defs`` of the schema itself, holding just the
    components it reaches."""
    defs = _to_defs(document.get("components", {}).get("schemas", {}))
    found = {}
    for path, item in document.get("paths", {}).items():
        post = item.get("post")
        if post is None:
            continue
        body = _to_defs(post["requestBody"]["content"]["application/json"]["schema"])
        found[path] = {**body, "$defs": _reached(body, defs)}
    return found


def _reached(node: Any, defs: dict[str, Any]) -> dict[str, Any]:
    """The definitions ``node`` refers to, directly or through other definitions."""
    reached: dict[str, Any] = {}
    stack = [node]
    while stack:
        current = stack.pop()
        if isinstance(current, list):
            stack.extend(current)
        elif isinstance(current, dict):
            ref = current.get("$ref")
            if isinstance(ref, str) and ref.startswith("#/$defs/"):
                name = ref.removeprefix("#/$defs/")
                if name not in reached and name in defs:
                    reached[name] = defs[name]
                    stack.append(defs[name])
            stack.extend(v for k, v in current.items() if k != "$ref")
    return reached
