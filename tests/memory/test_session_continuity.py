"""Editor sessions outlive the processes that saved them: real ``sophia up`` stacks.

A session saved through the memory agent comes back byte for byte after the agent is
restarted by its supervisor and after the whole stack is stopped and started again; one saved
from ``sophia mcp`` (stdio) loads over HTTP MCP through the stack's edge. Each test runs the
installed ``sophia`` script with its own ``SOPHIA_HOME`` and a free port where nothing
answers, so ``up`` starts its own nats-server; whatever happens, every process the state file
ever named is killed at the end.
"""

from __future__ import annotations

import os
import signal
import sys
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from subprocess import CompletedProcess
from typing import Any

import anyio
import msgspec
import nats
import nats.errors
import pytest
from mcp.client.session import ClientSession
from nats.aio.client import Client

from bus import Settings
from ops.natsserver import free_port
from ops.stack import Layout, pid_alive, read_state
from tests.edge.clients import http_session, stdio_parameters, stdio_session
from tests.edge.conftest import RunningEdge, edge_settings_for_tests, wait_token

pytestmark = [pytest.mark.anyio, pytest.mark.slow]

SOPHIA = str(Path(sys.executable).parent / "sophia")
PROGRAMS = ("memory", "edge")
#: what an editor keeps about a session: text in several scripts, numbers, nesting, order
CONTEXT: dict[str, Any] = {
    "open_files": ["edge/app.py", "edge/mcp/tools.py"],
    "cursor": {"file": "edge/app.py", "line": 117, "column": 4},
    "notes": "Fix the namespace default — «ça marche» 🚀 步骤",
    "weights": [0.1, 1e-7, 2.5, -0.0, 12345678.901],
    "flags": {"dirty": True, "pinned": False, "none": None},
    "zeta_before_alpha": {"z": 1, "a": 2},
}
SUMMARY = "Refactoring the edge's namespace handling; tests for stdio and HTTP next."


@dataclass
class Stack:
    """One local stack under its own home, driven through the ``sophia`` script."""

    env: dict[str, str]
    pids: set[int] = field(default_factory=set)

    @property
    def layout(self) -> Layout:
        return Layout(Path(self.env["SOPHIA_HOME"]))

    @property
    def settings(self) -> Settings:
        return Settings(home=self.env["SOPHIA_HOME"], nats_url=self.env["SOPHIA_NATS_URL"])

    @property
    def edge(self) -> RunningEdge:
        return RunningEdge(url=f"http://{self.env['SOPHIA_EDGE_BIND']}")

    async def sophia(self, *args: str) -> CompletedProcess[bytes]:
        with anyio.fail_after(120):
            return await anyio.run_process([SOPHIA, *args], env=self.env, check=False)

    async def up(self) -> None:
        done = await self.sophia("up", "--detach", *(f"--only={name}" for name in PROGRAMS))
        self.remember()
        assert done.returncode == 0, (done.stdout + done.stderr).decode()

    async def down(self) -> None:
        done = await self.sophia("down")
        assert done.returncode == 0, done.stderr.decode()

    def remember(self) -> None:
        state = read_state(self.layout)
        if state is not None:
            self.pids |= {state.pid} | {p.pid for p in state.programs if p.pid}

    def pid_of(self, name: str) -> int | None:
        state = read_state(self.layout)
        found = [p for p in state.programs if p.name == name] if state is not None else []
        return found[0].pid if found and found[0].status == "running" else None


@pytest.fixture
def stack(tmp_path: Path) -> Iterator[Stack]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("SOPHIA_")}
    env.update(
        SOPHIA_HOME=str(tmp_path / "home"),
        SOPHIA_NATS_URL=f"nats://127.0.0.1:{free_port()}",
        SOPHIA_EDGE_BIND=f"127.0.0.1:{free_port()}",
        SOPHIA_READY_TIMEOUT_S="90",
        SOPHIA_STOP_GRACE_S="10",
        SOPHIA_RESTART_BACKOFF_S="0.2",
        SOPHIA_EDGE_DISCOVERY_S="0.5",
        SOPHIA_EDGE_DISCOVERY_WINDOW_S="0.1",
        SOPHIA_LOG_LEVEL="warning",
    )
    running = Stack(env)
    yield running
    running.remember()
    for pid in running.pids:
        if pid_alive(pid):
            os.kill(pid, signal.SIGKILL)


