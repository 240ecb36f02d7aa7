"""The planner agent: serves ``sophia.tasks.*`` and moves every task from goal to reviewed patch.

Run as ``python -m bus.runner agents.planner`` (``sophia up`` starts it); any number of
replicas. Its service is named ``tasks`` (so ``nats micro info tasks``, MCP tools
``tasks_submit``, ``tasks_get``…). A submitted task is a record in ``<prefix>_tasks`` and a
durable item on ``<prefix>.work.tasks``; each replica takes such items and advances the task
(:class:`tasks.planner.Planner`), and watches deadlines so an overdue task stops with
reason ``timeout`` even while nothing else happens.
"""

from __future__ import annotations

import logging
import time
from typing import TYPE_CHECKING

import anyio
import nats.errors

from bus import Agent, BadRequestError, endpoint, tracing, wire, work
from bus.codec import encode
from bus.config import Settings
from bus.errors import SophiaError
from bus.schemas import tasks as t
from bus.subjects import INBOX_PREFIX, is_inbox
from bus.tasks import TaskSet
from tasks.config import load_tasks
from tasks.plan import progress

if TYPE_CHECKING:
    from tasks.deadlines import Deadlines
    from tasks.planner import Planner
    from tasks.store import TaskStore

log = logging.getLogger("sophia.tasks")

WATCHDOG_S = 2.0
WAIT_POLL_S = 1.0


class PlannerAgent(Agent, name="tasks"):
    """Turns a goal into a plan, runs its steps on coders and reviewers, tells the outcome."""

    planner: Planner
    store: TaskStore
    deadlines: Deadlines

    def __init__(self, settings: Settings | None = None) -> None:
        super().__init__(settings)
        self.task_settings = load_tasks()
        self._background = TaskSet(2)

    async def setup(self) -> None:
        from tasks.deadlines import Deadlines
        from tasks.planner import Planner
        from tasks.store import TaskStore
        from tasks.worktree import Worktrees

        self.store = await TaskStore.open(self.bus)
        self.planner = Planner(
            self.bus, self.store, self.task_settings, Worktrees(self.settings.home_path)
        )
        self.deadlines = Deadlines(self.store.records.kv)
        self._background.start(self.deadlines.run())
        self._background.start(self._watchdog())

    async def teardown(self) -> None:
        await self._background.cancel_all()

    async def _watchdog(self) -> None:
        """Stop every live task past its deadline (reason ``timeout``), every WATCHDOG_S."""
        while True:
            await anyio.sleep(WATCHDOG_S)
            for task_id in self.deadlines.overdue(time.time()):
                try:
                    await self.planner.stop(task_id, "timeout", "the task ran past its timeout_s")
                except SophiaError as exc:
                    log.warning("task_watchdog_failed", extra={"code": exc.code})

    @work
    async def advance(self, item: t.Advance) -> None:
        tracing.tag_task(item.task_id)
        await self.planner.advance(item.task_id)

    @endpoint(public=True)
    async def submit(self, req: t.SubmitRequest) -> t.SubmitResult:
        """Start a task: a goal and a local git repository; answers with its id at once.

        Raises BadRequestError naming ``repo`` (not a git repository) or ``base``.
        """
        submitted = await self.planner.submit(req)
        tracing.tag_task(submitted.task_id)
        return submitted

    @endpoint(public=True, access="read")
    async def get(self, req: t.TaskRef) -> t.TaskRecord:
        """The task record: state, plan and steps, branch, commits, review, cost, timings."""
        return await self.store.get(req.task_id)

    @endpoint(public=True, access="read")
    async def list(self, req: t.ListRequest) -> t.TaskList:
        """Tasks, newest first (optionally only those in one state)."""
        records = await self.store.list(req.limit, req.state)
        return t.TaskList(
            tasks=[
                t.TaskSummary(
                    task_id=r.task_id,
                    goal=r.goal[:200],
                    state=r.state,
                    reason=r.reason,
                    pattern=r.pattern,
                    repo=r.repo,
                    branch=r.branch,
                    cost_usd=r.cost_usd,
                    created_at=r.created_at,
                    finished_at=r.finished_at,
                )
                for r in records
            ]
        )

    @endpoint(public=True)
    async def cancel(self, req: t.TaskRef) -> t.CancelResult:
        """Stop a task; its coders and reviewers stop within a second."""
        return await self.planner.cancel(req.task_id)

    @endpoint(public=True, access="read")
    async def wait(self, req: t.WaitRequest) -> t.TaskRecord:
        """Wait until the task ends or ``timeout_s`` passes, then return its record; each
        change goes to ``progress_subject`` (an inbox) meanwhile."""
        subject = req.progress_subject
        if subject and not is_inbox(subject):
            raise BadRequestError(f"progress_subject: must be an inbox ({INBOX_PREFIX}…)")
        record = await self.store.get(req.task_id)
        changed = anyio.Event()
        events = self.bus.subjects.event("task", req.task_id)

        async def on_event(msg: object) -> None:
            changed.set()

        sub = await self.nc.subscribe(events, cb=on_event)
        try:
            deadline = time.monotonic() + req.timeout_s
            last_seq = -1
            while True:
                if subject and record.seq != last_seq:
                    last_seq = record.seq
                    await self._progress(subject, record)
                if record.state in t.TERMINAL or time.monotonic() >= deadline:
                    return record
                with anyio.move_on_after(min(WAIT_POLL_S, deadline - time.monotonic())):
                    await changed.wait()
                changed = anyio.Event()
                record = await self.store.get(req.task_id)
        finally:
            try:
                await sub.unsubscribe()
            except nats.errors.Error:
                pass

    async def _progress(self, subject: str, record: t.TaskRecord) -> None:
        done, total = progress(record.plan)
        running = [s.id for s in record.plan if s.state in ("dispatched", "running")]
        message = record.state + (f": {', '.join(running)}" if running else "")
        report = t.TaskProgress(
            task_id=record.task_id,
            state=record.state,
            done_steps=done,
            total_steps=total,
            message=message,
            cost_usd=record.cost_usd,
        )
        await wire.publish(self.nc, subject, encode(report), what="progress")


if __name__ == "__main__":
    from bus.runner import run_agent

    run_agent(PlannerAgent)
