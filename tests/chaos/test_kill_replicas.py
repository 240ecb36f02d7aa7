"""Chaos: kill -9 a random agent replica every few seconds while work, memory writes and
coding tasks flow.

The replicas that die run as processes under the supervisor (``ops/supervisor.py``, as
``sophia up`` runs them), which restarts each one: two of ``tests.chaos.chores`` (durable
work) and two coders (``agents.coder``). The llm, memory, planner and reviewer agents serve
in-process (:func:`tests.tasks.harness.task_stack`, the scripted model behind the real
gateway). Meanwhile ``ITEMS`` chores, ``NOTES`` memory writes and ``TASKS`` coding tasks
flow, and one poison chore is planted. What must hold:

- every chore is done, once in effect (one ``chaos.done`` event each: the duplicate window
  absorbs a chore finished again after its first handler died before the ack);
- every memory write acknowledged is readable, and none is stored twice (a retried write
  lands on the same content-hash id);
- every task is done with exactly one commit for its step, from attempt 1 (a step redone
  after its coder died is redone from a clean worktree, not committed twice);
- the DLQ holds the poison chore and nothing else;
- every killed replica is back (restarted, answering PING) within ``RECOVERY_BOUND_S``.

The default (CI) run uses the ``fast`` task pattern (the coder's step only, no plan/review
calls) and a kill every ``KILL_EVERY_S``; ``SOPHIA_CHAOS_FULL=1`` runs the ``balanced``
pattern (plan, code, review with the real quality tools) and ``SOPHIA_CHAOS_SEED`` picks
another kill sequence.
"""

from __future__ import annotations

import os
import random
import signal
import sys
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import TypeVar

import anyio
import msgspec
import nats.errors
import pytest
from anyio.abc import TaskGroup

from bus import Bus, Settings
from bus.errors import RetryableError
from bus.micro import PingResponse
from bus.schemas import memory as m
from bus.schemas import tasks as t
from bus.schemas.common import DeadLetter
from bus.subjects import srv
from ops.session import discover
from ops.stack import Layout, Program, child_env
from ops.supervisor import Policy, Supervisor
from tasks.coder import STEP_TRAILER
from tests.chaos.chores import Chore, ChoreDone
from tests.chaos.figures import counted, figure
from tests.fixtures.openai_upstream import OpenAIUpstream
from tests.polling import wait_for
from tests.tasks.harness import ScriptedModel, git, make_repo, model_env, submit, task_stack

pytestmark = [pytest.mark.anyio, pytest.mark.chaos]

T = TypeVar("T")

ROOT = Path(__file__).resolve().parents[2]
FULL = os.environ.get("SOPHIA_CHAOS_FULL") == "1"
PATTERN = "balanced" if FULL else "fast"
SEED = int(os.environ.get("SOPHIA_CHAOS_SEED", "14"))
ITEMS = 500
NOTES = 60
NAMESPACE = "chaos"  # the notes' own: tasks store their outcomes in memory too
TASKS = 20
WORKERS = 2
CODERS = 2
#: balanced steps take longer than fast ones: killed as often, a step would be killed in
#: every attempt until its deliveries ran out (tried: 2 s exhausted 13 of 20 tasks' steps)
KILL_EVERY_S = 6.0 if FULL else 2.0
RECOVERY_BOUND_S = 30.0
FLOW_BOUND_S = 600.0 if FULL else 120.0
#: what the processes must share with the in-process agents (as SOPHIA_* variables)
SHARED = (
    "work_ack_wait_s",
    "work_max_deliver",
    "drain_grace_s",
    "request_timeout_s",
    "reconnect_max_s",
)
POLICY = Policy(  # restart at once, and never give up: the kills are on purpose
    restart_backoff_s=0.1,
    restart_backoff_max_s=0.5,
    crash_limit=1000,
    crash_window_s=60.0,
    stop_grace_s=5.0,
)


