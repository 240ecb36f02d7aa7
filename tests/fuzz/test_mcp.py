"""Fuzzing every public endpoint through MCP: the official SDK client's ``tools/call`` over
streamable HTTP, and raw JSON-RPC junk posted to ``/mcp``.

Tool arguments are drawn from each tool's ``inputSchema`` as ``tools/list`` gives it, valid
and with one thing wrong (objects only: ``arguments`` is an object in MCP). The rules and
the commands are those of :mod:`tests.fuzz.test_bus`.
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from typing import Any

import httpx
import httpx2
import pytest
from hypothesis import given
from hypothesis import strategies as st
from mcp.client.session import ClientSession
from mcp.client.streamable_http import streamable_http_client

from tests.edge.clients import INITIALIZE, MCP_HEADERS
from tests.fuzz.aftermath import settle
from tests.fuzz.channels import REPLY_BOUND_S, over_mcp
from tests.fuzz.conftest import examples, fuzz_settings
from tests.fuzz.inputs import FIXED_JUNK, Places, broken, valid
from tests.fuzz.judging import Judge
from tests.fuzz.stack import Stack
from tests.fuzz.targets import Declared, Target, declared
from tests.fuzz.verdicts import Reply, Tally, Writes

pytestmark = pytest.mark.fuzz

PUBLIC = declared(public_only=True)
#: JSON-RPC error codes that refuse the message itself (parse error … invalid params)
REFUSALS = {-32700, -32600, -32601, -32602}


@asynccontextmanager
async def patient_session(url: str, token: str) -> AsyncIterator[ClientSession]:
    """An SDK session like :func:`tests.edge.clients.http_session`, whose HTTP client waits
    as long as a fuzz input may take (a slower answer closes the SDK's session)."""
    headers = {"Authorization": f"Bearer {token}"}
    async with (
        httpx2.AsyncClient(headers=headers, timeout=REPLY_BOUND_S) as client,
        streamable_http_client(url, http_client=client) as (read, write),
        ClientSession(read, write) as opened,
    ):
        await opened.initialize()
        yield opened


@pytest.fixture(scope="module")
def session(stack: Stack) -> Iterator[ClientSession]:
    with stack.portal.wrap_async_context_manager(
        patient_session(f"{stack.edge_url}/mcp", stack.token)
    ) as opened:
        yield opened


@pytest.fixture(scope="module")
def tool_schemas(stack: Stack, session: ClientSession) -> dict[str, dict[str, Any]]:
    listed = stack.call(session.list_tools)
    return {tool.name: tool.input_schema for tool in listed.tools}


@pytest.mark.parametrize("endpoint", PUBLIC, ids=lambda d: d.id)
def test_mcp_tool_answers_schema_inputs_by_the_rules(
    endpoint: Declared,
    stack: Stack,
    session: ClientSession,
    tool_schemas: dict[str, dict[str, Any]],
    targets: dict[str, Target],
    places: Places,
    tally: Tally,
    writes: Writes,
) -> None:
    target = targets[endpoint.id]
    assert target.tool in tool_schemas, f"{target.tool} is not listed"
    target = dataclasses.replace(target, schema=tool_schemas[target.tool])
    judge = Judge("mcp", target, target.schema, tally, writes)
    objects = st.one_of(valid(target, places), broken(target, places)).filter(
        lambda value: isinstance(value, dict)
    )

    def send(value: Any) -> Reply:
        return stack.call(over_mcp, session, target.tool, value)

    @fuzz_settings(2 * examples())
    @given(objects)
    def one(value: dict[str, Any]) -> None:
        judge.value(value, send)

    one()
    problems = judge.problems + settle(stack, writes, tally)
    assert not problems, "\n".join(problems)


def _rpc_reply(response: httpx.Response) -> Reply:
    """A raw ``/mcp`` answer as a Reply: JSON-RPC refusals are 400s, internal errors 500s."""
    if response.status_code != 200:
        body = response.json() if response.content else {}
        error = body.get("error", "")
        text = error.get("message", "") if isinstance(error, dict) else str(error)
        return Reply(response.status_code, text, response.content)
    body = response.json()
    error = body.get("error") if isinstance(body, dict) else None
    if not error:
        return Reply(200, "", response.content)
    status = 400 if error.get("code") in REFUSALS else 500
    return Reply(status, str(error.get("message", "")), response.content)


def test_mcp_endpoint_refuses_raw_junk(
    stack: Stack, targets: dict[str, Target], tally: Tally, writes: Writes
) -> None:
    """Junk bodies, and ``tools/call`` envelopes around junk arguments, posted to ``/mcp`` in
    an initialized session."""
    headers = {"Authorization": f"Bearer {stack.token}", **MCP_HEADERS}
    target = targets["memory.store"]
    judge = Judge("mcp", target, target.schema, tally, None)
    with httpx.Client(base_url=stack.edge_url, headers=headers, timeout=REPLY_BOUND_S) as client:
        opened = client.post("/mcp", json=INITIALIZE)
        assert opened.status_code == 200
        client.headers["mcp-session-id"] = opened.headers["mcp-session-id"]
        client.headers["mcp-protocol-version"] = INITIALIZE["params"]["protocolVersion"]

        def send(payload: bytes) -> Reply:
            response = client.post(
                "/mcp", content=payload, headers={"Content-Type": "application/json"}
            )
            return _rpc_reply(response)

        envelopes = [
            json.dumps(
                {"jsonrpc": "2.0", "id": n, "method": "tools/call", "params": params}
            ).encode()
            for n, params in enumerate(
                [
                    {"name": target.tool, "arguments": "x"},
                    {"name": target.tool, "arguments": [1]},
                    {"name": target.tool},
                    {"name": 7, "arguments": {}},
                    {"name": "no_such_tool", "arguments": {}},
                    {"name": "../" * 50, "arguments": {}},
                    {"arguments": {}},
                    None,
                ]
            )
        ]
        for payload in [*FIXED_JUNK, *envelopes]:
            judge.raw(payload, send)
    problems = judge.problems + settle(stack, writes, tally)
    assert not problems, "\n".join(problems)
