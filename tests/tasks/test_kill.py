"""Tasks survive kill -9: of a coder mid-step (the step is redone on another replica, one
commit), and of the planner between two steps (a new planner carries the task to the end).

The agent that is killed runs as a process (``python -m bus.runner agents.<name>``, as
``sophia up`` starts it); the rest serve in-process (:func:`tests.tasks.harness.task_stack`).
Every process a test starts is killed when it ends, also when it fails.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from collections import deque
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import anyio
import pytest

from bus import Bus
from bus.config import Settings
from bus.micro import PingResponse
from bus.schemas import tasks as t
from bus.subjects import srv
from ops.session import discover
from ops.stack import child_env
from tasks.coder import STEP_TRAILER
from tasks.store import TaskStore
from tasks.worktree import Worktrees
from tests.fixtures.openai_upstream import OpenAIUpstream
from tests.polling import settle, wait_for
from tests.tasks.harness import (
    FIX_EDIT,
    JSON_EDIT,
    ScriptedModel,
    code_step,
    git,
    make_repo,
    plan,
    prompt_text,
    submit,
    task_stack,
    wait_done,
)

pytestmark = [pytest.mark.anyio, pytest.mark.chaos]

ROOT = Path(__file__).resolve().parents[2]
#: the bus settings a process must share with the test's in-process agents
SHARED = ("work_ack_wait_s", "drain_grace_s", "request_timeout_s", "reconnect_max_s")
UP_TIMEOUT_S = 30.0


class AgentProcesses:
    """Agents started as processes on the test's prefix, home and model configuration."""

    def __init__(self, settings: Settings, bus: Bus, logs: Path) -> None:
        self.settings = settings
        self.bus = bus
        self.logs = logs
        self.started: list[tuple[subprocess.Popen[bytes], Path]] = []

    def _spawn(self, module: str) -> subprocess.Popen[bytes]:
        env = child_env(self.settings)  # the environment at this point: SOPHIA_CONFIG included
        env.update({f"SOPHIA_{name.upper()}": str(getattr(self.settings, name)) for name in SHARED})
        env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))
        self.logs.mkdir(parents=True, exist_ok=True)
        log = self.logs / f"{module}-{len(self.started)}.log"
        with log.open("wb") as out:
            proc = subprocess.Popen(
                [sys.executable, "-m", "bus.runner", f"agents.{module}"],
                env=env,
                cwd=ROOT,
                stdout=out,
                stderr=subprocess.STDOUT,
            )
        self.started.append((proc, log))
        return proc

    async def start(self, module: str, service: str) -> subprocess.Popen[bytes]:
        """``agents.<module>``, once it answers PING as ``service`` (bounded)."""
        proc = self._spawn(module)
        try:
            with anyio.fail_after(UP_TIMEOUT_S):
                while not await self._answers(service, proc):
                    assert proc.poll() is None, f"agents.{module} exited: {self.tail(proc)}"
        except TimeoutError:
            raise AssertionError(f"agents.{module} not up: {self.tail(proc)}") from None
        return proc

    async def _answers(self, service: str, proc: subprocess.Popen[bytes]) -> bool:
        pings = await discover(self.bus.nc, srv("PING", service), PingResponse, 0.2)
        return any(
            p.metadata.get("prefix") == self.settings.prefix
            and p.metadata.get("pid") == str(proc.pid)
            for p in pings
        )

    @staticmethod
    def kill(proc: subprocess.Popen[bytes]) -> None:
        """kill -9, and reap it."""
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(timeout=10)

    def tail(self, proc: subprocess.Popen[bytes], chars: int = 4000) -> str:
        """The end of what ``proc`` wrote, for failure messages."""
        log = next(path for started, path in self.started if started is proc)
        return log.read_text(errors="replace")[-chars:]

    def close(self) -> None:
        for proc, _ in self.started:
            if proc.poll() is None:
                proc.kill()
            proc.wait(timeout=10)


@pytest.fixture
def processes(settings: Settings, bus: Bus, tmp_path: Path) -> Iterator[AgentProcesses]:
    started = AgentProcesses(settings, bus, tmp_path / "logs")
    try:
        yield started
    finally:
        started.close()


def commits_on(repo: Path, base: str, branch: str) -> list[str]:
    """The commits ``base..branch``, oldest first."""
    return git(repo, "rev-list", "--reverse", f"{base}..{branch}").split()


def step_trailers(repo: Path, base: str, branch: str) -> list[str]:
    """Every ``Sophia-Step`` trailer value on ``base..branch``, oldest first."""
    fmt = f"--format=%(trailers:key={STEP_TRAILER},valueonly,unfold)"
    return git(repo, "log", "--reverse", fmt, f"{base}..{branch}").split()


