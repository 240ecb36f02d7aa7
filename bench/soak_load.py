"""The soak's steady mixed load: each operation at its own fixed pace, every outcome recorded.

Operations (``OPERATIONS``, calls per second):

- ``memory_store``: ``sophia.memory.store`` of a new note (unique text, so never deduplicated);
- ``memory_forget``: ``sophia.memory.delete`` of the oldest note once more than ``keep_notes``
  are held (600 by default: ten minutes of stores, so from the judged window on the memory holds
  a steady amount of data and its RSS growth is what the process keeps, not what it was given);
  ``keep_notes=0`` keeps every note, and the memory's data grows with them;
- ``memory_search``: ``sophia.memory.search`` (hybrid) over those notes;
- ``mcp_search``: the ``memory_search`` tool through the edge over streamable HTTP, from the
  ``mcp`` SDK's own client, on one session held for the whole run;
- ``work_item``: a durable work item for the ``soak`` agent (:mod:`bench.soak_worker`); its
  latency runs from the publish until the handler's completion arrives;
- ``task``: a coding task (plan, edit, review by the scripted model; ruff, bandit), from
  ``tasks.submit`` until ``tasks.wait`` returns it ``done``.

A call that raises, times out (``OP_TIMEOUT_S``; a task ``TASK_TIMEOUT_S``) or ends in
anything but success counts as an error of its operation; one with nothing to do (``None``: no
note to forget yet) counts as nothing. Pacing is closed-loop: the next
call of an operation starts at its next slot, or at once when the last call overran it (no
catch-up bursts).
"""

from __future__ import annotations

import random
import time
from collections import deque
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Any

import anyio
import httpx2
from mcp.client.session import ClientSession
from mcp.client.streamable_http import streamable_http_client
from nats.aio.msg import Msg

from bench.soak_stack import Stack
from bench.soak_worker import SoakItem, done_subject
from bus.schemas import memory as m
from bus.schemas import tasks as t

#: operation -> calls per second
OPERATIONS: dict[str, float] = {
    "memory_store": 1.0,
    "memory_forget": 1.0,
    "memory_search": 2.0,
    "mcp_search": 2.0,
    "work_item": 10.0,
    "task": 1 / 30,
}
OP_TIMEOUT_S = 30.0
KEEP_NOTES = 600
TASK_TIMEOUT_S = 240.0
WORK_LOST_S = 60.0  # a work item not done this long after its publish counts as an error
NAMESPACE = "soak"
WORDS = (
    "cache retry parser socket budget planner review patch schema stream consumer replica "
    "timeout embedding vector keyword session token gateway deadline backoff queue ledger "
    "commit branch worktree index chunk redaction tier archive lease circuit breaker trace "
    "span metric latency throughput shard payload header envelope decoder encoder"
).split()


def phrase(rng: random.Random, words: int) -> str:
    return " ".join(rng.choice(WORDS) for _ in range(words))


@dataclass
class Recorder:
    """Every outcome since the start: (seconds since start, operation, latency or error)."""

    started: float = field(default_factory=time.perf_counter)
    latencies: list[tuple[float, str, float]] = field(default_factory=list)
    errors: list[tuple[float, str, str]] = field(default_factory=list)

    def now(self) -> float:
        return time.perf_counter() - self.started

    def ok(self, op: str, latency_s: float) -> None:
        self.latencies.append((self.now(), op, latency_s))

    def failed(self, op: str, what: str) -> None:
        self.errors.append((self.now(), op, what[:200]))


async def paced(
    recorder: Recorder,
    op: str,
    per_s: float,
    until: float,
    call: Callable[[int], Awaitable[bool | None]],
    timeout_s: float = OP_TIMEOUT_S,
) -> None:
    """``call(n)`` every ``1 / per_s`` seconds until ``until`` (recorder time); a call that
    returns False, raises or overruns ``timeout_s`` is an error, one that returns None had
    nothing to do."""
    period = 1.0 / per_s
    due = recorder.now()
    n = 0
    while due < until:
        await anyio.sleep(max(0.0, due - recorder.now()))
        n += 1
        started = time.perf_counter()
        try:
            with anyio.fail_after(timeout_s):
                succeeded = await call(n)
        except Exception as exc:  # every failure of a call is an error of its operation
            recorder.failed(op, f"{type(exc).__name__}: {exc}")
        else:
            if succeeded:
                recorder.ok(op, time.perf_counter() - started)
            elif succeeded is not None:
                recorder.failed(op, "unsuccessful reply")
        due = max(due + period, recorder.now())


@dataclass
class WorkTracker:
    """Work items in flight: their publish times, until their completion arrives."""

    recorder: Recorder
    sent: dict[int, float] = field(default_factory=dict)

    async def on_done(self, msg: Msg) -> None:
        started = self.sent.pop(int(msg.data), None)
        if started is not None:
            self.recorder.ok("work_item", time.perf_counter() - started)

    def sweep(self, older_than_s: float = WORK_LOST_S) -> None:
        """Count items without a completion for ``older_than_s`` as errors."""
        limit = time.perf_counter() - older_than_s
        for n, started in list(self.sent.items()):
            if started < limit:
                del self.sent[n]
                self.recorder.failed("work_item", f"no completion within {older_than_s} s")


