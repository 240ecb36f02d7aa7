"""The memory agent through the edge: its tools, its items as resources, indexing progress."""

from __future__ import annotations

from pathlib import Path

import anyio
import mcp_types as types
import pytest
from mcp.shared.exceptions import MCPError

from agents.memory import MemoryAgent
from bus import Settings
from edge.config import EdgeSettings
from tests.edge.clients import http_session, stdio_parameters, stdio_session
from tests.edge.conftest import RunningEdge

pytestmark = pytest.mark.anyio


async def test_memory_tools_are_listed_by_name(memory_edge: RunningEdge, token: str) -> None:
    async with http_session(memory_edge.mcp, token) as session:
        tools = {t.name: t for t in (await session.list_tools()).tools}
    assert {"memory_store", "memory_search", "memory_get", "memory_session_save"} <= set(tools)
    assert "memory_delete" in tools and not tools["memory_delete"].annotations  # it writes
    assert "memory_cache_put" not in tools  # not public
    query = tools["memory_search"].input_schema["properties"]["query"]
    assert query == {"type": "string", "minLength": 1, "maxLength": 8192, "pattern": "\\S"}
    assert tools["memory_search"].input_schema["additionalProperties"] is False
    assert "progress_subject" not in tools["memory_index"].input_schema["properties"]


async def test_memory_store_then_search_over_http(memory_edge: RunningEdge, token: str) -> None:
    async with http_session(memory_edge.mcp, token) as session:
        stored = await session.call_tool(
            "memory_store", {"text": "Use uvloop for lower latency", "kind": "decision"}
        )
        found = await session.call_tool("memory_search", {"query": "event loop speed"})
    assert not stored.is_error and stored.structured_content
    item_id = stored.structured_content["id"]
    assert found.structured_content
    hits = found.structured_content["hits"]
    assert [hit["id"] for hit in hits] == [item_id]
    assert hits[0]["text"] == "Use uvloop for lower latency"


async def test_memory_store_then_search_over_stdio(
    settings: Settings, edge_settings: EdgeSettings
) -> None:
    async with anyio.create_task_group() as tg:
        agent = await tg.start(MemoryAgent(settings).run)
        async with stdio_session(
            stdio_parameters(settings, edge_settings, "--tools", "memory_*")
        ) as session:
            names = {t.name for t in (await session.list_tools()).tools}
            stored = await session.call_tool("memory_store", {"text": "Retry with backoff on 503"})
            found = await session.call_tool("memory_search", {"query": "what to do on 503"})
        agent.stop()
    assert names and all(name.startswith("memory_") for name in names)
    assert stored.structured_content and found.structured_content
    assert found.structured_content["hits"][0]["id"] == stored.structured_content["id"]


async def test_memory_items_are_resources(memory_edge: RunningEdge, token: str) -> None:
    async with http_session(memory_edge.mcp, token) as session:
        templates = await session.list_resource_templates()
        stored = await session.call_tool("memory_store", {"text": "Pin mcp to 2.3.0"})
        assert stored.structured_content
        uri = f"sophia://memory/items/{stored.structured_content['id']}"
        read = await session.read_resource(uri)
        with pytest.raises(MCPError) as missing:
            await session.read_resource("sophia://memory/items/nope")
        with pytest.raises(MCPError) as foreign:
            await session.read_resource("file:///etc/passwd")
    assert [t.uri_template for t in templates.resource_templates] == ["sophia://memory/items/{id}"]
    assert (missing.value.error.code, missing.value.error.message) == (-32002, "id: no such item")
    assert foreign.value.error.code == -32002
    content = read.contents[0]
    assert isinstance(content, types.TextResourceContents)
    assert content.uri == uri and '"text":"Pin mcp to 2.3.0"' in content.text


async def test_memory_index_reports_progress(
    memory_edge: RunningEdge, token: str, tmp_path: Path
) -> None:
    repo = tmp_path / "repo"
    repo.mkdir()
    for i in range(3):
        (repo / f"m{i}.py").write_text(f"def f{i}():\n    return {i}\n")
    seen: list[tuple[float, float | None]] = []

    async def on_progress(progress: float, total: float | None, message: str | None) -> None:
        seen.append((progress, total))

    async with http_session(memory_edge.mcp, token) as session:
        result = await session.call_tool(
            "memory_index", {"path": str(repo), "namespace": "repo"}, progress_callback=on_progress
        )
    assert not result.is_error and result.structured_content
    assert result.structured_content["files"] == 3
    assert seen and seen[-1] == (3, 3)
