"""Memory items as MCP resources: listed most recent first, a page at a time, when the memory
agent can list them (``memory.list``); otherwise an empty list and instructions saying why.

``memory.list`` is not part of the memory agent yet. :class:`ListingMemoryAgent` is the real
memory agent plus that endpoint as the edge expects it (the contract proposed for it: request
``namespace`` / ``kinds`` / ``limit`` / ``cursor``, reply ``items`` of ``id``, ``namespace``,
``kind``, ``created_at``, ``title`` and ``next_cursor``), answered here by a plain scan that is
good for a test's few items only. When the agent gains the endpoint, this class goes.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Annotated

import anyio
import mcp_types as types
import msgspec
import pytest
from mcp.shared.exceptions import MCPError

from agents.memory import MemoryAgent
from bus import BadRequestError, Settings, endpoint
from bus.limits import Namespace
from bus.schemas.memory import Kind
from edge.config import EdgeSettings
from edge.mcp import resources
from tests.edge.clients import http_handshake, http_session
from tests.edge.conftest import RunningEdge, start_edge

pytestmark = pytest.mark.anyio


class ListRequest(msgspec.Struct, kw_only=True):
    """A page of items, most recent first."""

    namespace: Namespace | None = None  # None: every namespace
    kinds: list[Kind] = msgspec.field(default_factory=list)
    limit: Annotated[int, msgspec.Meta(ge=1, le=100)] = 50
    cursor: Annotated[str, msgspec.Meta(max_length=256)] = ""  # "": the first page


class ListedItem(msgspec.Struct, kw_only=True):
    id: str
    namespace: str
    kind: str
    created_at: float
    title: str = ""


class ListResult(msgspec.Struct, kw_only=True):
    items: list[ListedItem] = msgspec.field(default_factory=list)
    next_cursor: str = ""  # "": no more


class ListingMemoryAgent(MemoryAgent, name="memory"):
    """The memory agent with the proposed ``memory.list``."""

    @endpoint(subject="list", public=True, access="read")
    async def list_items(self, req: ListRequest) -> ListResult:
        """Items most recent first, a page at a time. Raises BadRequestError for a cursor this
        endpoint did not give."""
        if req.cursor and not req.cursor.isdigit():
            raise BadRequestError("cursor: not one this endpoint gave")
        records = await self.engine.tiers.facts.scan("", 10_000)
        chosen = [
            r
            for r in records
            if (req.namespace is None or r.namespace == req.namespace)
            and (not req.kinds or r.kind in req.kinds)
        ]
        chosen.sort(key=lambda r: (r.created_at, r.id), reverse=True)
        start = int(req.cursor or 0)
        page = chosen[start : start + req.limit]
        more = start + req.limit < len(chosen)
        return ListResult(
            items=[
                ListedItem(
                    id=r.id,
                    namespace=r.namespace,
                    kind=r.kind,
                    created_at=r.created_at,
                    title=r.text.splitlines()[0][:80],
                )
                for r in page
            ],
            next_cursor=str(start + req.limit) if more else "",
        )


@pytest.fixture
async def listing_edge(
    settings: Settings, edge_settings: EdgeSettings
) -> AsyncIterator[RunningEdge]:
    async with anyio.create_task_group() as tg:
        agent = await tg.start(ListingMemoryAgent(settings).run)
        running = await start_edge(tg, settings, edge_settings)
        yield running
        agent.stop()
        tg.cancel_scope.cancel()


async def test_resources_list_is_empty_and_says_why_without_memory_list(
    memory_edge: RunningEdge, token: str
) -> None:
    async with http_handshake(memory_edge.mcp, token) as (session, started):
        await session.call_tool("memory_store", {"text": "Use ruff for linting"})
        listed = await session.list_resources()
        templates = await session.list_resource_templates()
    assert listed.resources == [] and listed.next_cursor is None
    assert [t.uri_template for t in templates.resource_templates] == ["sophia://memory/items/{id}"]
    assert started.instructions is not None
    assert "resources/list is empty" in started.instructions
    assert "no memory.list endpoint" in started.instructions


async def test_resources_list_pages_items_most_recent_first(
    listing_edge: RunningEdge, token: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(resources, "PAGE", 2)
    texts = [f"Decision number {i}: keep it simple" for i in range(5)]
    async with http_handshake(listing_edge.mcp, token) as (session, started):
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
    listing_edge: RunningEdge, token: str
) -> None:
    async with http_session(listing_edge.mcp, token) as plain:
        await plain.call_tool("memory_store", {"text": "Elsewhere", "namespace": "other"})
    async with http_session(f"{listing_edge.mcp}?namespace=proj", token) as session:
        stored = await session.call_tool("memory_store", {"text": "Mine"})
        listed = await session.list_resources()
    async with http_session(listing_edge.mcp, token) as plain:
        every = await plain.list_resources()
    assert stored.structured_content is not None
    assert [str(r.uri) for r in listed.resources] == [
        f"sophia://memory/items/{stored.structured_content['id']}"
    ]
    assert {r.name for r in every.resources} == {"Mine", "Elsewhere"}


async def test_memory_list_is_a_tool_too(listing_edge: RunningEdge, token: str) -> None:
    async with http_session(listing_edge.mcp, token) as session:
        tools = {t.name: t for t in (await session.list_tools()).tools}
    assert "memory_list" in tools  # a new public endpoint is a tool without edge changes
    assert tools["memory_list"].annotations is not None
    assert tools["memory_list"].annotations.read_only_hint is True