@asynccontextmanager
async def mcp_session(stack: Stack) -> AsyncIterator[ClientSession]:
    headers = {"Authorization": f"Bearer {stack.token}"}
    async with (
        httpx2.AsyncClient(headers=headers, timeout=OP_TIMEOUT_S) as client,
        streamable_http_client(f"{stack.edge_url}/mcp", http_client=client) as (read, write),
        ClientSession(read, write) as session,
    ):
        await session.initialize()
        with anyio.fail_after(60):  # the edge lists the memory tools once it has seen them
            while "memory_search" not in {t.name for t in (await session.list_tools()).tools}:  # noqa: ASYNC110
                await anyio.sleep(0.5)
        yield session


class Load:
    """The operations of the module docstring against one stack."""

    def __init__(
        self, stack: Stack, recorder: Recorder, keep_notes: int = KEEP_NOTES, rng_seed: int = 14
    ) -> None:
        self.stack = stack
        self.keep_notes = keep_notes
        self.held: deque[str] = deque()  # the stored notes' ids, oldest first
        self.bus = stack.bus
        self.recorder = recorder
        self.rng = random.Random(rng_seed)
        self.work = WorkTracker(recorder)

    async def store(self, n: int) -> bool:
        text = f"soak note {n}: the {phrase(self.rng, 12)} decision, recorded for later"
        req = m.StoreRequest(text=text, namespace=NAMESPACE, kind="decision")
        result = await self.bus.request("memory", "store", req, m.StoreResult)
        if result.id not in self.held:  # a note the memory took for one it has is held once
            self.held.append(result.id)
        return bool(result.id)

    async def forget(self, n: int) -> bool | None:
        if not self.keep_notes or len(self.held) <= self.keep_notes:
            return None
        req = m.DeleteRequest(id=self.held.popleft())
        return (await self.bus.request("memory", "delete", req, m.DeleteResult)).deleted

    async def search(self, n: int) -> bool:
        req = m.SearchRequest(query=phrase(self.rng, 3), namespace=NAMESPACE, k=5)
        await self.bus.request("memory", "search", req, m.SearchResult)
        return True

    def mcp_search(self, session: ClientSession) -> Callable[[int], Awaitable[bool]]:
        async def call(n: int) -> bool:
            args: dict[str, Any] = {"query": phrase(self.rng, 3), "namespace": NAMESPACE, "k": 5}
            result = await session.call_tool("memory_search", args)
            return not result.is_error

        return call

    async def work_item(self, n: int) -> bool:
        """Publishes only: the latency is recorded when the completion arrives."""
        self.work.sent[n] = time.perf_counter()
        try:
            await self.bus.submit_work("soak", SoakItem(n=n), msg_id=f"soak-{n}")
        except Exception:
            self.work.sent.pop(n, None)
            raise
        return True

    async def task(self, n: int) -> bool:
        goal = f"add a --json flag to report (soak task {n})"
        req = t.SubmitRequest(goal=goal, repo=str(self.stack.repo))
        task_id = (await self.bus.request("tasks", "submit", req, t.SubmitResult)).task_id
        wait = t.WaitRequest(task_id=task_id, timeout_s=TASK_TIMEOUT_S - 10)
        record = await self.bus.request("tasks", "wait", wait, t.TaskRecord, timeout=TASK_TIMEOUT_S)
        if record.state != "done":
            raise RuntimeError(f"task {record.state}: {record.reason} {record.error[:100]}")
        return True

    async def run(self, until: float) -> None:
        """Every operation at its pace until ``until`` (recorder time), then the work items
        still in flight get ``WORK_LOST_S`` to finish."""
        prefix = self.bus.settings.prefix
        sub = await self.bus.nc.subscribe(done_subject(prefix), cb=self.work.on_done)
        try:
            async with mcp_session(self.stack) as session, anyio.create_task_group() as tg:
                rates = OPERATIONS
                tg.start_soon(
                    paced, self.recorder, "memory_store", rates["memory_store"], until, self.store
                )
                tg.start_soon(
                    paced,
                    self.recorder,
                    "memory_forget",
                    rates["memory_forget"],
                    until,
                    self.forget,
                )
                tg.start_soon(
                    paced,
                    self.recorder,
                    "memory_search",
                    rates["memory_search"],
                    until,
                    self.search,
                )
                tg.start_soon(
                    paced,
                    self.recorder,
                    "mcp_search",
                    rates["mcp_search"],
                    until,
                    self.mcp_search(session),
                )
                tg.start_soon(
                    paced, self.recorder, "work_item", rates["work_item"], until, self.work_item
                )
                tg.start_soon(
                    paced, self.recorder, "task", rates["task"], until, self.task, TASK_TIMEOUT_S
                )
            with anyio.move_on_after(WORK_LOST_S):
                while self.work.sent:  # noqa: ASYNC110
                    await anyio.sleep(0.2)
            self.work.sweep(older_than_s=0.0)
        finally:
            await sub.unsubscribe()
