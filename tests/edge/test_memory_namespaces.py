"""A client's default namespace: memory calls that name none, over stdio, HTTP MCP and HTTP.

Without a client namespace a search that names none covers every namespace (so indexed code,
which lives under its directory's name, is found by the natural call) and a store goes to
"default"; with one (``sophia mcp --namespace``, ``SOPHIA_NAMESPACE``, ``?namespace=``, the
``Sophia-Namespace`` header) both go to the client's namespace, and the tools say so.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import anyio
import httpx
import mcp_types as types
import pytest
from mcp.client.session import ClientSession

from agents.memory import MemoryAgent
from bus import Settings
from edge.config import EdgeSettings
from tests.edge.clients import (
    INITIALIZE,
    MCP_HEADERS,
    http_session,
    stdio_parameters,
    stdio_session,
)
from tests.edge.conftest import RunningEdge

pytestmark = pytest.mark.anyio

CODE = '''def parse_retry_after(value: str) -> float:
    """Turn an HTTP Retry-After header into seconds to wait."""
    return float(value)
'''
CODE_QUERY = "parse the Retry-After header into seconds"
NOTE = "Deploys freeze on Fridays after noon"
NOTE_QUERY = "when do deploys freeze"


def repository(root: Path) -> Path:
    """A directory with one Python file whose chunk the tests search for."""
    root.mkdir(parents=True)
    (root / "retry.py").write_text(CODE)
    return root


def reply(result: types.CallToolResult) -> dict[str, Any]:
    assert not result.is_error, result.content
    assert result.structured_content is not None
    return result.structured_content


def hit_namespaces(result: types.CallToolResult) -> set[str]:
    return {hit["namespace"] for hit in reply(result)["hits"]}


@asynccontextmanager
async def memory_agent(settings: Settings) -> AsyncIterator[MemoryAgent]:
    async with anyio.create_task_group() as tg:
        agent = await tg.start(MemoryAgent(settings).run)
        yield agent
        agent.stop()


async def description(session: ClientSession, tool: str) -> str:
    tools = {t.name: t for t in (await session.list_tools()).tools}
    return tools[tool].description or ""


async def test_stdio_search_without_namespace_finds_indexed_code_and_notes(
    settings: Settings, edge_settings: EdgeSettings, tmp_path: Path
) -> None:
    repo = repository(tmp_path / "proj")
    params = stdio_parameters(settings, edge_settings, "--tools", "memory_*")
    async with memory_agent(settings), stdio_session(params) as session:
        indexed = await session.call_tool("memory_index", {"path": str(repo)})
        stored = await session.call_tool("memory_store", {"text": NOTE})
        code = await session.call_tool("memory_search", {"query": CODE_QUERY})
        note = await session.call_tool("memory_search", {"query": NOTE_QUERY})
        search_text = await description(session, "memory_search")
    assert reply(indexed)["namespace"] == "proj"
    assert "proj" in hit_namespaces(code)
    assert reply(code)["hits"][0]["metadata"]["path"] == "retry.py"
    assert reply(note)["hits"][0]["id"] == reply(stored)["id"]
    assert reply(note)["hits"][0]["namespace"] == "default"  # a store still goes to "default"
    assert "Without `namespace` this covers every namespace" in search_text


@pytest.mark.parametrize("how", ["flag", "env"], ids=["--namespace", "SOPHIA_NAMESPACE"])
async def test_stdio_client_namespace_applies_to_calls_that_name_none(
    settings: Settings, edge_settings: EdgeSettings, tmp_path: Path, how: str
) -> None:
    repo = repository(tmp_path / "checkout")
    if how == "flag":
        params = stdio_parameters(settings, edge_settings, "--namespace", "proj")
    else:
        params = stdio_parameters(settings, edge_settings)
        params.env = {**(params.env or {}), "SOPHIA_NAMESPACE": "proj"}
    async with memory_agent(settings), stdio_session(params) as session:
        other = await session.call_tool("memory_store", {"text": NOTE, "namespace": "default"})
        indexed = await session.call_tool("memory_index", {"path": str(repo)})
        stored = await session.call_tool("memory_store", {"text": "Pin mcp below 3"})
        mine = await session.call_tool("memory_search", {"query": "which mcp version to pin"})
        every = await session.call_tool("memory_search", {"query": NOTE_QUERY, "namespace": None})
        saved = await session.call_tool("memory_session_save", {"session_id": "s1"})
        loaded = await session.call_tool("memory_session_load", {"session_id": "s1"})
        item = await session.call_tool("memory_get", {"id": reply(stored)["id"]})
        search_text = await description(session, "memory_search")
        store_text = await description(session, "memory_store")
    assert reply(indexed)["namespace"] == "proj"  # the client's, not the directory's name
    assert reply(item)["namespace"] == "proj"
    assert reply(mine)["hits"][0]["id"] == reply(stored)["id"]
    assert hit_namespaces(mine) == {"proj"}
    assert reply(other)["id"] in {hit["id"] for hit in reply(every)["hits"]}
    assert reply(saved)["version"] == 1 and reply(loaded)["namespace"] == "proj"
    assert "the client's namespace, 'proj'; null covers every namespace" in search_text
    assert "the client's namespace, 'proj'." in store_text


async def test_stdio_bad_namespace_is_refused_at_start(
    settings: Settings, edge_settings: EdgeSettings
) -> None:
    params = stdio_parameters(settings, edge_settings, "--namespace", " ")
    with anyio.fail_after(60):
        done = await anyio.run_process([params.command, *params.args], env=params.env, check=False)
    assert done.returncode == 2
    assert b"--namespace: must be at most 128 characters, not blank" in done.stderr


async def test_mcp_http_search_without_namespace_covers_every_namespace(
    memory_edge: RunningEdge, token: str, tmp_path: Path
) -> None:
    repo = repository(tmp_path / "proj")
    async with http_session(memory_edge.mcp, token) as session:
        indexed = await session.call_tool("memory_index", {"path": str(repo)})
        stored = await session.call_tool("memory_store", {"text": NOTE, "namespace": "ops"})
        code = await session.call_tool("memory_search", {"query": CODE_QUERY})
        note = await session.call_tool("memory_search", {"query": NOTE_QUERY})
    assert reply(indexed)["namespace"] == "proj"
    assert reply(code)["hits"][0]["namespace"] == "proj"
    assert reply(note)["hits"][0]["id"] == reply(stored)["id"]


async def test_mcp_http_namespace_in_url_is_the_client_default(
    memory_edge: RunningEdge, token: str
) -> None:
    async with http_session(f"{memory_edge.mcp}?namespace=proj", token) as session:
        stored = await session.call_tool("memory_store", {"text": NOTE})
        mine = await session.call_tool("memory_search", {"query": NOTE_QUERY})
        elsewhere = await session.call_tool(
            "memory_search", {"query": NOTE_QUERY, "namespace": "default"}
        )
        search_text = await description(session, "memory_search")
    async with http_session(memory_edge.mcp, token) as plain:
        every = await plain.call_tool("memory_search", {"query": NOTE_QUERY})
        plain_text = await description(plain, "memory_search")
    assert [hit["id"] for hit in reply(mine)["hits"]] == [reply(stored)["id"]]
    assert hit_namespaces(mine) == {"proj"}
    assert reply(elsewhere)["hits"] == []
    assert hit_namespaces(every) == {"proj"}
    assert "'proj'" in search_text and "'proj'" not in plain_text


async def test_mcp_http_bad_namespace_in_url_is_a_400(
    memory_edge: RunningEdge, http: httpx.AsyncClient
) -> None:
    answer = await http.post("/mcp?namespace=%20", json=INITIALIZE, headers=MCP_HEADERS)
    assert answer.status_code == 400
    assert answer.json() == {
        "error": "?namespace: must be at most 128 characters, not blank",
        "code": 400,
    }


async def test_http_namespace_header_is_the_default_of_one_request(
    memory_edge: RunningEdge, http: httpx.AsyncClient
) -> None:
    header = {"Sophia-Namespace": "proj"}
    stored = await http.post("/v1/memory/store", json={"text": NOTE}, headers=header)
    named = await http.post(
        "/v1/memory/store", json={"text": "Pin mcp below 3", "namespace": "ops"}, headers=header
    )
    got = await http.post("/v1/memory/get", json={"id": stored.json()["id"]})
    kept = await http.post("/v1/memory/get", json={"id": named.json()["id"]})
    found = await http.post("/v1/memory/search", json={"query": NOTE_QUERY}, headers=header)
    other = await http.post(
        "/v1/memory/search", json={"query": NOTE_QUERY}, headers={"Sophia-Namespace": "ops"}
    )
    blank = await http.post(
        "/v1/memory/search", json={"query": "x"}, headers={"Sophia-Namespace": "x" * 129}
    )
    both = await http.post(  # the query wins, but the header must still be a namespace
        "/v1/memory/search?namespace=ops",
        json={"query": "x"},
        headers={"Sophia-Namespace": "x" * 129},
    )
    spec = (await http.get("/openapi.json")).json()
    assert stored.status_code == 200, stored.text
    assert got.json()["namespace"] == "proj"
    assert kept.json()["namespace"] == "ops"  # the body's namespace wins
    assert [hit["id"] for hit in found.json()["hits"]] == [stored.json()["id"]]
    assert stored.json()["id"] not in {hit["id"] for hit in other.json()["hits"]}
    assert blank.json() == {
        "error": "Sophia-Namespace: must be at most 128 characters, not blank",
        "code": 400,
    }
    assert both.json() == blank.json()
    search = spec["paths"]["/v1/memory/search"]["post"]
    assert "Sophia-Namespace" in {p["name"] for p in search["parameters"]}
    assert "covers every namespace" in search["description"]
    assert "parameters" not in spec["paths"]["/v1/memory/get"]["post"]
