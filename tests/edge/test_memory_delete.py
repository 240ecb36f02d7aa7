"""``memory_delete``: whoever may store a memory may remove it; a read-only token may not."""

from __future__ import annotations

import pytest
from mcp.shared.exceptions import MCPError

from tests.edge.clients import http_session
from tests.edge.conftest import MakeToken, RunningEdge, token_client, wait_token

pytestmark = pytest.mark.anyio


async def test_http_delete_needs_write_access(
    memory_edge: RunningEdge, make_token: MakeToken
) -> None:
    reader = await make_token("reader", scopes=["memory:read"])
    writer = await make_token("writer", scopes=["memory"])
    async with (
        token_client(memory_edge.url, writer) as write,
        token_client(memory_edge.url, reader) as read,
    ):
        stored = (await write.post("/v1/memory/store", json={"text": "Use ruff"})).json()
        refused = await read.post("/v1/memory/delete", json={"id": stored["id"]})
        still = await read.post("/v1/memory/get", json={"id": stored["id"]})
        deleted = await write.post("/v1/memory/delete", json={"id": stored["id"]})
        gone = await read.post("/v1/memory/get", json={"id": stored["id"]})
        again = await write.post("/v1/memory/delete", json={"id": stored["id"]})
        paths = set((await read.get("/openapi.json")).json()["paths"])
    assert refused.status_code == 403
    assert refused.json() == {"error": "token 'reader' may not call memory/delete", "code": 403}
    assert still.status_code == 200
    assert deleted.status_code == 200 and deleted.json() == {"id": stored["id"], "deleted": True}
    assert gone.status_code == 404
    assert again.json() == {"id": stored["id"], "deleted": False}
    assert "/v1/memory/delete" not in paths and "/v1/memory/get" in paths


async def test_mcp_delete_is_a_tool_for_writers_only(
    memory_edge: RunningEdge, make_token: MakeToken
) -> None:
    reader = await make_token("reader", scopes=["memory:read"])
    writer = await make_token("writer", scopes=["memory:store", "memory:delete", "memory:read"])
    await wait_token(memory_edge, reader)
    await wait_token(memory_edge, writer)
    async with http_session(memory_edge.mcp, writer) as session:
        stored = await session.call_tool("memory_store", {"text": "Pin mcp below 3"})
        assert stored.structured_content is not None
        item_id = stored.structured_content["id"]
        writer_tools = {tool.name for tool in (await session.list_tools()).tools}
        async with http_session(memory_edge.mcp, reader) as read_only:
            reader_tools = {tool.name for tool in (await read_only.list_tools()).tools}
            with pytest.raises(MCPError, match="outside the scopes of token 'reader'"):
                await read_only.call_tool("memory_delete", {"id": item_id})
            before = await read_only.read_resource(f"sophia://memory/items/{item_id}")
            deleted = await session.call_tool("memory_delete", {"id": item_id})
            with pytest.raises(MCPError) as gone:
                await read_only.read_resource(f"sophia://memory/items/{item_id}")
    assert "memory_delete" in writer_tools
    assert "memory_delete" not in reader_tools and "memory_search" in reader_tools
    assert before.contents
    assert deleted.structured_content == {"id": item_id, "deleted": True}
    assert gone.value.error.code == -32002
