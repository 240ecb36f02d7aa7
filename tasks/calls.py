"""Model and memory calls made on a task's behalf, counted in its record.

Every model call goes through the gateway (``sophia.llm.complete``) with the task's scope: its
id, its repository's namespace as the project, and its own ``budget_usd`` — which the gateway
reserves worst-case before every attempt, so the task's spend never passes its budget. Each
call waits at most until the task's deadline. Its cost and time are added to the record
(``cost_usd``, ``model_calls``, ``timings["model_s"]``).
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from typing import Any

import msgspec

from bus.client import Bus
from bus.errors import BudgetExceededError, SophiaError, TimeoutError_
from bus.schemas import memory as m
from bus.schemas.llm import CompleteRequest, CompleteResult, Message, Scope, Task
from bus.schemas.tasks import TaskRecord, token_subject
from tasks.store import TaskStore

#: seconds a bus request may outlast the model call it carries (the reply's own trip)
REPLY_SLACK_S = 5.0
MIN_CALL_S = 1.0


class TaskStopped(Exception):
    """The task cannot go on: ``reason`` is one of the record's reasons (budget, timeout…)."""

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(message)
        self.reason = reason
        self.message = message


def add_timing(record: TaskRecord, name: str, seconds: float) -> dict[str, float]:
    """``record``'s timings with ``seconds`` added to ``name``."""
    return add_timings(record, {name: seconds})


def add_timings(record: TaskRecord, seconds: dict[str, float]) -> dict[str, float]:
    """``record``'s timings with each of ``seconds`` added to its name."""
    timings = dict(record.timings)
    for name, more in seconds.items():
        timings[name] = round(timings.get(name, 0.0) + more, 6)
    return timings


def time_left(record: TaskRecord) -> float:
    return record.deadline - time.time()


async def ask_model(
    bus: Bus,
    store: TaskStore,
    record: TaskRecord,
    messages: Sequence[Message],
    *,
    task: Task,
    schema: dict[str, Any] | None = None,
    schema_name: str = "response",
    max_tokens: int = 4096,
    call_timeout_s: float = 600.0,
    temperature: float = 0.0,
) -> CompleteResult:
    """One model call for ``record``'s task. Raises TaskStopped (budget, timeout), and the
    gateway's other errors (UnavailableError when no model answers)."""
    left = time_left(record)
    if left < MIN_CALL_S:
        raise TaskStopped("timeout", "the task ran out of time before a model call")
    timeout = min(call_timeout_s, left)
    req = CompleteRequest(
        messages=list(messages),
        task=task,
        response_schema=schema,
        schema_name=schema_name,
        max_tokens=max_tokens,
        temperature=temperature,
        scope=Scope(task_id=record.task_id, project=record.namespace, budget_usd=record.budget_usd),
        timeout_s=timeout,
        stream_subject=token_subject(record.task_id) if record.stream_tokens else "",
    )
    started = time.perf_counter()
    try:
        result = await bus.request(
            "llm", "complete", req, CompleteResult, timeout=timeout + REPLY_SLACK_S
        )
    except BudgetExceededError as exc:
        raise TaskStopped("budget", f"budget: {exc.description}") from None
    except TimeoutError_:
        if time_left(record) < MIN_CALL_S:
            raise TaskStopped("timeout", "the task ran past its timeout_s") from None
        raise
    seconds = time.perf_counter() - started

    def counted(current: TaskRecord) -> TaskRecord:
        return msgspec.structs.replace(
            current,
            cost_usd=round(current.cost_usd + result.cost_usd, 9),
            model_calls=current.model_calls + 1,
            timings=add_timing(current, "model_s", seconds),
        )

    await store.change(record.task_id, counted)
    return result


async def memory_search(
    bus: Bus, namespace: str, query: str, kinds: list[m.Kind], k: int, timeout_s: float = 10.0
) -> list[m.Hit]:
    """Hits from the memory agent, or none when it does not answer (planning goes on)."""
    req = m.SearchRequest(query=query[: m.QUERY_CHARS], namespace=namespace, kinds=kinds, k=k)
    try:
        found = await bus.request("memory", "search", req, m.SearchResult, timeout=timeout_s)
    except SophiaError:
        return []
    return found.hits
