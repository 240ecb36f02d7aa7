"""Memory items as MCP resources: listed most recent first, a page at a time, through the
memory agent's ``memory.list``; a memory agent without it (an older one) lists nothing, and the
instructions say why."""

from __future__ import annotations

from collections.abc import AsyncIterator

import anyio
import mcp_types as types
import msgspec
import pytest
from mcp.shared.exceptions import MCPError

from agents.memory import MemoryAgent
from bus import Agent, Settings
from bus.config import load
from edge.config import EdgeSettings
from edge.mcp import resources
from memory.config import MemorySettings
from tests.edge.clients import http_handshake, http_session
from tests.edge.conftest import RunningEdge, start_edge

pytestmark = pytest.mark.anyio


class MemoryAgentBeforeList(Agent, name="memory"):
    """A memory agent of before ``memory.list``: the real one's start-up, ``store`` and
    ``get``, and no listing."""

    def __init__(self, settings: Settings | None = None) -> None:
        super().__init__(settings)
        memory = load(MemorySettings)
        self.memory_settings = msgspec.structs.replace(memory, home=self.settings.home)

    setup = MemoryAgent.setup
    teardown = MemoryAgent.teardown
    health_details = MemoryAgent.health_details
    store = MemoryAgent.store
    get = MemoryAgent.get


@pytest.fixture
async def older_edge(settings: Settings, edge_settings: EdgeSettings) -> AsyncIterator[RunningEdge]:
    async with anyio.create_task_group() as tg:
        agent = await tg.start(MemoryAgentBeforeList(settings).run)
        running = await start_edge(tg, settings, edge_settings)
        yield running
        agent.stop()
        tg.cancel_scope.cancel()


async def test_resources_list_is_empty_and_says_why_without_memory_list(
    older_edge: RunningEdge, token: str
) -> None:
    async with http_handshake(older_edge.mcp, token) as (session, started):
        await session.call_tool("memory_store", {"text": "Use ruff for linting"})
        listed = await session.list_resources()
        templates = await session.list_resource_templates()
    assert listed.resources == [] and listed.next_cursor is None
    assert [t.uri_template for t in templates.resource_templates] == ["sophia://memory/items/{id}"]
    assert started.instructions is not None
    assert "resources/list is empty" in started.instructions
    assert "no memory.list endpoint" in started.instructions


async def test_resources_list_pages_items_most_recent_first(
    memory_edge: RunningEdge, token: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(resources, "PAGE", 2)
    texts = [f"Decision number {i}: keep it simple" for i in range(5)]
    async with http_handshake(memory_edge.mcp, token) as (session, started):
        ids = []
        for text in texts:
            stored = await session.call_tool("memory_store", {"text": text, "kind": "decision"})
            assert stored.structured_content is not None
            ids.append(stored.structured_content["id"])
        pages = [await session.list_resources()]
        while pages[-1].next_cursor:
            cursor = types.PaginatedRequestParams(cursor=pages[-1].next_cursor)
            pages.append(await session.list_resources(params=cursor))
        first = pages[0].resources[0]
        read = await session.read_resource(first.uri)
        with pytest.raises(MCPError) as bad:
            await session.list_resources(params=types.PaginatedRequestParams(cursor="nope"))
    listed = [r for page in pages for r in page.resources]
    assert [len(page.resources) for page in pages] == [2, 2, 1]
    assert [str(r.uri) for r in listed] == [f"sophia://memory/items/{i}" for i in reversed(ids)]
    assert first.name == texts[-1]
    assert first.description == "decision in namespace 'default'"
    assert first.mime_type == "application/json"
    assert first.annotations is not None and first.annotations.last_modified
    assert texts[-1] in read.contents[0].text  # type: ignore[union-attr]
    assert bad.value.error.code == -32602
    assert started.instructions is not None and "most recent first" in started.instructions


async def test_resources_list_keeps_to_the_client_namespace(
    memory_edge: RunningEdge, token: str
) -> None:
    async with http_session(memory_edge.mcp, token) as plain:
        await plain.call_tool("memory_store", {"text": "Elsewhere", "namespace": "other"})
    async with http_session(f"{memory_edge.mcp}?namespace=proj", token) as session:
        stored = await session.call_tool("memory_store", {"text": "Mine"})
        listed = await session.list_resources()
    async with http_session(memory_edge.mcp, token) as plain:
        every = await plain.list_resources()
    assert stored.structured_content is not None
    assert [str(r.uri) for r in listed.resources] == [
        f"sophia://memory/items/{stored.structured_content['id']}"
    ]
    assert {r.name for r in every.resources} == {"Mine", "Elsewhere"}


async def test_memory_list_is_a_tool_too(memory_edge: RunningEdge, token: str) -> None:
    async with http_session(memory_edge.mcp, token) as session:
        tools = {t.name: t for t in (await session.list_tools()).tools}
    assert "memory_list" in tools  # a new public endpoint is a tool without edge changes
    assert tools["memory_list"].annotations is not None
    assert tools["memory_list"].annotations.read_only_hint is True
