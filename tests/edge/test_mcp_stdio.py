"""MCP over stdio: ``sophia mcp`` as a subprocess, driven by the SDK's own client."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import anyio
import msgspec
import pytest
from mcp.client.session import ClientSession
from mcp.client.stdio import stdio_client

from bus import Settings
from edge.config import EdgeSettings
from ops.natsserver import NatsServer, free_port
from tests.edge.agents import EchoAgent, ExtraAgent
from tests.edge.clients import INITIALIZE, Notifications, stdio_parameters, stdio_session
from tests.fixtures.nats_server import running

pytestmark = pytest.mark.anyio


async def test_stdio_lists_tools_and_calls_one(
    settings: Settings, edge_settings: EdgeSettings, echo: EchoAgent
) -> None:
    async with stdio_session(stdio_parameters(settings, edge_settings)) as session:
        names = {tool.name for tool in (await session.list_tools()).tools}
        result = await session.call_tool("echo_say", {"text": "hi", "times": 2})
        error = await session.call_tool("echo_say", {"times": 2})
    assert {"echo_say", "echo_find", "echo_slow"} <= names
    assert "echo_hidden" not in names
    assert result.structured_content == {"text": "hihi"}
    assert error.is_error and error.structured_content == {
        "error": "$.text: required field is missing",
        "code": 400,
    }


async def test_stdio_tools_flag_is_the_allow_list(
    settings: Settings, edge_settings: EdgeSettings, echo: EchoAgent
) -> None:
    params = stdio_parameters(settings, edge_settings, "--tools", "echo_say,echo_sl*")
    async with stdio_session(params) as session:
        names = {tool.name for tool in (await session.list_tools()).tools}
    assert names == {"echo_say", "echo_slow"}


async def test_stdio_tools_follow_agents_with_list_changed(
    settings: Settings, edge_settings: EdgeSettings, echo: EchoAgent
) -> None:
    notifications = Notifications()
    async with stdio_session(stdio_parameters(settings, edge_settings), notifications) as session:
        async with anyio.create_task_group() as tg:
            extra = await tg.start(ExtraAgent(settings).run)
            await notifications.wait_for("notifications/tools/list_changed")
            listed = {tool.name for tool in (await session.list_tools()).tools}
            extra.stop()
        await notifications.wait_for("notifications/tools/list_changed", count=2)
        after = {tool.name for tool in (await session.list_tools()).tools}
    assert "extra_ping" in listed
    assert "extra_ping" not in after


async def test_stdio_progress_notifications_come_from_bus_events(
    settings: Settings, edge_settings: EdgeSettings, echo: EchoAgent
) -> None:
    seen: list[float] = []

    async def on_progress(progress: float, total: float | None, message: str | None) -> None:
        seen.append(progress)

    async with stdio_session(stdio_parameters(settings, edge_settings)) as session:
        result = await session.call_tool("echo_slow", {"steps": 2}, progress_callback=on_progress)
    assert result.structured_content == {"steps": 2}
    assert seen == [1, 2]


async def test_stdio_malformed_lines_get_errors_and_serving_goes_on(
    settings: Settings, edge_settings: EdgeSettings, echo: EchoAgent
) -> None:
    params = stdio_parameters(settings, edge_settings)
    lines = [
        b"{not json\n",
        b'{"jsonrpc": "2.0", "id": 7}\n',
        json.dumps(INITIALIZE).encode() + b"\n",
    ]
    async with await anyio.open_process(
        [params.command, *params.args], env=params.env, stderr=subprocess.DEVNULL
    ) as process:
        assert process.stdin is not None and process.stdout is not None
        replies = []
        buffered = b""
        with anyio.fail_after(20):
            for line in lines:
                await process.stdin.send(line)
                while b"\n" not in buffered:
                    buffered += await process.stdout.receive()
                reply, _, buffered = buffered.partition(b"\n")
                replies.append(json.loads(reply))
        await process.stdin.aclose()
        await process.wait()
    assert replies[0]["error"]["code"] == -32700
    assert replies[0]["id"] is None
    assert replies[1]["error"]["code"] == -32600
    assert replies[2]["id"] == 1
    assert replies[2]["result"]["serverInfo"]["name"] == "sophia"
    assert process.returncode == 0


async def test_stdio_cancellation_stops_the_call_and_serving_goes_on(
    settings: Settings, edge_settings: EdgeSettings, echo: EchoAgent
) -> None:
    async with stdio_session(stdio_parameters(settings, edge_settings)) as session:
        with anyio.move_on_after(0.5) as timer:
            await session.call_tool("echo_slow", {"steps": 0, "wait_s": 30})
        with anyio.fail_after(5):
            while not echo.cancelled:  # noqa: ASYNC110
                await anyio.sleep(0.02)
        after = await session.call_tool("echo_say", {"text": "next"})
    assert timer.cancelled_caught
    assert len(echo.cancelled) == 1
    assert after.structured_content == {"text": "next"}


async def test_stdio_answers_at_once_without_nats_and_picks_tools_up_when_it_comes(
    settings: Settings, edge_settings: EdgeSettings, tmp_path: Path
) -> None:
    port = free_port()
    down = msgspec.structs.replace(settings, nats_url=f"nats://127.0.0.1:{port}")
    params = stdio_parameters(down, edge_settings)
    params.env = {**(params.env or {}), "SOPHIA_LOG_LEVEL": "info"}
    errlog = tmp_path / "stderr.log"
    notifications = Notifications()
    with errlog.open("w") as stderr:
        async with (
            stdio_client(params, errlog=stderr) as (read, write),
            ClientSession(read, write, message_handler=notifications) as session,
        ):
            with anyio.fail_after(5):
                started = await session.initialize()
                listed = await session.list_tools()
            await anyio.sleep(5)  # the edge keeps trying meanwhile: quietly
            server = NatsServer(store_dir=tmp_path / "js", port=port)
            server.start()
            try:
                async with running(EchoAgent(msgspec.structs.replace(down, home=str(tmp_path)))):
                    await notifications.wait_for("notifications/tools/list_changed", limit_s=30)
                    later = {tool.name for tool in (await session.list_tools()).tools}
                    result = await session.call_tool("echo_say", {"text": "back"})
            finally:
                server.stop()
    assert started.instructions is not None and "sophia up" in started.instructions
    assert listed.tools == []
    assert "echo_say" in later
    assert result.structured_content == {"text": "back"}
    assert errlog.read_text().count("nats_unreachable") == 1  # one warning, not one per try


async def test_stdio_clean_exit_logs_no_disconnect_warning(
    settings: Settings, edge_settings: EdgeSettings, echo: EchoAgent, tmp_path: Path
) -> None:
    params = stdio_parameters(settings, edge_settings)
    errlog = tmp_path / "stderr.log"
    with errlog.open("w") as stderr:
        async with (
            stdio_client(params, errlog=stderr) as (read, write),
            ClientSession(read, write) as session,
        ):
            await session.initialize()
            await session.call_tool("echo_say", {"text": "x"})
    assert "nats_disconnected" not in errlog.read_text()
    assert "Traceback" not in errlog.read_text()
