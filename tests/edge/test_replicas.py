"""Two edge replicas behind one address: sessions live in KV, so no replica is special."""

from __future__ import annotations

from collections.abc import AsyncIterator

import anyio
import httpx
import httpx2
import pytest

from bus import Settings
from edge.config import EdgeSettings
from tests.edge.agents import EchoAgent
from tests.edge.clients import INITIALIZE, MCP_HEADERS, http_session
from tests.edge.conftest import MakeToken, RunningEdge, start_edge, wait_token

pytestmark = pytest.mark.anyio


class Alternate(httpx2.AsyncBaseTransport):
    """Sends each request to the next replica in turn: a load balancer without stickiness."""

    def __init__(self, ports: list[int]) -> None:
        self.ports = ports
        self.sent: list[int] = []
        self._inner = httpx2.AsyncHTTPTransport()

    async def handle_async_request(self, request: httpx2.Request) -> httpx2.Response:
        port = self.ports[len(self.sent) % len(self.ports)]
        self.sent.append(port)
        request.url = request.url.copy_with(port=port)
        return await self._inner.handle_async_request(request)

    async def aclose(self) -> None:
        await self._inner.aclose()


@pytest.fixture
async def replicas(
    settings: Settings, edge_settings: EdgeSettings, echo: EchoAgent
) -> AsyncIterator[list[RunningEdge]]:
    async with anyio.create_task_group() as tg:
        yield [await start_edge(tg, settings, edge_settings) for _ in range(2)]
        tg.cancel_scope.cancel()


def port(edge: RunningEdge) -> int:
    return int(edge.url.rsplit(":", 1)[1])


async def test_sdk_session_alternates_between_replicas(
    replicas: list[RunningEdge], make_token: MakeToken
) -> None:
    token = await make_token()
    for replica in replicas:
        await wait_token(replica, token)
    transport = Alternate([port(r) for r in replicas])
    async with http_session(replicas[0].mcp, token, transport=transport) as session:
        tools = await session.list_tools()
        results = [await session.call_tool("echo_say", {"text": str(i)}) for i in range(4)]
    assert "echo_say" in {t.name for t in tools.tools}
    assert [r.structured_content for r in results] == [{"text": str(i)} for i in range(4)]
    assert set(transport.sent) == {port(r) for r in replicas}


async def test_session_ended_on_one_replica_is_gone_on_the_other(
    replicas: list[RunningEdge], make_token: MakeToken
) -> None:
    token = await make_token()
    auth = {"Authorization": f"Bearer {token}", **MCP_HEADERS}
    first, second = replicas
    await wait_token(first, token)
    await wait_token(second, token)
    async with httpx.AsyncClient(headers=auth) as client:
        opened = await client.post(first.mcp, json=INITIALIZE)
        session = {"Mcp-Session-Id": opened.headers["mcp-session-id"]}
        ping = {"jsonrpc": "2.0", "id": 2, "method": "ping"}
        served = await client.post(second.mcp, json=ping, headers=session)
        ended = await client.delete(second.mcp, headers=session)
        with anyio.fail_after(5):
            while (await client.post(first.mcp, json=ping, headers=session)).status_code != 404:  # noqa: ASYNC110
                await anyio.sleep(0.02)
    assert served.status_code == 200
    assert served.json() == {"jsonrpc": "2.0", "id": 2, "result": {}}
    assert ended.status_code == 200