async def test_kill_9_of_a_coder_mid_step_the_step_is_done_once_on_another_replica(
    settings: Settings,
    bus: Bus,
    monkeypatch: pytest.MonkeyPatch,
    upstream: OpenAIUpstream,
    tmp_path: Path,
    processes: AgentProcesses,
) -> None:
    repo = make_repo(tmp_path / "repo")
    base = git(repo, "rev-parse", "HEAD").strip()
    # the first coder's model call is slow enough for a second replica to come up meanwhile
    # (one starts in about 1.5 s), and below the gateway's attempt_timeout_s (10 s, model_env)
    model = ScriptedModel(code_delay_s=8.0)
    async with task_stack(settings, monkeypatch, upstream, model, coders=0):
        doomed = await processes.start("coder", "coder")
        task_id = await submit(bus, repo)
        await wait_for(lambda: len(model.asked("code")) >= 1, 30)
        # the step is the only coder's, which waits on the model; a second replica comes up
        survivor = await processes.start("coder", "coder")
        held = await bus.request("tasks", "get", t.TaskRef(task_id=task_id), t.TaskRecord)
        assert [(s.id, s.state) for s in held.plan if s.capability == "code"] == [
            ("s1", "running")
        ], "the first coder finished before it could be killed"
        model.code_delay_s = 0.0  # the step redone answers at once
        processes.kill(doomed)
        # what a coder killed between its edits and its commit leaves in the worktree
        tree = Worktrees(settings.home_path).path_for(repo, held.branch)
        (tree / "report.py").write_text("half an edit\n")
        (tree / "left_behind.py").write_text("x = 1\n")
        record = await wait_done(bus, task_id, 45)
        assert survivor.poll() is None, processes.tail(survivor)
    assert record.state == "done", (record.reason, record.error, processes.tail(survivor))
    [step] = [s for s in record.plan if s.capability == "code"]
    assert (step.id, step.state, step.attempt) == ("s1", "done", 1)  # redelivered, not redone
    [candidate] = step.candidates
    assert candidate.commit and record.commits == [candidate.commit]
    assert commits_on(repo, base, record.branch) == record.commits
    assert step_trailers(repo, base, record.branch) == [f"{task_id}/s1#1"]
    # the dead coder's leftovers were dropped before the step was redone
    assert "as_json" in git(repo, "show", f"{record.branch}:report.py")
    assert "half an edit" not in git(repo, "show", f"{record.branch}:report.py")
    assert "left_behind.py" not in git(repo, "ls-tree", "-r", "--name-only", record.branch)


async def first_step_state(store: TaskStore, task_id: str) -> str:
    """The state of the task's first step, read from the records (no planner needed)."""
    return (await store.get(task_id)).plan[0].state


def edit_by_step(body: dict[str, Any]) -> str:
    """s1 adds the json flag, s2 (on top of it) sorts the keys."""
    return FIX_EDIT if "This step (s2)" in prompt_text(body) else JSON_EDIT


async def test_kill_9_of_the_planner_between_steps_a_new_planner_finishes_the_task(
    settings: Settings,
    bus: Bus,
    monkeypatch: pytest.MonkeyPatch,
    upstream: OpenAIUpstream,
    tmp_path: Path,
    processes: AgentProcesses,
) -> None:
    repo = make_repo(tmp_path / "repo")
    base = git(repo, "rev-parse", "HEAD").strip()
    steps = plan(code_step("s1"), code_step("s2", depends_on=["s1"]))
    model = ScriptedModel(plans=deque([steps]), edits=deque([edit_by_step]), code_delay_s=1.0)
    async with task_stack(settings, monkeypatch, upstream, model, planner=False):
        store = await TaskStore.open(bus)
        planner = await processes.start("planner", "tasks")
        task_id = await submit(bus, repo)
        await wait_for(lambda: len(model.asked("code")) >= 1, 30)
        # s1 is out; the planner is frozen so that it dies exactly between the steps: after
        # s1 is done, before it takes the coder's word and dispatches s2
        os.kill(planner.pid, signal.SIGSTOP)
        try:
            await settle(lambda: first_step_state(store, task_id), "done", 30)
        finally:
            processes.kill(planner)
        between = await store.get(task_id)
        assert [(s.id, s.state) for s in between.plan] == [
            ("s1", "done"),
            ("s2", "pending"),
            ("review", "pending"),
        ]
        successor = await processes.start("planner", "tasks")
        record = await wait_done(bus, task_id, 45)
        assert successor.poll() is None, processes.tail(successor)
    assert record.state == "done", (record.reason, record.error, processes.tail(successor))
    assert [(s.id, s.state, s.attempt) for s in record.plan] == [
        ("s1", "done", 1),
        ("s2", "done", 1),
        ("review", "done", 1),
    ]
    assert len(record.commits) == 2
    assert commits_on(repo, base, record.branch) == record.commits
    assert step_trailers(repo, base, record.branch) == [f"{task_id}/s1#1", f"{task_id}/s2#1"]
    assert "sort_keys=True" in git(repo, "show", f"{record.branch}:report.py")
    assert record.review is not None and record.review.accepted
