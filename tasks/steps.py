"""What every step worker (coder, reviewer) does around its work: take the step, tell the
planner it is over.

:func:`take_step` answers None for an item that has nothing left to do — the task ended, a
newer attempt of the step was dispatched, or this attempt was reported already (then the
planner is told again, since the earlier report may have died before it was sent) — and
otherwise marks the step running. :func:`tell_planner` queues the planner's next look at the
task, deduplicated per step attempt. :func:`open_attempt` says whether a step attempt still
waits on its worker's report (a worker whose item was dead-lettered reports it failed, with
:func:`dead_letter_message`, only then).
"""

from __future__ import annotations

from collections.abc import Callable

from bus.client import Bus
from bus.errors import RetryableError, SophiaError
from bus.schemas import tasks as t
from tasks.plan import by_id
from tasks.planner import work_id
from tasks.store import TaskStore, mark_running


async def tell_planner(
    bus: Bus, task_id: str, step_id: str, attempt: int, variant: str = ""
) -> None:
    await bus.submit_work(
        "tasks",
        t.Advance(task_id=task_id, why=f"step {step_id} reported"),
        msg_id=work_id(task_id, step_id, attempt, variant) + "-done",
    )


async def take_step(
    bus: Bus,
    store: TaskStore,
    task_id: str,
    step_id: str,
    attempt: int,
    *,
    variant: str = "",
    reported: Callable[[t.Step], bool],
) -> tuple[t.TaskRecord, t.Step] | None:
    """The record and the step to work on, now marked running; None when there is nothing
    to do (see the module docstring)."""
    try:
        record = await store.get(task_id)
    except SophiaError:
        return None
    step = by_id(record.plan).get(step_id)
    if record.state in t.TERMINAL or step is None or step.attempt != attempt:
        return None
    if reported(step):
        await tell_planner(bus, task_id, step_id, attempt, variant)
        return None
    await store.change(task_id, lambda r: mark_running(r, step_id, attempt), if_live=True)
    return record, step


def open_attempt(record: t.TaskRecord, step_id: str, attempt: int) -> t.Step | None:
    """The step ``step_id`` when ``attempt`` is its current one and waits on its worker's
    report (dispatched or running, in a live task); else None."""
    step = by_id(record.plan).get(step_id)
    if record.state in t.TERMINAL or step is None or step.attempt != attempt:
        return None
    return step if step.state in ("dispatched", "running") else None


def dead_letter_message(error: str, code: int) -> str:
    """Why a step attempt failed whose work item went to the DLQ with ``error``."""
    return f"the step's work item was dead-lettered ({code}): {error}"[: t.MESSAGE_CHARS]


def unless_retryable(exc: SophiaError, what: str) -> tuple[str, str]:
    """(reason, message) of a step that failed with ``exc``; re-raises a retryable error,
    so the item is redelivered (a service was away for a moment)."""
    if isinstance(exc, RetryableError):
        raise exc
    return "error", f"{what} failed: {exc.description}"
