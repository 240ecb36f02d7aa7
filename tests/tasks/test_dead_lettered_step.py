"""A step whose work item is dead-lettered fails at once, as if it had failed: the planner
retries it with a new attempt, or ends the task naming the dead letter — never waits for the
task's deadline.

A coder runs as a process with ``SOPHIA_WORK_MAX_DELIVER=1`` and is killed (kill -9) in the
middle of its step; a second coder process then gets the item redelivered past its delivery
limit, dead-letters it ("delivery limit reached: the last attempt died") and reports the
step's attempt failed. The rest of the stack serves in-process.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from bus import Bus
from bus.config import Settings
from bus.schemas import tasks as t
from tests.bus.test_work import dead_letters
from tests.fixtures.openai_upstream import OpenAIUpstream
from tests.polling import wait_for
from tests.tasks.harness import ScriptedModel, events_of, git, make_repo, submit, task_stack
from tests.tasks.test_kill import AgentProcesses, processes, step_trailers

pytestmark = [pytest.mark.anyio, pytest.mark.chaos]
__all__ = ["processes"]  # the fixture, from test_kill

DEAD_LETTER = "the step's work item was dead-lettered (500): delivery limit reached"
#: the task's own deadline: the test's waits are far below it
TASK_TIMEOUT_S = 1800.0


async def kill_the_coder_mid_step(
    bus: Bus, processes: AgentProcesses, model: ScriptedModel, repo: Path
) -> str:
    """Submit a task, kill its only coder while it waits on the model, start another; the
    task's id."""
    doomed = await processes.start("coder", "coder")
    task_id = await submit(bus, repo, timeout_s=TASK_TIMEOUT_S)
    await wait_for(lambda: len(model.asked("code")) >= 1, 30)
    held = await bus.request("tasks", "get", t.TaskRef(task_id=task_id), t.TaskRecord)
    assert [(s.id, s.state) for s in held.plan if s.capability == "code"] == [("s1", "running")], (
        "the first coder finished before it could be killed"
    )
    model.code_delay_s = 0.0
    processes.kill(doomed)
    await processes.start("coder", "coder")
    return task_id


async def wait_ended(bus: Bus, task_id: str) -> t.TaskRecord:
    """The task once it ended; the wait is a small part of its own deadline."""
    req = t.WaitRequest(task_id=task_id, timeout_s=90.0)
    record = await bus.request("tasks", "wait", req, t.TaskRecord, timeout=95.0)
    assert record.state in t.TERMINAL, f"task still {record.state}: the dead letter went unseen"
    return record


async def test_a_dead_lettered_code_step_is_retried_with_a_new_attempt_and_the_task_finishes(
    settings: Settings,
    bus: Bus,
    monkeypatch: pytest.MonkeyPatch,
    upstream: OpenAIUpstream,
    tmp_path: Path,
    processes: AgentProcesses,
) -> None:
    repo = make_repo(tmp_path / "repo")
    base = git(repo, "rev-parse", "HEAD").strip()
    model = ScriptedModel(code_delay_s=8.0)
    async with task_stack(settings, monkeypatch, upstream, model, coders=0):
        monkeypatch.setenv("SOPHIA_WORK_MAX_DELIVER", "1")  # the coder processes' limit
        task_id = await kill_the_coder_mid_step(bus, processes, model, repo)
        record = await wait_ended(bus, task_id)
        events = await events_of(bus, task_id)
        letters = await dead_letters(bus)
    assert record.state == "done", (record.reason, record.error)
    [step] = [s for s in record.plan if s.capability == "code"]
    assert (step.id, step.state, step.attempt) == ("s1", "done", 2)
    assert step_trailers(repo, base, record.branch) == [f"{task_id}/s1#2"]
    failed = [e for e in events if e.kind == "step" and e.step == "s1" and e.step_state == "failed"]
    assert [e.message[: len(DEAD_LETTER)] for e in failed] == [DEAD_LETTER]
    [letter] = letters
    assert (letter.service, letter.deliveries) == ("coder", 2)
    assert record.round == 1  # the failed attempt cost one round


async def test_a_dead_lettered_code_step_with_no_round_left_fails_the_task_naming_it(
    settings: Settings,
    bus: Bus,
    monkeypatch: pytest.MonkeyPatch,
    upstream: OpenAIUpstream,
    tmp_path: Path,
    processes: AgentProcesses,
) -> None:
    repo = make_repo(tmp_path / "repo")
    model = ScriptedModel(code_delay_s=8.0)
    no_rounds = {"SOPHIA_TASKS_MAX_ROUNDS": "0"}
    async with task_stack(settings, monkeypatch, upstream, model, coders=0, env=no_rounds):
        monkeypatch.setenv("SOPHIA_WORK_MAX_DELIVER", "1")
        task_id = await kill_the_coder_mid_step(bus, processes, model, repo)
        record = await wait_ended(bus, task_id)
    assert (record.state, record.reason) == ("failed", "step_failed")
    assert record.error.startswith(DEAD_LETTER), record.error
    [step] = [s for s in record.plan if s.capability == "code"]
    assert (step.state, step.attempt, step.reason) == ("failed", 1, "step_failed")
    assert len(model.asked("code")) == 1  # never redone
