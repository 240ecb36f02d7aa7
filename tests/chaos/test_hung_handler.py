"""Chaos: a replica whose handlers never return; the watchdog sends its items elsewhere.

Replica ``stuck`` blocks in a thread on every item (a call into a dependency that never
answers, which no cancellation reaches), so it keeps reporting them in progress and, without
a bound, they would never be redelivered. With ``work_deadline_s`` the watchdog gives them up
and the healthy replica does them; the stuck one's slots stay taken, so it asks for no more
work. When its dependency finally fails, the late failure is neither acked nor nak'ed.
"""

from __future__ import annotations

import threading
import time

import anyio
import msgspec
import pytest

from bus import Agent, Bus, Settings, work
from tests.chaos.figures import counted, figure
from tests.fixtures.nats_server import running
from tests.polling import settle, wait_for

pytestmark = [pytest.mark.anyio, pytest.mark.chaos]

ITEMS = 20
STUCK_SLOTS = 2
DEADLINE_S = 1.5  # well below ack_wait (5 s): only the watchdog frees an item this early


class Item(msgspec.Struct, kw_only=True):
    id: str


class Replica(Agent, name="replica"):
    """Records each item it finishes; while ``gate`` is given, blocks on it and then fails."""

    gate: threading.Event | None = None
    finished: dict[str, float]
    taken: dict[str, float]

    @work
    async def handle(self, item: Item) -> None:
        self.taken.setdefault(item.id, time.monotonic())
        if self.gate is not None:
            await anyio.to_thread.run_sync(self.gate.wait)
            raise ConnectionError("the dependency hung up at last")
        self.finished[item.id] = time.monotonic()


def replica(settings: Settings, gate: threading.Event | None = None) -> Replica:
    agent = Replica(settings)
    agent.gate, agent.finished, agent.taken = gate, {}, {}
    return agent


async def test_items_of_a_replica_whose_handlers_never_return_are_done_by_another(
    settings: Settings, bus: Bus
) -> None:
    watched = msgspec.structs.replace(settings, work_deadline_s=DEADLINE_S)
    narrow = msgspec.structs.replace(watched, work_max_inflight=STUCK_SLOTS, work_batch=1)
    gate = threading.Event()
    try:
        async with running(replica(narrow, gate)) as stuck:
            sent = [f"i{n:03d}" for n in range(ITEMS)]
            for item_id in sent:
                await bus.submit_work("replica", Item(id=item_id), msg_id=item_id)
            await wait_for(lambda: len(stuck.taken) == STUCK_SLOTS)
            async with running(replica(watched)) as healthy:
                await wait_for(lambda: len(healthy.finished) == ITEMS, 30)
                consumer = stuck._consumer
                assert consumer is not None
                expired, acked = consumer.expired, consumer.acked
                gate.set()  # the dependency fails at last: a late failure, nothing more
                await wait_for(lambda: consumer.in_flight == 0)
                info = await settle(lambda: _consumer_state(bus), (0, 0))
    finally:
        gate.set()
    recovery = max(healthy.finished[i] - at for i, at in stuck.taken.items())
    counts = counted(sent, [*healthy.finished, *stuck.finished])
    assert set(stuck.taken) <= set(healthy.finished)  # every item the stuck one held, done
    assert (counts["lost"], counts["duplicated"]) == (0, 0)
    assert (expired, acked) == (STUCK_SLOTS, 0)
    assert info == (0, 0)
    assert await _dead_letters(bus) == 0
    figure(
        "hung_handler",
        counts,
        recovery,
        deadline_s=DEADLINE_S,
        held_by_stuck=len(stuck.taken),
        given_up=expired,
    )


async def _consumer_state(bus: Bus) -> tuple[int, int]:
    subjects = bus.subjects
    info = await bus.js.consumer_info(subjects.work_stream, subjects.consumer("replica"))
    return info.num_pending, info.num_ack_pending


async def _dead_letters(bus: Bus) -> int:
    return (await bus.js.stream_info(bus.subjects.dlq_stream)).state.messages
