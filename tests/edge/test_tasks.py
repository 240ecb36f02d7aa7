"""Tasks through the edge: the planner's public endpoints are MCP tools, with progress."""

from __future__ import annotations

from pathlib import Path

import anyio
import pytest

from bus import Settings
from edge.config import EdgeSettings
from tests.edge.clients import http_session
from tests.edge.conftest import start_edge
from tests.fixtures.openai_upstream import OpenAIUpstream
from tests.tasks.harness import ScriptedModel, make_repo, task_stack

pytestmark = pytest.mark.anyio


async def test_a_task_from_cursor_submit_then_wait_with_progress(
    settings: Settings,
    edge_settings: EdgeSettings,
    token: str,
    monkeypatch: pytest.MonkeyPatch,
    upstream: OpenAIUpstream,
    tmp_path: Path,
) -> None:
    repo = make_repo(tmp_path / "repo")
    seen: list[tuple[float, float | None, str | None]] = []

    async def on_progress(progress: float, total: float | None, message: str | None) -> None:
        seen.append((progress, total, message))

    async with task_stack(settings, monkeypatch, upstream, ScriptedModel()):
        async with anyio.create_task_group() as tg:
            edge = await start_edge(tg, settings, edge_settings)
            async with http_session(edge.mcp, token) as session:
                tools = {t.name: t for t in (await session.list_tools()).tools}
                for _ in range(50):  # the edge finds the planner on its next poll
                    if "tasks_submit" in tools:
                        break
                    await anyio.sleep(0.2)
                    tools = {t.name: t for t in (await session.list_tools()).tools}
                assert {"tasks_submit", "tasks_get", "tasks_list", "tasks_cancel"} <= set(tools)
                assert tools["tasks_get"].annotations.read_only_hint is True
                submitted = await session.call_tool(
                    "tasks_submit", {"goal": "add a --json flag", "repo": str(repo)}
                )
                assert submitted.structured_content, submitted
                task_id = submitted.structured_content["task_id"]
                waited = await session.call_tool(
                    "tasks_wait",
                    {"task_id": task_id, "timeout_s": 60},
                    progress_callback=on_progress,
                )
                bad = await session.call_tool("tasks_submit", {"goal": "x", "repo": 3})
            tg.cancel_scope.cancel()
    assert waited.structured_content and waited.structured_content["state"] == "done"
    assert seen and seen[-1][0] == seen[-1][1] == 2  # both steps done
    assert any(m and "running" in m for _, _, m in seen)
    assert bad.is_error and "repo" in str(bad.content)
