"""The infra agent through the edge: a Pulumi operation from Cursor, with MCP progress."""

from __future__ import annotations

import anyio
import pytest

from bus import Settings
from edge.config import EdgeSettings
from tests.edge.clients import http_session
from tests.edge.conftest import start_edge
from tests.infra.conftest import infra  # noqa: F401 (the fixture)
from tests.infra.harness import CANARY, Infra

pytestmark = pytest.mark.anyio


async def test_infra_up_from_cursor_streams_engine_events_as_mcp_progress(
    infra: Infra,  # noqa: F811
    settings: Settings,
    edge_settings: EdgeSettings,
    token: str,
) -> None:
    seen: list[tuple[float, float | None, str | None]] = []

    async def on_progress(progress: float, total: float | None, message: str | None) -> None:
        seen.append((progress, total, message))

    async with anyio.create_task_group() as tg:
        edge = await start_edge(tg, settings, edge_settings)
        async with http_session(edge.mcp, token) as session:
            tools = {t.name for t in (await session.list_tools()).tools}
            for _ in range(50):  # the edge finds the infra agent on its next poll
                if "infra_up" in tools:
                    break
                await anyio.sleep(0.2)
                tools = {t.name for t in (await session.list_tools()).tools}
            assert {"infra_stacks", "infra_preview", "infra_up", "infra_scale"} <= tools
            assert "infra_refresh" not in tools  # not public
            done = await session.call_tool(
                "infra_up", {"stack": "scratch"}, progress_callback=on_progress
            )
            refused = await session.call_tool("infra_destroy", {"stack": "sophia_k8s"})
        tg.cancel_scope.cancel()
    assert done.structured_content and done.structured_content["state"] == "succeeded"
    messages = [m for _, _, m in seen]
    assert "create kubernetes:apps/v1:Deployment planner" in messages
    assert messages[-1] == "done: create 5"
    assert refused.is_error and "confirm" in refused.content[0].text
    assert CANARY not in repr(done) + repr(seen) + repr(refused)
