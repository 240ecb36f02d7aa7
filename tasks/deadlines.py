"""Which live tasks are past their deadline, kept current by a watch on ``<prefix>_tasks``.

Every planner replica runs one :class:`Deadlines`: the watch delivers each record once at
start and then every change, so the replica knows the deadline of every live task without
reading the bucket again (finished tasks are forgotten as they end). :meth:`overdue` is a
look at that map. When the watch ends (the connection dropped), it starts again after
``RETRY_S``: a few seconds late, a timeout is still seen.
"""

from __future__ import annotations

import logging

import anyio
import msgspec
import nats.errors
from nats.js.kv import KeyValue

from bus.records import watching
from bus.schemas.tasks import TERMINAL

log = logging.getLogger("sophia.tasks")

RETRY_S = 1.0


class _Deadline(msgspec.Struct):
    """The two fields of a task record a deadline check needs (the rest is skipped)."""

    state: str = ""
    deadline: float = 0.0


_decoder = msgspec.json.Decoder(_Deadline)


class Deadlines:
    def __init__(self, kv: KeyValue) -> None:
        self._kv = kv
        self._live: dict[str, float] = {}

    def overdue(self, now: float) -> list[str]:
        """The live tasks whose deadline has passed (they stay listed until they end)."""
        return [task_id for task_id, deadline in self._live.items() if now > deadline]

    def _apply(self, key: str, value: bytes | None) -> None:
        if value is None:
            self._live.pop(key, None)
            return
        try:
            record = _decoder.decode(value)
        except (msgspec.DecodeError, msgspec.ValidationError):
            return
        if record.state in TERMINAL:
            self._live.pop(key, None)
        else:
            self._live[key] = record.deadline

    async def run(self) -> None:
        """Follow the bucket until cancelled."""
        while True:
            try:
                async with watching(self._kv, ">") as watcher:
                    async for entry in watcher:
                        if entry is not None:
                            deleted = entry.operation is not None  # DEL or PURGE
                            self._apply(entry.key, None if deleted else entry.value)
            except nats.errors.Error as exc:
                log.warning("task_deadlines_watch_lost", extra={"error": type(exc).__name__})
            await anyio.sleep(RETRY_S)
