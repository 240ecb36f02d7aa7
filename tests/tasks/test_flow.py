"""Tasks end to end: submit → plan → code → review → done, rounds, quality, stops."""

from __future__ import annotations

import json
from collections import deque
from pathlib import Path

import anyio
import pytest

from bus import Bus
from bus.config import Settings
from bus.errors import BadRequestError
from bus.schemas import tasks as t
from tests.fixtures.openai_upstream import OpenAIUpstream
from tests.tasks.harness import (
    FIX_EDIT,
    JSON_EDIT,
    ScriptedModel,
    code_step,
    events_of,
    git,
    make_repo,
    plan,
    prompt_text,
    review,
    submit,
    task_stack,
    wait_done,
)

pytestmark = pytest.mark.anyio


def commits_on(repo: Path, base: str, branch: str) -> list[str]:
    return git(repo, "rev-list", f"{base}..{branch}").split()


async def test_balanced_task_plans_codes_reviews_and_is_done(
    settings: Settings,
    bus: Bus,
    monkeypatch: pytest.MonkeyPatch,
    upstream: OpenAIUpstream,
    tmp_path: Path,
) -> None:
    repo = make_repo(tmp_path / "repo")
    head_before = git(repo, "rev-parse", "HEAD").strip()
    model = ScriptedModel()
    async with task_stack(settings, monkeypatch, upstream, model, run_tests=True):
        task_id = await submit(bus, repo)
        record = await wait_done(bus, task_id)
        assert record.state == "done", (record.reason, record.error)
        events = await events_of(bus, task_id)
    assert [s.id for s in record.plan] == ["s1", "review"]
    assert record.branch == f"sophia/{task_id}"
    assert len(record.commits) == 1
    assert commits_on(repo, head_before, record.branch) == record.commits
    assert "as_json" in git(repo, "show", f"{record.branch}:report.py")
    # the user's working tree is untouched
    assert git(repo, "rev-parse", "HEAD").strip() == head_before
    assert git(repo, "status", "--porcelain") == ""
    assert record.review is not None and record.review.accepted
    tools = {run.tool: run for run in record.review.tools}
    assert tools["ruff"].ran and tools["bandit"].ran and tools["pytest"].ran
    assert tools["pytest"].ok, tools["pytest"].summary
    # events in order, seq without gaps, states as the task went
    assert [e.seq for e in events] == list(range(1, len(events) + 1))
    states = [e.state for e in events if e.kind == "state"]
    assert states == ["queued", "planning", "running", "reviewing", "running", "done"] or states[
        :3
    ] == ["queued", "planning", "running"]
    assert states[-1] == "done"
    assert record.cost_usd > 0 and record.model_calls == 3
    # the plan was asked with the plan schema, the review with the review schema
    assert len(model.asked("plan")) == 1 and len(model.asked("review")) == 1


async def test_fast_skips_planning_and_review(
    settings: Settings,
    bus: Bus,
    monkeypatch: pytest.MonkeyPatch,
    upstream: OpenAIUpstream,
    tmp_path: Path,
) -> None:
    repo = make_repo(tmp_path / "repo")
    model = ScriptedModel()
    async with task_stack(settings, monkeypatch, upstream, model):
        record = await wait_done(bus, await submit(bus, repo, pattern="fast"))
    assert record.state == "done", record.error
    assert [s.capability for s in record.plan] == ["code"]
    assert model.asked("plan") == [] and model.asked("review") == []
    assert len(record.commits) == 1


async def test_request_changes_then_revised_then_approved(
    settings: Settings,
    bus: Bus,
    monkeypatch: pytest.MonkeyPatch,
    upstream: OpenAIUpstream,
    tmp_path: Path,
) -> None:
    repo = make_repo(tmp_path / "repo")
    asking = json.dumps(
        {
            "verdict": "request_changes",
            "findings": [
                {
                    "file": "report.py",
                    "line": 9,
                    "severity": "low",
                    "message": "sort the keys",
                    "evidence": "return json.dumps(rows)",
                }
            ],
            "covered": ["report.py"],
        }
    )
    model = ScriptedModel(edits=deque([JSON_EDIT, FIX_EDIT]), reviews=deque([asking, review()]))
    async with task_stack(settings, monkeypatch, upstream, model):
        record = await wait_done(bus, await submit(bus, repo))
    assert record.state == "done", (record.reason, record.error)
    assert record.round == 1
    assert len(record.commits) == 2, [(s.id, s.attempt, s.candidates) for s in record.plan]
    assert "sort_keys=True" in git(repo, "show", f"{record.branch}:report.py")
    # the second coder call carried the reviewer's finding
    second = model.asked("code")[1]
    assert "sort the keys" in prompt_text(second)


