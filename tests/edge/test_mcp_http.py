"""MCP over streamable HTTP with the SDK's own client: tools from the bus, calls, changes."""

from __future__ import annotations

import json

import anyio
import httpx
import mcp_types as types
import pytest

from bus import Settings
from tests.edge.agents import ExtraAgent, SayRequest
from tests.edge.clients import MCP_HEADERS, Notifications, http_session
from tests.edge.conftest import MakeToken, RunningEdge, wait_token

pytestmark = pytest.mark.anyio


def by_name(result: types.ListToolsResult) -> dict[str, types.Tool]:
    return {tool.name: tool for tool in result.tools}


async def test_mcp_http_lists_public_endpoints_as_namespaced_tools(
    edge: RunningEdge, token: str
) -> None:
    async with http_session(edge.mcp, token) as session:
        tools = by_name(await session.list_tools())
    assert set(tools) == {"echo_say", "echo_find", "echo_crash", "echo_traced", "echo_slow"}
    say = tools["echo_say"]
    assert say.description and say.description.startswith("Return the text repeated")
    assert say.input_schema["type"] == "object"
    assert say.input_schema["required"] == ["text"]
    assert say.input_schema["properties"]["text"] == {"type": "string"}
    assert say.output_schema and say.output_schema["properties"]["text"] == {"type": "string"}
    assert "progress_subject" not in tools["echo_slow"].input_schema["properties"]  # the edge's


async def test_mcp_http_input_schema_has_references_inlined(edge: RunningEdge, token: str) -> None:
    async with http_session(edge.mcp, token) as session:
        find = by_name(await session.list_tools())["echo_find"]
    assert "$defs" not in find.input_schema
    assert "$ref" not in json.dumps(find.input_schema)
    filters = find.input_schema["properties"]["filters"]
    assert filters["properties"]["tags"]["type"] == "array"


async def test_mcp_http_call_tool_returns_the_reply(edge: RunningEdge, token: str) -> None:
    async with http_session(edge.mcp, token) as session:
        result = await session.call_tool("echo_say", {"text": "ab", "times": 3})
    assert not result.is_error
    assert result.structured_content == {"text": "ababab"}
    assert isinstance(result.content[0], types.TextContent)
    assert json.loads(result.content[0].text) == {"text": "ababab"}


@pytest.mark.parametrize(
    ("tool", "arguments", "code", "fragment"),
    [
        ("echo_say", {"text": 5}, 400, "$.text"),
        ("echo_find", {"query": "zz"}, 404, "nothing matches"),
        ("echo_crash", {"text": "x"}, 500, "internal error"),
    ],
    ids=["invalid-arguments", "agent-404", "agent-500"],
)
async def test_mcp_http_tool_errors_are_results_with_code(
    edge: RunningEdge, token: str, tool: str, arguments: dict[str, object], code: int, fragment: str
) -> None:
    async with http_session(edge.mcp, token) as session:
        result = await session.call_tool(tool, arguments)
        after = await session.call_tool("echo_say", {"text": "ok"})
    assert result.is_error
    assert result.structured_content is not None
    assert result.structured_content["code"] == code
    assert fragment in result.structured_content["error"]
    assert "hunter2" not in str(result)
    assert after.structured_content == {"text": "ok"}


async def test_mcp_http_tools_appear_and_vanish_with_their_agent(
    edge: RunningEdge, token: str, settings: Settings
) -> None:
    notifications = Notifications()
    async with http_session(edge.mcp, token, notifications) as session:
        assert "extra_ping" not in by_name(await session.list_tools())
        async with anyio.create_task_group() as tg:
            extra = await tg.start(ExtraAgent(settings).run)
            await notifications.wait_for("notifications/tools/list_changed")
            assert "extra_ping" in by_name(await session.list_tools())
            result = await session.call_tool("extra_ping", {})
            extra.stop()
        await notifications.wait_for("notifications/tools/list_changed", count=2)
        assert "extra_ping" not in by_name(await session.list_tools())
    assert result.structured_content == {"text": "pong"}


async def test_mcp_http_allow_list_in_url_keeps_tool_count_small(
    edge: RunningEdge, token: str
) -> None:
    async with http_session(f"{edge.mcp}?tools=echo_say,echo_f*", token) as session:
        names = set(by_name(await session.list_tools()))
        with pytest.raises(Exception, match="Unknown tool: echo_crash"):
            await session.call_tool("echo_crash", {"text": "x"})
    assert names == {"echo_say", "echo_find"}


async def test_mcp_http_token_scopes_and_tool_patterns_limit_tools(
    edge: RunningEdge, make_token: MakeToken
) -> None:
    token = await make_token("narrow", scopes=["echo:say", "echo:find"], tools=["echo_s*"])
    await wait_token(edge, token)
    async with http_session(edge.mcp, token) as session:
        names = set(by_name(await session.list_tools()))
        with pytest.raises(Exception, match="outside the scopes of token 'narrow'"):
            await session.call_tool("echo_slow", {})
    assert names == {"echo_say"}


async def test_mcp_http_progress_notifications_come_from_bus_events(
    edge: RunningEdge, token: str
) -> None:
    seen: list[tuple[float, float | None, str | None]] = []

    async def on_progress(progress: float, total: float | None, message: str | None) -> None:
        seen.append((progress, total, message))

    async with http_session(edge.mcp, token) as session:
        result = await session.call_tool("echo_slow", {"steps": 3}, progress_callback=on_progress)
    assert result.structured_content == {"steps": 3}
    assert seen == [(1, 3, "step 1"), (2, 3, "step 2"), (3, 3, "step 3")]


async def test_mcp_http_say_request_schema_matches_msgspec_closed(
    edge: RunningEdge, token: str
) -> None:
    import msgspec

    expected = msgspec.json.schema(SayRequest)["$defs"]["SayRequest"]
    async with http_session(edge.mcp, token) as session:
        say = by_name(await session.list_tools())["echo_say"]
        misspelled = await session.call_tool("echo_say", {"text": "a", "tmes": 2})
    assert say.input_schema == {**expected, "additionalProperties": False}
    assert misspelled.is_error
    assert misspelled.structured_content == {"error": "$.tmes: unknown field", "code": 400}


async def test_mcp_http_2026_envelope_needs_no_session(
    edge: RunningEdge, http: httpx.AsyncClient
) -> None:
    version = "2026-07-28"
    meta = {
        "io.modelcontextprotocol/protocolVersion": version,
        "io.modelcontextprotocol/clientCapabilities": {},
        "io.modelcontextprotocol/clientInfo": {"name": "modern", "version": "1"},
    }
    base = {**MCP_HEADERS, "MCP-Protocol-Version": version}
    listed = await http.post(
        "/mcp",
        json={"jsonrpc": "2.0", "id": 1, "method": "tools/list", "params": {"_meta": meta}},
        headers={**base, "Mcp-Method": "tools/list"},
    )
    called = await http.post(
        "/mcp",
        json={
            "jsonrpc": "2.0",
            "id": 2,
            "method": "tools/call",
            "params": {"name": "echo_say", "arguments": {"text": "now"}, "_meta": meta},
        },
        headers={**base, "Mcp-Method": "tools/call", "Mcp-Name": "echo_say"},
    )
    assert listed.status_code == 200, listed.text
    assert "mcp-session-id" not in listed.headers
    assert "echo_say" in {tool["name"] for tool in listed.json()["result"]["tools"]}
    assert called.json()["result"]["structuredContent"] == {"text": "now"}
