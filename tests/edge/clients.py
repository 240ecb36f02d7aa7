"""The real MCP SDK client, over streamable HTTP and over stdio (``sophia mcp``), for the tests."""

from __future__ import annotations

import os
import sys
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import anyio
import httpx2
import mcp_types as types
from mcp.client.session import ClientSession, IncomingMessage
from mcp.client.stdio import StdioServerParameters, stdio_client
from mcp.client.streamable_http import streamable_http_client

from bus import Settings
from edge.config import EdgeSettings

#: A raw ``initialize`` request, for tests that speak JSON-RPC without the SDK client.
INITIALIZE = {
    "jsonrpc": "2.0",
    "id": 1,
    "method": "initialize",
    "params": {
        "protocolVersion": "2025-11-25",
        "capabilities": {},
        "clientInfo": {"name": "raw", "version": "1"},
    },
}

#: The test client's HTTP timeouts: 15 s to connect and write, but a response stream may stay
#: quiet while a tool works (a task's review step runs its tests without a progress change),
#: as the SDK's own client allows (30 s, and 300 s between reads on a stream); 120 s bounds it.
HTTP_TIMEOUT = httpx2.Timeout(15, read=120)

#: What a streamable-HTTP MCP client accepts.
MCP_HEADERS = {"Accept": "application/json, text/event-stream"}


class Notifications:
    """Records the server notifications a session receives; tests wait on them."""

    def __init__(self) -> None:
        self.methods: list[str] = []
        self._arrived = anyio.Event()

    async def __call__(self, message: IncomingMessage) -> None:
        if isinstance(message, types.ServerNotification):
            self.methods.append(message.method)
            self._arrived.set()
            self._arrived = anyio.Event()

    async def wait_for(self, method: str, count: int = 1, limit_s: float = 15.0) -> None:
        """Wait until ``method`` has arrived ``count`` times. Raises TimeoutError."""
        with anyio.fail_after(limit_s):
            while self.methods.count(method) < count:
                await self._arrived.wait()


@asynccontextmanager
async def http_session(
    url: str,
    token: str,
    notifications: Notifications | None = None,
    transport: httpx2.AsyncBaseTransport | None = None,
) -> AsyncIterator[ClientSession]:
    """An initialized SDK session over streamable HTTP with a bearer token."""
    async with http_handshake(url, token, notifications, transport) as (session, _):
        yield session


@asynccontextmanager
async def http_handshake(
    url: str,
    token: str,
    notifications: Notifications | None = None,
    transport: httpx2.AsyncBaseTransport | None = None,
) -> AsyncIterator[tuple[ClientSession, types.InitializeResult]]:
    """:func:`http_session`, with what the server answered to ``initialize``."""
    headers = {"Authorization": f"Bearer {token}"}
    async with (
        httpx2.AsyncClient(headers=headers, timeout=HTTP_TIMEOUT, transport=transport) as client,
        streamable_http_client(url, http_client=client) as (read, write),
        ClientSession(read, write, message_handler=notifications) as session,
    ):
        yield session, await session.initialize()


def stdio_parameters(
    settings: Settings, edge_settings: EdgeSettings, *args: str
) -> StdioServerParameters:
    """``python -m ops.cli mcp`` on the test's NATS and prefix."""
    env = {
        "SOPHIA_NATS_URL": settings.nats_url,
        "SOPHIA_PREFIX": settings.prefix,
        "SOPHIA_HOME": settings.home,
        "SOPHIA_LOG_LEVEL": "warning",
        "SOPHIA_EDGE_DISCOVERY_S": str(edge_settings.edge_discovery_s),
        "SOPHIA_EDGE_DISCOVERY_WINDOW_S": str(edge_settings.edge_discovery_window_s),
        # what the test run has first (the lowest allowed releases, in that run), then Sophia
        "PYTHONPATH": os.pathsep.join(filter(None, [os.environ.get("PYTHONPATH"), os.getcwd()])),
    }
    return StdioServerParameters(
        command=sys.executable, args=["-m", "ops.cli", "mcp", *args], env=env
    )


@asynccontextmanager
async def stdio_session(
    params: StdioServerParameters, notifications: Notifications | None = None
) -> AsyncIterator[ClientSession]:
    """An initialized SDK session with ``sophia mcp`` as a subprocess."""
    async with (
        stdio_client(params) as (read, write),
        ClientSession(read, write, message_handler=notifications) as session,
    ):
        await session.initialize()
        yield session