async def test_round_limit_fails_with_the_findings(
    settings: Settings,
    bus: Bus,
    monkeypatch: pytest.MonkeyPatch,
    upstream: OpenAIUpstream,
    tmp_path: Path,
) -> None:
    repo = make_repo(tmp_path / "repo")
    counter = iter(range(100))

    def always_asking(body: dict) -> str:
        n = next(counter)
        return json.dumps(
            {
                "verdict": "request_changes",
                "findings": [
                    {
                        "file": "report.py",
                        "line": 9,
                        "severity": "low",
                        "message": f"problem number {n}",
                        "evidence": "json.dumps(rows",
                    }
                ],
                "covered": ["report.py"],
            }
        )

    def edit(body: dict) -> str:
        text = prompt_text(body)
        return FIX_EDIT if "problem number" in text and "sort_keys" not in text else JSON_EDIT

    model = ScriptedModel(edits=deque([edit]), reviews=deque([always_asking]))
    async with task_stack(
        settings, monkeypatch, upstream, model, env={"SOPHIA_TASKS_MAX_ROUNDS": "1"}
    ):
        record = await wait_done(bus, await submit(bus, repo))
    assert record.state == "failed" and record.reason in ("rounds", "step_failed", "loop")
    assert record.findings, "the failed task carries the last findings"


async def test_uncited_finding_dropped_and_uncovered_approval_not_accepted(
    settings: Settings,
    bus: Bus,
    monkeypatch: pytest.MonkeyPatch,
    upstream: OpenAIUpstream,
    tmp_path: Path,
) -> None:
    repo = make_repo(tmp_path / "repo")
    uncited = json.dumps(
        {
            "verdict": "approve",
            "findings": [
                {
                    "file": "report.py",
                    "line": 3,
                    "severity": "low",
                    "message": "made up",
                    "evidence": "this text is nowhere in the file",
                }
            ],
            "covered": [],
        }
    )
    model = ScriptedModel(reviews=deque([uncited]))
    async with task_stack(
        settings, monkeypatch, upstream, model, env={"SOPHIA_TASKS_MAX_ROUNDS": "0"}
    ):
        record = await wait_done(bus, await submit(bus, repo))
    review_step = next(s for s in record.plan if s.capability == "review")
    assert review_step.review is not None
    assert review_step.review.calls == 2  # asked once more for the uncovered file
    assert review_step.review.dropped_findings == 2  # the made-up finding, each time
    assert review_step.review.verdict == "approve" and not review_step.review.accepted
    assert review_step.review.uncovered == ["report.py"]
    assert record.state == "failed"


async def test_quality_runs_two_coders_and_the_reviewer_picks(
    settings: Settings,
    bus: Bus,
    monkeypatch: pytest.MonkeyPatch,
    upstream: OpenAIUpstream,
    tmp_path: Path,
) -> None:
    repo = make_repo(tmp_path / "repo")
    model = ScriptedModel(reviews=deque([review(pick="b")]))
    async with task_stack(settings, monkeypatch, upstream, model, coders=2):
        record = await wait_done(bus, await submit(bus, repo, pattern="quality"))
    assert record.state == "done", (record.reason, record.error)
    code = next(s for s in record.plan if s.capability == "code")
    assert sorted(c.variant for c in code.candidates) == ["a", "b"]
    picked = next(c for c in code.candidates if c.variant == "b")
    assert record.commits == [picked.commit]
    assert git(repo, "rev-parse", record.branch).strip() == picked.commit
    assert len(model.asked("code")) == 2
    assert "Candidate a" in prompt_text(model.asked("review")[0])


async def test_cancel_mid_task(
    settings: Settings,
    bus: Bus,
    monkeypatch: pytest.MonkeyPatch,
    upstream: OpenAIUpstream,
    tmp_path: Path,
) -> None:
    repo = make_repo(tmp_path / "repo")
    model = ScriptedModel(delay_s=3.0)
    async with task_stack(settings, monkeypatch, upstream, model):
        task_id = await submit(bus, repo, pattern="fast")
        await anyio.sleep(1.0)
        result = await bus.request("tasks", "cancel", t.TaskRef(task_id=task_id), t.CancelResult)
        assert result.cancelled and result.state == "cancelled"
        record = await wait_done(bus, task_id)
        await anyio.sleep(3.5)  # the model answers; the coder must not commit for a dead task
        record = await bus.request("tasks", "get", t.TaskRef(task_id=task_id), t.TaskRecord)
    assert record.state == "cancelled" and record.reason == "cancelled"
    assert record.commits == []


