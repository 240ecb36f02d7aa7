"""Work done for a task stops when the task ends: cancelled, timed out or failed elsewhere.

:func:`until_task_ends` runs a block in a cancel scope that a watcher cancels as soon as the
task's record shows a final state (or its deadline passes), checked every ``POLL_S``.
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import anyio

from bus.errors import SophiaError
from bus.schemas.tasks import TERMINAL
from tasks.store import TaskStore

POLL_S = 0.5


class Ended:
    """Whether the watched task ended while the block ran (then the block was cancelled)."""

    def __init__(self) -> None:
        self.ended = False
        self.state = ""


@asynccontextmanager
async def until_task_ends(store: TaskStore, task_id: str, deadline: float) -> AsyncIterator[Ended]:
    ended = Ended()
    async with anyio.create_task_group() as tg:

        async def watch() -> None:
            while True:
                await anyio.sleep(POLL_S)
                if time.time() > deadline:
                    ended.ended, ended.state = True, "timeout"
                    break
                try:
                    record = await store.get(task_id)
                except SophiaError:
                    continue
                if record.state in TERMINAL:
                    ended.ended, ended.state = True, record.state
                    break
            tg.cancel_scope.cancel()

        tg.start_soon(watch)
        try:
            yield ended
        finally:
            tg.cancel_scope.cancel()
