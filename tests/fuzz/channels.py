"""The three doors a fuzz input goes through, each turning what came back into a :class:`Reply`.

- the bus: a plain nats-py request to ``<prefix>.<service>.<endpoint>``; a service error is
  the ``Nats-Service-Error-Code`` header and its text;
- the edge's HTTP API: ``POST /v1/<service>/<endpoint>``; the status and ``{"error"}``;
- MCP: the official SDK client's ``tools/call``; a tool error is ``isError`` with
  ``{"error", "code"}``, a protocol error (unknown tool, invalid params) a 400, and an
  internal JSON-RPC error a 500.

Every wait is bounded by :data:`REPLY_BOUND_S`; no reply within it is a hang (status 0).
"""

from __future__ import annotations

import json
from typing import Any

import anyio
import httpx
import mcp_types as types
import nats.errors
from mcp import MCPError
from mcp.client.session import ClientSession
from nats.aio.client import Client

from bus.client import ERROR_CODE_HEADER, ERROR_HEADER
from tests.fuzz.verdicts import Reply

#: seconds an input may take before it counts as a hang (the edge's own call timeout is 30 s)
REPLY_BOUND_S = 45.0
MSGPACK_HEADERS = {"Content-Type": "application/msgpack"}


async def over_bus(
    nc: Client, subject: str, payload: bytes, headers: dict[str, str] | None = None
) -> Reply:
    """One request on the bus."""
    try:
        msg = await nc.request(subject, payload, timeout=REPLY_BOUND_S, headers=headers)
    except nats.errors.TimeoutError:
        return Reply(0)
    except nats.errors.NoRespondersError:
        return Reply(503, "no responders")
    code = (msg.headers or {}).get(ERROR_CODE_HEADER)
    if code is not None:
        return Reply(int(code), (msg.headers or {}).get(ERROR_HEADER, ""), msg.data)
    return Reply(200, "", msg.data)


def over_http(client: httpx.Client, path: str, payload: bytes) -> Reply:
    """One ``POST`` to the edge."""
    try:
        response = client.post(path, content=payload, headers={"Content-Type": "application/json"})
    except httpx.TimeoutException:
        return Reply(0)
    if response.status_code == 200:
        return Reply(200, "", response.content)
    return Reply(response.status_code, _error_text(response.content), response.content)


def _error_text(body: bytes) -> str:
    try:
        value = json.loads(body)
    except ValueError:
        return ""
    return str(value.get("error", "")) if isinstance(value, dict) else ""


async def over_mcp(session: ClientSession, tool: str, arguments: Any) -> Reply:
    """One ``tools/call`` through the SDK client."""
    try:
        with anyio.fail_after(REPLY_BOUND_S):
            result = await session.call_tool(tool, arguments)
    except TimeoutError:
        return Reply(0)
    except MCPError as exc:
        error = exc.error
        status = 500 if error.code == types.INTERNAL_ERROR else 400
        return Reply(status, error.message)
    if not isinstance(result, types.CallToolResult):
        return Reply(500, f"unexpected result {type(result).__name__}")
    text = "".join(c.text for c in result.content if isinstance(c, types.TextContent))
    if not result.is_error:
        return Reply(200, "", text.encode())
    body = json.loads(text)
    return Reply(int(body.get("code", 500)), str(body.get("error", "")), text.encode())
