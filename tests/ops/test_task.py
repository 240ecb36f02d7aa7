"""``sophia task``: submit and follow a task to its branch and review; show, ls, cancel."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from bus import Bus, Settings
from tests.fixtures.openai_upstream import OpenAIUpstream
from tests.ops.conftest import Sophia
from tests.tasks.harness import ScriptedModel, make_repo, task_stack

pytestmark = pytest.mark.anyio


async def test_task_wait_shows_progress_then_branch_diff_stat_and_review(
    sophia: Sophia,
    bus: Bus,
    settings: Settings,
    monkeypatch: pytest.MonkeyPatch,
    upstream: OpenAIUpstream,
    tmp_path: Path,
) -> None:
    repo = make_repo(tmp_path / "repo")
    async with task_stack(settings, monkeypatch, upstream, ScriptedModel()):
        run = await sophia("task", "add a --json flag", "--repo", str(repo), "--wait", "--tokens")
        listed = await sophia("task", "ls", "--json")
        task_id = json.loads(listed.out)["tasks"][0]["task_id"]
        shown = await sophia("task", "show", task_id)
        cancelled = await sophia("task", "cancel", task_id)
    assert run.status == 0, run.err
    assert "planning" in run.err and "reviewing" in run.err  # live state changes
    assert "<<<<<<< SEARCH" in run.err  # the coder's model text, streamed as it arrived
    assert f"branch: sophia/{task_id}" in run.out
    assert "report.py" in run.out and "insertion" in run.out  # the diff stat
    assert "review: approve, accepted" in run.out
    assert shown.status == 0 and "done" in shown.out
    assert cancelled.status == 0 and "done" in cancelled.out  # already ended: stays done


async def test_task_without_the_planner_exits_3(sophia: Sophia, tmp_path: Path) -> None:
    run = await sophia("task", "ls")
    assert run.status == 3
