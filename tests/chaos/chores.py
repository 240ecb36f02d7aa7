"""The chaos run's durable-work agent, run as a process the test kills:
``python -m bus.runner tests.chaos.chores``.

Its effect is an event published with ``Nats-Msg-Id`` = ``done-<chore id>``, so a chore
redelivered after its first handler died past the effect (before the ack) is absorbed by the
events stream's duplicate window: at-least-once delivery, once in effect. Each completion is
also appended to ``$CHAOS_COMPLETIONS``, so the test sees how often that happened.
"""

from __future__ import annotations

import os

import anyio
import msgspec

from bus import Agent, BadRequestError, work


class Chore(msgspec.Struct, kw_only=True):
    id: str
    sleep_s: float = 0.05
    poison: bool = False  # refused as bad input: it must end in the DLQ, alone


class ChoreDone(msgspec.Struct, kw_only=True):
    id: str
    pid: int


class ChoreWorker(Agent, name="chores"):
    """Does one chore: waits ``sleep_s``, then says so once (deduplicated by its id)."""

    @work
    async def handle(self, chore: Chore) -> None:
        if chore.poison:
            raise BadRequestError("poison: refused on purpose")
        await anyio.sleep(chore.sleep_s)
        done = ChoreDone(id=chore.id, pid=os.getpid())
        await self.bus.emit(done, "chaos", "done", msg_id=f"done-{chore.id}")
        async with await anyio.open_file(os.environ["CHAOS_COMPLETIONS"], "a") as out:
            await out.write(chore.id + "\n")