@asynccontextmanager
async def connected(stack: Stack) -> AsyncIterator[Client]:
    nc = await nats.connect(stack.env["SOPHIA_NATS_URL"])
    try:
        yield nc
    finally:
        await nc.drain()


async def ask(nc: Client, endpoint: str, body: dict[str, Any]) -> bytes:
    """The reply payload of one memory request. Fails the test on a service error."""
    msg = await nc.request(f"sophia.memory.{endpoint}", msgspec.json.encode(body), timeout=30)
    assert not (msg.headers or {}).get("Nats-Service-Error"), msg.data
    return msg.data


async def load_when_back(stack: Stack, body: dict[str, Any], limit_s: float = 90) -> bytes:
    """``session.load`` as soon as a memory agent answers it again (after a restart)."""
    with anyio.fail_after(limit_s):
        while True:
            try:
                async with connected(stack) as nc:
                    msg = await nc.request(
                        "sophia.memory.session.load", msgspec.json.encode(body), timeout=5
                    )
                if not (msg.headers or {}).get("Nats-Service-Error"):
                    return msg.data
            except (nats.errors.Error, OSError):
                pass
            await anyio.sleep(0.2)


async def tool_names(session: ClientSession) -> set[str]:
    return {tool.name for tool in (await session.list_tools()).tools}


async def test_session_comes_back_byte_for_byte_after_agent_and_stack_restarts(
    stack: Stack,
) -> None:
    key = {"session_id": "cursor-window-1", "namespace": "proj"}
    await stack.up()
    async with connected(stack) as nc:
        saved = msgspec.json.decode(
            await ask(nc, "session.save", {**key, "summary": SUMMARY, "context": CONTEXT})
        )
        before = await ask(nc, "session.load", key)

    agent = stack.pid_of("memory")
    assert agent is not None
    os.kill(agent, signal.SIGTERM)  # the supervisor starts a fresh memory agent
    with anyio.fail_after(60):
        while stack.pid_of("memory") in (None, agent):  # noqa: ASYNC110 — a file to poll
            await anyio.sleep(0.1)
    stack.remember()
    after_agent = await load_when_back(stack, key)

    await stack.down()
    await stack.up()
    after_stack = await load_when_back(stack, key)

    session = msgspec.json.decode(before)
    assert saved == {"session_id": key["session_id"], "version": 1, "redactions": 0}
    assert after_agent == before
    assert after_stack == before
    assert session["found"] is True and session["version"] == 1
    assert session["summary"] == SUMMARY
    assert msgspec.json.encode(session["context"]) == msgspec.json.encode(CONTEXT)


async def test_session_saved_over_stdio_mcp_loads_over_http_mcp(stack: Stack) -> None:
    await stack.up()
    created = await stack.sophia("token", "create", "cursor-laptop", "--scope", "memory")
    assert created.returncode == 0, created.stderr.decode()
    token = created.stdout.decode().strip()
    await wait_token(stack.edge, token)
    stdio = stdio_parameters(stack.settings, edge_settings_for_tests(), "--namespace", "proj")
    async with stdio_session(stdio) as session:
        saved = await session.call_tool(
            "memory_session_save",
            {"session_id": "cursor-window-1", "summary": SUMMARY, "context": CONTEXT},
        )
    request = {"session_id": "cursor-window-1"}
    async with http_session(f"{stack.edge.mcp}?namespace=proj", token) as session:
        with anyio.fail_after(30):  # until the stack's edge has seen the memory agent
            while "memory_session_load" not in await tool_names(session):  # noqa: ASYNC110
                await anyio.sleep(0.2)
        loaded = await session.call_tool("memory_session_load", request)
    async with http_session(stack.edge.mcp, token) as session:
        elsewhere = await session.call_tool("memory_session_load", request)
        named = await session.call_tool("memory_session_load", {**request, "namespace": "proj"})
    assert not saved.is_error and saved.structured_content is not None
    assert saved.structured_content["version"] == 1
    assert loaded.structured_content is not None
    assert loaded.structured_content["found"] is True
    assert loaded.structured_content["namespace"] == "proj"
    assert loaded.structured_content["summary"] == SUMMARY
    assert msgspec.json.encode(loaded.structured_content["context"]) == msgspec.json.encode(CONTEXT)
    assert elsewhere.structured_content is not None
    assert elsewhere.structured_content["found"] is False  # "default" holds no such session
    assert named.structured_content == loaded.structured_content