async def test_timeout_stops_the_task(
    settings: Settings,
    bus: Bus,
    monkeypatch: pytest.MonkeyPatch,
    upstream: OpenAIUpstream,
    tmp_path: Path,
) -> None:
    repo = make_repo(tmp_path / "repo")
    model = ScriptedModel(delay_s=10.0)
    async with task_stack(settings, monkeypatch, upstream, model):
        record = await wait_done(bus, await submit(bus, repo, pattern="fast", timeout_s=2.0), 20)
    assert record.state == "failed" and record.reason == "timeout"


async def test_budget_exhausted_mid_task_stops_without_overspending(
    settings: Settings,
    bus: Bus,
    monkeypatch: pytest.MonkeyPatch,
    upstream: OpenAIUpstream,
    tmp_path: Path,
) -> None:
    repo = make_repo(tmp_path / "repo")
    model = ScriptedModel()
    budget = 0.006  # the plan call's worst case fits (2048 tokens out), the code call's does not
    async with task_stack(settings, monkeypatch, upstream, model):
        record = await wait_done(bus, await submit(bus, repo, budget_usd=budget))
    assert record.state == "failed" and record.reason == "budget", (record.reason, record.error)
    assert 0 < record.cost_usd <= budget
    assert record.plan, "the plan was made before the budget ran out"


async def test_bad_repo_is_a_400_naming_it(
    settings: Settings,
    bus: Bus,
    monkeypatch: pytest.MonkeyPatch,
    upstream: OpenAIUpstream,
    tmp_path: Path,
) -> None:
    (tmp_path / "plain").mkdir()
    async with task_stack(settings, monkeypatch, upstream, ScriptedModel()):
        with pytest.raises(BadRequestError, match="repo"):
            await submit(bus, tmp_path / "plain")
        repo = make_repo(tmp_path / "repo")
        with pytest.raises(BadRequestError, match="base"):
            await submit(bus, repo, base="no-such-ref")


async def test_second_task_plans_with_the_first_tasks_lesson(
    settings: Settings,
    bus: Bus,
    monkeypatch: pytest.MonkeyPatch,
    upstream: OpenAIUpstream,
    tmp_path: Path,
) -> None:
    repo = make_repo(tmp_path / "repo")
    model = ScriptedModel(plans=deque([plan(code_step())]))
    async with task_stack(settings, monkeypatch, upstream, model):
        first = await wait_done(bus, await submit(bus, repo, goal="add a --json flag to report"))
        assert first.state == "done"
        with anyio.fail_after(10):  # the outcome is stored just after the task ended
            while not first.lessons:
                await anyio.sleep(0.05)
                first = await bus.request(
                    "tasks", "get", t.TaskRef(task_id=first.task_id), t.TaskRecord
                )
        await wait_done(bus, await submit(bus, repo, goal="add a --csv flag to report"))
    second_plan = prompt_text(model.asked("plan")[1])
    assert "Lessons from earlier tasks" in second_plan
    assert "add a --json flag to report" in second_plan


async def test_the_same_findings_twice_in_a_row_end_the_task_as_a_loop(
    settings: Settings,
    bus: Bus,
    monkeypatch: pytest.MonkeyPatch,
    upstream: OpenAIUpstream,
    tmp_path: Path,
) -> None:
    repo = make_repo(tmp_path / "repo")
    same = json.dumps(
        {
            "verdict": "request_changes",
            "findings": [
                {
                    "file": "report.py",
                    "line": 11,
                    "severity": "low",
                    "message": "rename rows",
                    "evidence": "for row in rows:",
                }
            ],
            "covered": ["report.py"],
        }
    )
    model = ScriptedModel(edits=deque([JSON_EDIT, FIX_EDIT]), reviews=deque([same]))
    async with task_stack(
        settings, monkeypatch, upstream, model, env={"SOPHIA_TASKS_MAX_ROUNDS": "5"}
    ):
        record = await wait_done(bus, await submit(bus, repo))
    assert record.state == "failed" and record.reason == "loop", (record.reason, record.error)
    assert record.round == 1  # ended at the second identical review, not after five rounds
    assert [f.message for f in record.findings] == ["rename rows"]


async def test_the_same_failing_edit_twice_ends_the_step_early(
    settings: Settings,
    bus: Bus,
    monkeypatch: pytest.MonkeyPatch,
    upstream: OpenAIUpstream,
    tmp_path: Path,
) -> None:
    repo = make_repo(tmp_path / "repo")
    wrong = (
        "report.py\n```python\n<<<<<<< SEARCH\ndef render(rows):\n=======\n"
        "def render(rows, x):\n>>>>>>> REPLACE\n```\n"
    )
    model = ScriptedModel(edits=deque([wrong]))
    async with task_stack(
        settings, monkeypatch, upstream, model, env={"SOPHIA_TASKS_MAX_ROUNDS": "0"}
    ):
        record = await wait_done(bus, await submit(bus, repo, pattern="fast"))
    assert record.state == "failed" and record.reason == "loop", (record.reason, record.error)
    asked = model.asked("code")
    assert len(asked) == 2  # the second identical failure ended it; no third ask
    retry = prompt_text(asked[1])
    assert "did you mean" in retry.lower() or "closest" in retry.lower()
    assert "def report(rows):" in retry  # the real lines were shown
    assert git(repo, "branch", "--list", "sophia/*").strip()  # a branch, but no commit on it
    assert record.commits == []


