"""Task records in ``<prefix>_tasks``, and the events that tell every change.

Every writer (planner, coder, reviewer) changes a record only through :meth:`TaskStore.change`:
a pure function applied with optimistic concurrency (:class:`bus.records.Records`), so two
agents finishing at once never lose each other's change. What changed is then published as
:class:`TaskEvent` s on ``<prefix>.events.task.<id>``, numbered by the record's ``seq`` and
deduplicated by ``Nats-Msg-Id`` ``<id>-<seq>``, so a follower sees each change once and in order.
An event is published after its change is stored; a writer that dies in between loses the
event, never the change.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable

import msgspec
import nats.js.errors

from bus import metrics
from bus.client import Bus
from bus.errors import NotFoundError, SophiaError
from bus.records import Records
from bus.schemas.tasks import TERMINAL, TaskEvent, TaskRecord
from tasks.redaction import redact_record

log = logging.getLogger("sophia.tasks")

#: a task record is written by several agents at once; each race costs one read
CHANGE_ATTEMPTS = 64
#: what a caller is told for an id that names no task: the field, not the id (their input)
NO_SUCH_TASK = "task_id: no such task"


def _step_events(old: TaskRecord | None, new: TaskRecord) -> list[tuple[str, str, str, str]]:
    before = {s.id: s for s in old.plan} if old else {}
    found = []
    for step in new.plan:
        prior = before.get(step.id)
        if prior is None or prior.state != step.state or prior.attempt != step.attempt:
            message = step.error or step.note
            if step.state == "done" and not message and step.candidates:
                message = "; ".join(
                    c.diff_stat.strip().splitlines()[-1:][0]
                    for c in step.candidates
                    if c.diff_stat.strip()
                )
            found.append(("step", step.id, step.state, message[:500]))
        if step.review is not None and (prior is None or prior.review != step.review):
            verdict = "accepted" if step.review.accepted else step.review.verdict
            found.append(("review", step.id, verdict, step.review.note[:500]))
    return found


def events_between(old: TaskRecord | None, new: TaskRecord) -> list[TaskEvent]:
    """The events that tell how ``old`` became ``new`` (numbered from ``old.seq + 1``)."""
    kinds: list[tuple[str, str, str, str]] = []
    if old is None or old.state != new.state:
        kinds.append(("state", "", "", new.error or new.reason))
    if old is not None and not old.plan and new.plan:
        kinds.append(("plan", "", "", f"{len(new.plan)} steps"))
    kinds.extend(_step_events(old, new))
    if old is not None and new.cost_usd != old.cost_usd and not kinds:
        kinds.append(("cost", "", "", ""))
    seq = old.seq if old else 0
    now = time.time()
    return [
        TaskEvent(
            task_id=new.task_id,
            seq=seq + i,
            at=now,
            kind=kind,
            state=new.state,
            step=step,
            step_state=step_state,
            message=message,
            cost_usd=round(new.cost_usd, 9),
        )
        for i, (kind, step, step_state, message) in enumerate(kinds, start=1)
    ]


def mark_running(record: TaskRecord, step_id: str, attempt: int) -> TaskRecord:
    """``record`` with that attempt of the step taken by an agent (when it was dispatched;
    else ``record`` itself, so nothing is written)."""
    steps = [msgspec.structs.replace(s) for s in record.plan]
    taken = False
    for step in steps:
        if step.id == step_id and step.attempt == attempt and step.state == "dispatched":
            step.state = "running"
            taken = True
    return msgspec.structs.replace(record, plan=steps) if taken else record


class TaskStore:
    """The task records of one install and their events."""

    def __init__(self, bus: Bus, records: Records[TaskRecord]) -> None:
        self.bus = bus
        self.records = records

    @classmethod
    async def open(cls, bus: Bus) -> TaskStore:
        return cls(bus, await Records.tasks(bus, TaskRecord))

    async def get(self, task_id: str) -> TaskRecord:
        """The record. Raises NotFoundError naming ``task_id`` (never the id itself, which is
        the caller's input, nor the bucket)."""
        try:
            return (await self.records.get(task_id))[0]
        except NotFoundError:
            raise NotFoundError(NO_SUCH_TASK) from None

    async def create(self, record: TaskRecord) -> TaskRecord:
        def change(current: TaskRecord | None) -> TaskRecord:
            return current or record

        return await self.change(record.task_id, change, create=True)

    async def change(
        self,
        task_id: str,
        change: Callable[[TaskRecord], TaskRecord],
        *,
        create: bool = False,
        if_live: bool = False,
    ) -> TaskRecord:
        """Apply ``change`` (pure: it may run more than once) and publish what changed.

        ``if_live``: leave a task that has ended as it is. Raises NotFoundError, and what
        ``change`` raises (nothing written then).
        """
        return (await self.change_from(task_id, change, create=create, if_live=if_live))[1]

    async def change_from(
        self,
        task_id: str,
        change: Callable[[TaskRecord], TaskRecord],
        *,
        create: bool = False,
        if_live: bool = False,
    ) -> tuple[TaskRecord | None, TaskRecord]:
        """:meth:`change`, returning the record as it was just before (None: created now)
        and as it is now; the same object twice when nothing changed (nothing written)."""
        seen: list[tuple[TaskRecord | None, list[TaskEvent]]] = []

        def apply(current: TaskRecord | None) -> TaskRecord:
            if current is None and not create:
                raise NotFoundError(NO_SUCH_TASK)
            seen[:] = [(current, [])]
            if current is not None and if_live and current.state in TERMINAL:
                return current
            new = change(current)  # type: ignore[arg-type]  # None only with create
            if new is current:
                return current
            new = redact_record(new)  # model answers and tool output land in records
            events = events_between(current, new)
            seen[:] = [(current, events)]
            return msgspec.structs.replace(new, seq=(current.seq if current else 0) + len(events))

        record, _ = await self.records.update(task_id, apply, attempts=CHANGE_ATTEMPTS)
        old, events = seen[0]
        for event in events:
            if event.kind == "state":  # counted once: by the writer whose change was stored
                metrics.task_transitions.add(1, {"state": event.state})
        await self._publish(events)
        return old, record

    async def _publish(self, events: list[TaskEvent]) -> None:
        for event in events:
            try:
                await self.bus.emit(
                    event, "task", event.task_id, msg_id=f"{event.task_id}-{event.seq}"
                )
            except SophiaError:
                log.warning("task_event_lost", extra={"task": event.task_id, "seq": event.seq})

    async def list(self, limit: int, state: str | None = None) -> list[TaskRecord]:
        """Up to ``limit`` records, newest first."""
        try:
            keys = await self.records.kv.keys()
        except nats.js.errors.NoKeysError:
            return []
        found: list[TaskRecord] = []
        for key in keys:
            try:
                record = await self.get(key)
            except SophiaError:
                continue
            if state is None or record.state == state:
                found.append(record)
        found.sort(key=lambda r: r.created_at, reverse=True)
        return found[:limit]
