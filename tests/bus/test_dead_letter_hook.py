"""The dead-letter hook: after a work item went to the DLQ its agent's ``work_dead_lettered``
is called with the decoded item and the DLQ's error, in a task of its own.

Real nats-server, real agents (:class:`tests.bus.agents.Worker`, the watchdog's Hanger); the
hook of each test agent records what it was told.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator

import anyio
import msgspec
import pytest

from bus import Bus, Settings
from tests.bus.agents import Job, Worker
from tests.bus.test_watchdog import DEADLINE_S, Hang, Hanger
from tests.bus.test_work import dead_letters
from tests.fixtures.nats_server import running
from tests.polling import wait_for

pytestmark = pytest.mark.anyio


class TellingWorker(Worker, name="worker"):
    """A Worker whose dead-letter hook records each call; it raises or hangs when told to."""

    def __init__(self, *args: object, **kwargs: object) -> None:
        super().__init__(*args, **kwargs)
        self.told: list[tuple[Job, str, int]] = []
        self.hook_raises = False
        self.hook_hangs = anyio.Event()  # set: the hook returns
        self.hook_hangs.set()

    async def work_dead_lettered(self, item: Job, error: str, code: int) -> None:
        self.told.append((item, error, code))
        await self.hook_hangs.wait()
        if self.hook_raises:
            raise RuntimeError("the hook broke")


class TellingHanger(Hanger, name="hanger"):
    def __init__(self, *args: object, **kwargs: object) -> None:
        super().__init__(*args, **kwargs)
        self.told: list[tuple[Hang, str, int]] = []

    async def work_dead_lettered(self, item: Hang, error: str, code: int) -> None:
        self.told.append((item, error, code))


@pytest.fixture
async def worker(settings: Settings) -> AsyncIterator[TellingWorker]:
    async with running(TellingWorker(settings)) as agent:
        yield agent


async def test_hook_is_told_an_item_whose_deliveries_ran_out_with_the_dlq_error(
    worker: TellingWorker, bus: Bus
) -> None:
    job = Job(id="doomed", fail_times=100)
    await bus.submit_work("worker", job, msg_id="doomed")
    await wait_for(lambda: worker.told != [], 30)
    [letter] = await dead_letters(bus)
    assert worker.told == [(job, letter.error, letter.code)]
    assert (letter.error, letter.code) == ("flaky backend", 503)


async def test_hook_is_told_a_refused_item_but_not_one_that_does_not_decode(
    worker: TellingWorker, bus: Bus
) -> None:
    work = bus.subjects.work("worker")
    await bus.js.publish(work, b"not json", headers={"Nats-Msg-Id": "garbage"})
    await bus.js.publish(work, b'{"id": 7}', headers={"Nats-Msg-Id": "wrong-type"})
    refused = Job(id="refused", bad=True)
    await bus.submit_work("worker", refused, msg_id="refused")
    await wait_for(lambda: worker.dead_lettered_count() == 3, 30)
    await wait_for(lambda: worker.told != [])
    assert worker.told == [(refused, "id: refused on purpose", 400)]
    assert len(await dead_letters(bus)) == 3


async def test_a_hook_that_raises_is_logged_and_the_consumer_goes_on(
    worker: TellingWorker, bus: Bus, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, logger="sophia.bus")
    worker.hook_raises = True
    await bus.submit_work("worker", Job(id="refused", bad=True), msg_id="refused")
    await wait_for(lambda: "work_dead_letter_hook_failed" in [r.message for r in caplog.records])
    await bus.submit_work("worker", Job(id="next"), msg_id="next")
    await wait_for(lambda: worker.done == ["next"])
    assert [r.message for r in caplog.records].count("work_dead_letter_hook_failed") == 1
    assert "the hook broke" in caplog.text  # in the log's traceback, not on the bus


async def test_a_hook_that_hangs_never_holds_up_the_consumer(
    worker: TellingWorker, bus: Bus
) -> None:
    worker.hook_hangs = anyio.Event()
    await bus.submit_work("worker", Job(id="refused", bad=True), msg_id="refused")
    await wait_for(lambda: len(worker.told) == 1)
    for i in range(5):
        await bus.submit_work("worker", Job(id=f"after{i}"), msg_id=f"after{i}")
    await wait_for(lambda: len(worker.done) == 5)
    assert worker._consumer is not None and worker._consumer.acked == 5
    worker.hook_hangs.set()


async def test_a_hook_is_bounded_by_its_timeout(
    worker: TellingWorker, bus: Bus, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, logger="sophia.bus")
    assert worker._consumer is not None
    worker._consumer.hook_timeout_s = 0.5
    worker.hook_hangs = anyio.Event()  # never set: only the timeout ends the hook
    await bus.submit_work("worker", Job(id="refused", bad=True), msg_id="refused")
    await wait_for(lambda: "work_dead_letter_hook_failed" in [r.message for r in caplog.records])
    assert len(worker.told) == 1


async def test_hook_is_told_when_the_watchdog_gives_up_the_last_delivery(
    settings: Settings, bus: Bus
) -> None:
    hurried = msgspec.structs.replace(settings, work_deadline_s=DEADLINE_S, work_max_deliver=2)
    async with running(TellingHanger(hurried)) as hanger:
        stuck = Hang(id="stuck", hang_times=100)
        await bus.submit_work("hanger", stuck, msg_id="stuck")
        await wait_for(lambda: hanger.told != [], 30)
        [letter] = await dead_letters(bus)
        assert hanger.told == [(stuck, letter.error, 408)]
        assert letter.error == f"handler ran past the work deadline of {DEADLINE_S:g} s"