async def test_an_edit_that_breaks_the_syntax_goes_back_with_the_error(
    settings: Settings,
    bus: Bus,
    monkeypatch: pytest.MonkeyPatch,
    upstream: OpenAIUpstream,
    tmp_path: Path,
) -> None:
    repo = make_repo(tmp_path / "repo")
    broken = JSON_EDIT.replace("if as_json:", "if as_json")
    repair = (
        "report.py\n```python\n<<<<<<< SEARCH\n    if as_json\n=======\n    if as_json:\n"
        ">>>>>>> REPLACE\n```\n"
    )
    model = ScriptedModel(edits=deque([broken, repair]))
    async with task_stack(settings, monkeypatch, upstream, model):
        record = await wait_done(bus, await submit(bus, repo, pattern="fast"))
    assert record.state == "done", (record.reason, record.error)
    second = prompt_text(model.asked("code")[1])
    assert "adds these problems" in second and "report.py" in second
    assert len(record.commits) == 1  # one commit for the step, with the repaired file
    assert "if as_json:" in git(repo, "show", f"{record.branch}:report.py")


async def test_a_plan_that_breaks_the_rules_twice_fails_the_task_naming_the_rule(
    settings: Settings,
    bus: Bus,
    monkeypatch: pytest.MonkeyPatch,
    upstream: OpenAIUpstream,
    tmp_path: Path,
) -> None:
    repo = make_repo(tmp_path / "repo")
    cyclic = plan(code_step("a", depends_on=["b"]), code_step("b", depends_on=["a"]))
    model = ScriptedModel(plans=deque([cyclic]))
    async with task_stack(settings, monkeypatch, upstream, model):
        record = await wait_done(bus, await submit(bus, repo))
    assert record.state == "failed" and record.reason == "plan_invalid"
    assert "cycle" in record.error
    asked = model.asked("plan")
    assert len(asked) == 2 and "cycle" in prompt_text(asked[1])  # asked once more, with why
    assert model.asked("code") == []


async def test_a_large_diff_is_split_across_review_calls_and_all_of_it_is_covered(
    settings: Settings,
    bus: Bus,
    monkeypatch: pytest.MonkeyPatch,
    upstream: OpenAIUpstream,
    tmp_path: Path,
) -> None:
    repo = make_repo(tmp_path / "repo")
    body = "".join(
        f"VALUE_{i} = {i}  # a constant with a long comment to fill\n" for i in range(40)
    )
    new_files = "".join(
        f"{name}\n```python\n<<<<<<< SEARCH\n=======\n{body}>>>>>>> REPLACE\n```\n"
        for name in ("one.py", "two.py")
    )

    def covering_what_it_saw(request: dict) -> str:
        text = prompt_text(request)
        seen = [f for f in ("one.py", "two.py") if f"+++ b/{f}" in text]
        return review(covered=seen)

    model = ScriptedModel(edits=deque([new_files]), reviews=deque([covering_what_it_saw]))
    async with task_stack(
        settings, monkeypatch, upstream, model, env={"SOPHIA_TASKS_REVIEW_CHARS": "2500"}
    ):
        record = await wait_done(bus, await submit(bus, repo))
    assert record.state == "done", (record.reason, record.error)
    assert record.review is not None and record.review.calls == 2
    assert record.review.covered == ["one.py", "two.py"] and record.review.uncovered == []
    parts = [prompt_text(r) for r in model.asked("review")]
    assert all("part" in p for p in parts)
    assert sum(p.count("+VALUE_") for p in parts) == 80  # every added line reached a reviewer


async def test_a_task_nobody_works_on_is_stopped_by_the_watchdog_at_its_deadline(
    settings: Settings,
    bus: Bus,
    monkeypatch: pytest.MonkeyPatch,
    upstream: OpenAIUpstream,
    tmp_path: Path,
) -> None:
    repo = make_repo(tmp_path / "repo")
    async with task_stack(settings, monkeypatch, upstream, ScriptedModel(), coders=0):
        record = await wait_done(bus, await submit(bus, repo, pattern="fast", timeout_s=1.5), 20)
    assert record.state == "failed" and record.reason == "timeout"
    assert record.plan[0].state == "dispatched"  # no coder took it: only the watchdog saw time