def program(settings: Settings, name: str, module: str, **env: str) -> Program:
    """``module`` as the supervisor runs an agent, on the test's shared settings."""
    shared = {f"SOPHIA_{field.upper()}": str(getattr(settings, field)) for field in SHARED}
    full_env = child_env(settings) | shared | {"PYTHONPATH": str(ROOT), **env}
    argv = (sys.executable, "-m", "bus.runner", module)
    return Program(name, argv, "replica", full_env)  # not "agent": no consumer per name


def replicas(settings: Settings, done_logs: Path) -> list[Program]:
    """The replicas the chaos kills: ``chores-N`` (each logging its completions) and
    ``coder-N``."""
    chores = [
        program(
            settings,
            f"chores-{n}",
            "tests.chaos.chores",
            CHAOS_COMPLETIONS=str(done_logs / f"chores-{n}.log"),
            SOPHIA_WORK_MAX_INFLIGHT="8",
        )
        for n in range(1, WORKERS + 1)
    ]
    coders = [program(settings, f"coder-{n}", "agents.coder") for n in range(1, CODERS + 1)]
    return chores + coders


@asynccontextmanager
async def supervising(settings: Settings, programs: list[Program]) -> AsyncIterator[Supervisor]:
    supervisor = Supervisor(settings, Layout(settings.home_path), programs, POLICY)
    async with anyio.create_task_group() as tg:
        await tg.start(supervisor.run)
        try:
            yield supervisor
        finally:
            supervisor.stop()


class Chaos:
    """Kills a random serving replica every ``KILL_EVERY_S`` and times each one's return
    (a replica is killed again only once it serves again)."""

    def __init__(self, bus: Bus, supervisor: Supervisor, services: dict[str, str]) -> None:
        self.bus = bus
        self.supervisor = supervisor
        self.services = services  # program name: the service it serves
        self.random = random.Random(SEED)
        self.kills: list[str] = []
        self.recovered: list[tuple[str, float]] = []
        self.serving: set[str] = set()  # the replicas that answer PING: the ones to kill
        self.stop = anyio.Event()

    async def run(self, tg: TaskGroup) -> None:
        for name in self.services:  # each becomes a target once it first serves
            tg.start_soon(self.back, name, None, None)
        while not self.stop.is_set():
            with anyio.move_on_after(KILL_EVERY_S):
                await self.stop.wait()
            if self.stop.is_set():
                return
            if not self.serving:
                continue
            name = self.random.choice(sorted(self.serving))
            pid = self.supervisor.states[name].pid
            assert pid is not None
            os.kill(pid, signal.SIGKILL)
            self.serving.discard(name)
            self.kills.append(name)
            tg.start_soon(self.back, name, pid, time.monotonic())

    async def back(self, name: str, killed: int | None, at: float | None) -> None:
        """Wait until ``name`` runs again (a pid other than ``killed``) and that process
        answers PING; note how long it took since ``at`` (None: its first start)."""
        state = self.supervisor.states[name]
        with anyio.fail_after(RECOVERY_BOUND_S):
            while True:
                pid = state.pid
                if pid not in (None, killed):
                    pings = await discover(
                        self.bus.nc, srv("PING", self.services[name]), PingResponse, 0.2
                    )
                    if any(p.metadata.get("pid") == str(pid) for p in pings):
                        break
                await anyio.sleep(0.05)
        if at is not None:
            self.recovered.append((name, time.monotonic() - at))
        self.serving.add(name)


async def retried(call: Callable[[], Awaitable[T]], limit_s: float = 60.0) -> T:
    """``await call()`` until it is not refused for a retryable reason (bounded)."""
    with anyio.fail_after(limit_s):
        while True:
            try:
                return await call()
            except RetryableError:
                await anyio.sleep(0.1)


