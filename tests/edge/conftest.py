"""A running stack for the edge tests: agents in-process, the edge on a free port, tokens."""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any

import anyio
import httpx
import pytest

from agents.memory import MemoryAgent
from bus import Bus, Settings
from edge.config import EdgeSettings
from edge.serve import serve_http
from edge.tokens import create_token
from ops.natsserver import free_port
from tests.edge.agents import EchoAgent
from tests.fixtures.nats_server import running

MakeToken = Callable[..., Awaitable[str]]


@dataclass
class RunningEdge:
    url: str  # http://127.0.0.1:PORT

    @property
    def mcp(self) -> str:
        return f"{self.url}/mcp"


def edge_settings_for_tests(**overrides: object) -> EdgeSettings:
    """Fast discovery so tools appear and vanish within a second or two."""
    values: dict[str, object] = {
        "edge_discovery_s": 0.3,
        "edge_discovery_window_s": 0.1,
        "edge_rate_per_s": 1000.0,
        "edge_rate_burst": 1000,
        "edge_call_timeout_s": 5.0,
        "edge_keepalive_s": 1.0,
    }
    values.update(overrides)
    return EdgeSettings(**values)  # type: ignore[arg-type]


@pytest.fixture
def edge_settings() -> EdgeSettings:
    return edge_settings_for_tests()


@pytest.fixture
async def echo(settings: Settings) -> AsyncIterator[EchoAgent]:
    """The edge's own echo agent (more endpoints than the bus tests' one)."""
    async with running(EchoAgent(settings)) as agent:
        yield agent


async def start_edge(
    tg: anyio.abc.TaskGroup, settings: Settings, edge_settings: EdgeSettings
) -> RunningEdge:
    port = free_port()
    await tg.start(
        lambda task_status: serve_http(settings, edge_settings, port=port, task_status=task_status)
    )
    return RunningEdge(url=f"http://127.0.0.1:{port}")


@pytest.fixture
async def edge(
    settings: Settings, edge_settings: EdgeSettings, echo: EchoAgent
) -> AsyncIterator[RunningEdge]:
    """One edge replica, started after the echo agent so its first poll sees it."""
    async with anyio.create_task_group() as tg:
        running = await start_edge(tg, settings, edge_settings)
        yield running
        tg.cancel_scope.cancel()


@pytest.fixture
async def memory_edge(
    settings: Settings, edge_settings: EdgeSettings
) -> AsyncIterator[RunningEdge]:
    """The memory agent, then an edge that has seen it."""
    async with anyio.create_task_group() as tg:
        agent = await tg.start(MemoryAgent(settings).run)
        running = await start_edge(tg, settings, edge_settings)
        yield running
        agent.stop()
        tg.cancel_scope.cancel()


@pytest.fixture
def make_token(bus: Bus) -> MakeToken:
    async def make(
        name: str = "tester", scopes: list[str] | None = None, tools: list[str] | None = None
    ) -> str:
        kv = await bus.js.key_value(bus.subjects.config_bucket)
        return await create_token(kv, name, scopes or ["*"], tools)

    return make


@pytest.fixture
async def token(make_token: MakeToken) -> str:
    return await make_token()


@pytest.fixture
async def http(edge: RunningEdge, token: str) -> AsyncIterator[httpx.AsyncClient]:
    """A plain HTTP client on the edge, carrying a valid token."""
    async with token_client(edge.url, token, timeout=10) as client:
        yield client


async def token_accepted(client: httpx.AsyncClient, limit_s: float = 10.0) -> None:
    """Wait until the edge knows the client's token (tokens reach replicas by a KV watch)."""
    with anyio.fail_after(limit_s):
        while (await client.get("/openapi.json")).status_code == 401:  # noqa: ASYNC110
            await anyio.sleep(0.02)


@asynccontextmanager
async def token_client(url: str, token: str, **options: Any) -> AsyncIterator[httpx.AsyncClient]:
    """An HTTP client on the edge at ``url`` carrying ``token``, once the edge knows it."""
    headers = {"Authorization": f"Bearer {token}"}
    async with httpx.AsyncClient(base_url=url, headers=headers, **options) as client:
        await token_accepted(client)
        yield client


async def wait_token(edge: RunningEdge, token: str) -> None:
    """Wait until ``edge`` accepts ``token``."""
    async with token_client(edge.url, token):
        pass
