"""The work watchdog: a handler past ``work_deadline_s`` is given up on, its item goes on.

A handler that never returns would otherwise hold its item for ever: the consumer reports it
in progress every third of ``ack_wait_s``, so the server never redelivers it.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator

import anyio
import msgspec
import pytest

from bus import Agent, Bus, Settings, work
from tests.bus.test_work import dead_letters
from tests.fixtures.nats_server import running
from tests.polling import settle, wait_for

pytestmark = pytest.mark.anyio

DEADLINE_S = 1.0


class Hang(msgspec.Struct, kw_only=True):
    id: str
    hang_times: int = 0  # the first N deliveries never return
    sleep_s: float = 0.0  # how long a delivery that does return takes


class Hanger(Agent, name="hanger"):
    """Hangs (cancellably) on the first ``hang_times`` deliveries of an item."""

    def __init__(self, *args: object, **kwargs: object) -> None:
        super().__init__(*args, **kwargs)  # type: ignore[arg-type]
        self.attempts: dict[str, int] = {}
        self.done: list[str] = []

    @work
    async def handle(self, item: Hang) -> None:
        self.attempts[item.id] = self.attempts.get(item.id, 0) + 1
        if self.attempts[item.id] <= item.hang_times:
            await anyio.sleep_forever()
        await anyio.sleep(item.sleep_s)
        self.done.append(item.id)


async def consumer_state(bus: Bus) -> tuple[int, int]:
    subjects = bus.subjects
    info = await bus.js.consumer_info(subjects.work_stream, subjects.consumer("hanger"))
    return info.num_pending, info.num_ack_pending


@pytest.fixture
def hurried(settings: Settings) -> Settings:
    """A deadline far below ack_wait (5 s): only the watchdog can free an item in time."""
    return msgspec.structs.replace(settings, work_deadline_s=DEADLINE_S, work_max_deliver=2)


@pytest.fixture
async def hanger(hurried: Settings) -> AsyncIterator[Hanger]:
    async with running(Hanger(hurried)) as agent:
        yield agent


async def test_watchdog_gives_up_a_hung_handler_and_the_item_is_done_on_redelivery(
    hanger: Hanger, bus: Bus, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, logger="sophia.bus")
    await bus.submit_work("hanger", Hang(id="h1", hang_times=1), msg_id="h1")
    await wait_for(lambda: hanger.done == ["h1"], 20)
    assert hanger.attempts == {"h1": 2}
    assert hanger._consumer is not None
    assert (hanger._consumer.expired, hanger._consumer.acked) == (1, 1)
    assert [r.message for r in caplog.records].count("work_deadline_exceeded") == 1
    assert await settle(lambda: consumer_state(bus), (0, 0)) == (0, 0)
    assert await dead_letters(bus) == []


async def test_watchdog_dead_letters_an_item_whose_every_delivery_hangs(
    hanger: Hanger, bus: Bus, hurried: Settings
) -> None:
    await bus.submit_work("hanger", Hang(id="stuck", hang_times=100), msg_id="stuck")
    await wait_for(lambda: hanger._consumer is not None and hanger._consumer.dead_lettered, 30)
    [letter] = await dead_letters(bus)
    assert hanger.attempts == {"stuck": hurried.work_max_deliver}
    assert (letter.code, letter.deliveries) == (408, hurried.work_max_deliver)
    assert letter.error == f"handler ran past the work deadline of {DEADLINE_S:g} s"
    assert hanger.done == []
    assert await settle(lambda: consumer_state(bus), (0, 0)) == (0, 0)


async def test_watchdog_leaves_a_handler_within_its_deadline_alone(
    settings: Settings, bus: Bus
) -> None:
    # the handler outlives ack_wait: heartbeats keep it, and its deadline is far off
    patient = msgspec.structs.replace(settings, work_ack_wait_s=1.0, work_deadline_s=30.0)
    async with running(Hanger(patient)) as agent:
        await bus.submit_work("hanger", Hang(id="slow", sleep_s=2.0), msg_id="slow")
        await wait_for(lambda: agent.done == ["slow"])
        assert agent._consumer is not None
        await wait_for(lambda: agent._consumer is not None and agent._consumer.acked == 1)
    assert agent.attempts == {"slow": 1}
    assert agent._consumer.expired == 0