async def publish_chores(bus: Bus) -> None:
    """``ITEMS`` chores spread over the first seconds of the run, and one poison."""
    for n in range(ITEMS):
        chore = Chore(id=f"c{n:04d}")
        await retried(lambda chore=chore: bus.submit_work("chores", chore, msg_id=chore.id))
        if n == ITEMS // 2:
            poison = Chore(id="poison", poison=True)
            await bus.submit_work("chores", poison, msg_id="poison")
        await anyio.sleep(0.02)


async def write_notes(bus: Bus, stored: dict[str, str]) -> None:
    """``NOTES`` memory writes, each retried until acknowledged; {text: id} of each."""
    for n in range(NOTES):
        text = f"chaos lesson {n}: a replica killed mid-item has its item redelivered ({n})"
        request = m.StoreRequest(text=text, kind="solution", namespace=NAMESPACE)
        result = await retried(
            lambda request=request: bus.request("memory", "store", request, m.StoreResult)
        )
        stored[text] = result.id
        await anyio.sleep(0.05)


async def run_tasks(bus: Bus, tmp_path: Path, records: dict[str, t.TaskRecord]) -> None:
    async def one(n: int) -> None:
        repo = make_repo(tmp_path / f"repo{n:02d}")
        task_id = await submit(bus, repo, pattern=PATTERN)
        wait = t.WaitRequest(task_id=task_id, timeout_s=FLOW_BOUND_S)
        record = await bus.request("tasks", "wait", wait, t.TaskRecord, timeout=FLOW_BOUND_S + 5)
        records[str(repo)] = record

    async with anyio.create_task_group() as tg:
        for n in range(TASKS):
            tg.start_soon(one, n)
            await anyio.sleep(0.1)


async def events_done(bus: Bus) -> list[str]:
    """The chore id of every ``chaos.done`` event in the events stream, duplicates included."""
    subject = bus.subjects.event("chaos", "done")
    sub = await bus.js.subscribe(subject, ordered_consumer=True)
    seen: list[str] = []
    try:
        while True:
            msg = await sub.next_msg(timeout=1.0)
            seen.append(msgspec.json.decode(msg.data, type=ChoreDone).id)
    except nats.errors.TimeoutError:  # nothing more
        pass
    finally:
        await sub.unsubscribe()
    return seen


async def dead_letters(bus: Bus) -> list[DeadLetter]:
    stream = bus.subjects.dlq_stream
    info = await bus.js.stream_info(stream)
    if not info.state.messages:
        return []
    seqs = range(info.state.first_seq, info.state.last_seq + 1)
    letters = [await bus.js.get_msg(stream, seq) for seq in seqs]
    return [msgspec.json.decode(msg.data or b"", type=DeadLetter) for msg in letters]


async def read_note(bus: Bus, note_id: str) -> m.Item:
    return await bus.request("memory", "get", m.GetRequest(id=note_id), m.Item)


def step_trailers(repo: Path, branch: str) -> list[str]:
    fmt = f"--format=%(trailers:key={STEP_TRAILER},valueonly,unfold)"
    return git(repo, "log", "--reverse", fmt, f"main..{branch}").split()


def done_once(repo: Path, record: t.TaskRecord) -> bool:
    """Done, with one commit per code step, each from the step's first attempt."""
    code = [s for s in record.plan if s.capability == "code"]
    expected = [f"{record.task_id}/{s.id}#1" for s in code]
    return (
        record.state == "done"
        and all(s.attempt == 1 for s in code)
        and len(record.commits) == len(code)
        and step_trailers(repo, record.branch) == expected
    )


def completions(root: Path) -> list[str]:
    return [line for f in sorted(root.glob("*.log")) for line in f.read_text().split()]


