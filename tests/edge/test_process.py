"""``python -m edge`` as ``sophia up`` runs it: serves on SOPHIA_EDGE_BIND, stops on SIGTERM."""

from __future__ import annotations

import os
import signal
import subprocess
import sys

import anyio
import httpx
import pytest

from bus import Settings
from ops.natsserver import free_port
from tests.edge.agents import EchoAgent
from tests.edge.clients import INITIALIZE, MCP_HEADERS
from tests.edge.conftest import MakeToken

pytestmark = pytest.mark.anyio


async def test_edge_process_serves_then_stops_on_sigterm_with_a_stream_open(
    settings: Settings, echo: EchoAgent, make_token: MakeToken
) -> None:
    token = await make_token()
    port = free_port()
    env = {
        **os.environ,
        "SOPHIA_NATS_URL": settings.nats_url,
        "SOPHIA_PREFIX": settings.prefix,
        "SOPHIA_HOME": settings.home,
        "SOPHIA_EDGE_BIND": f"127.0.0.1:{port}",
        "SOPHIA_LOG_LEVEL": "warning",
    }
    process = await anyio.open_process(
        [sys.executable, "-m", "edge"], env=env, stderr=subprocess.PIPE
    )
    headers = {"Authorization": f"Bearer {token}", **MCP_HEADERS}
    try:
        async with httpx.AsyncClient(
            base_url=f"http://127.0.0.1:{port}", headers=headers, timeout=30
        ) as client:
            with anyio.fail_after(20):
                while True:
                    try:
                        if (await client.get("/readyz")).status_code == 200:
                            break
                    except httpx.TransportError:
                        pass
                    await anyio.sleep(0.05)
            opened = await client.post("/mcp", json=INITIALIZE)
            session = {"Mcp-Session-Id": opened.headers["mcp-session-id"]}
            async with client.stream("GET", "/mcp", headers=session) as stream:
                assert stream.status_code == 200
                process.send_signal(signal.SIGTERM)
                with anyio.fail_after(8):  # an open stream must not hold shutdown
                    status = await process.wait()
    finally:
        if process.returncode is None:
            process.kill()
            await process.wait()
    assert process.stderr is not None
    errors = b"".join([chunk async for chunk in process.stderr]).decode(errors="replace")
    assert status == 0, errors