@pytest.mark.timeout(FLOW_BOUND_S + 60)
async def test_kill_9_of_random_replicas_loses_nothing_and_applies_nothing_twice(
    settings: Settings,
    bus: Bus,
    monkeypatch: pytest.MonkeyPatch,
    upstream: OpenAIUpstream,
    tmp_path: Path,
) -> None:
    # a dead replica's items come back after ack_wait: short, so the run stays short; the
    # deliveries are many, since each kill costs every item the replica held one of them
    ack_wait = 5.0 if FULL else 2.0
    shared = msgspec.structs.replace(settings, work_ack_wait_s=ack_wait, work_max_deliver=20)
    model = ScriptedModel(code_delay_s=0.3)  # a step takes long enough to be killed in
    model_env(monkeypatch, upstream, shared.home_path)
    monkeypatch.setenv("SOPHIA_METRICS_BIND", "off")
    done_logs = tmp_path / "completions"
    done_logs.mkdir()
    programs = replicas(shared, done_logs)
    services = {p.name: p.name.split("-")[0] for p in programs}
    stored: dict[str, str] = {}
    records: dict[str, t.TaskRecord] = {}
    async with (
        task_stack(shared, monkeypatch, upstream, model, coders=0),
        supervising(shared, programs) as supervisor,
    ):
        chaos = Chaos(bus, supervisor, services)  # the flow starts as the replicas do
        started = time.monotonic()
        sent = [f"c{n:04d}" for n in range(ITEMS)]
        async with anyio.create_task_group() as tg:
            tg.start_soon(chaos.run, tg)
            with anyio.move_on_after(FLOW_BOUND_S) as flowing:
                async with anyio.create_task_group() as flow:
                    flow.start_soon(publish_chores, bus)
                    flow.start_soon(write_notes, bus, stored)
                    flow.start_soon(run_tasks, bus, tmp_path, records)
                await wait_for(lambda: set(completions(done_logs)) >= set(sent), FLOW_BOUND_S)
            chaos.stop.set()
        flowed_s = time.monotonic() - started
        chores_done = len(set(completions(done_logs)) & set(sent))
        assert not flowing.cancelled_caught, (
            f"not done in {FLOW_BOUND_S:g} s: chores {chores_done}/{ITEMS}, memory writes "
            f"{len(stored)}/{NOTES}, tasks finished {len(records)}/{TASKS}"
        )
        await wait_for(lambda: len(chaos.recovered) == len(chaos.kills), RECOVERY_BOUND_S)
        effects = await events_done(bus)
        letters = await dead_letters(bus)
        items = [await read_note(bus, note_id) for note_id in stored.values()]
        notes_stats = m.StatsRequest(namespace=NAMESPACE)
        stats = await bus.request("memory", "stats", notes_stats, m.Stats)
        restarts = {name: s.restarts for name, s in supervisor.states.items()}

    work = counted(sent, effects)
    notes = counted(stored, [i.text for i in items])
    tasks_ok = {repo: r for repo, r in records.items() if done_once(Path(repo), r)}
    assert (work["lost"], work["duplicated"]) == (0, 0), work
    assert [(d.headers.get("Nats-Msg-Id"), d.code) for d in letters] == [("poison", 400)]
    assert (notes["lost"], len(set(stored.values()))) == (0, NOTES)
    assert stats.items == NOTES  # a retried write did not store a second copy
    failed = {
        r.task_id: (r.state, r.reason, r.commits, step_trailers(Path(repo), r.branch))
        for repo, r in records.items()
    }
    for done in tasks_ok.values():
        failed.pop(done.task_id)
    assert len(records) == TASKS and not failed, failed
    assert chaos.kills and sum(restarts.values()) == len(chaos.kills)
    recovery = max(took for _, took in chaos.recovered)
    figure(
        "kill_replicas",
        work,
        recovery,
        seed=SEED,
        kill_every_s=KILL_EVERY_S,
        kills=len(chaos.kills),
        killed={name: chaos.kills.count(name) for name in sorted(set(chaos.kills))},
        chores_completed_again=len(completions(done_logs)) - len(set(completions(done_logs))),
        dead_letters=len(letters),
        memory_writes={**notes, "stored_items": stats.items},
        tasks={"sent": TASKS, "done_once": len(tasks_ok), "pattern": PATTERN},
        flow_s=round(flowed_s, 1),
    )
