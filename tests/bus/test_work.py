"""Durable work: ack after success, nak with redelivery, dead letters, dedupe, backpressure."""

from __future__ import annotations

import base64
from collections.abc import AsyncIterator

import anyio
import msgspec
import pytest

from bus import Bus, Settings
from bus.schemas.common import DeadLetter
from bus.subjects import Subjects
from bus.work import backoff
from tests.bus.agents import Job, Worker
from tests.fixtures.nats_server import running
from tests.polling import settle, wait_for

pytestmark = pytest.mark.anyio


@pytest.fixture
async def worker(settings: Settings) -> AsyncIterator[Worker]:
    async with running(Worker(settings)) as agent:
        yield agent


async def consumer_state(bus: Bus) -> tuple[int, int]:
    subjects = bus.subjects
    info = await bus.js.consumer_info(subjects.work_stream, subjects.consumer("worker"))
    return info.num_pending, info.num_ack_pending


async def dead_letters(bus: Bus) -> list[DeadLetter]:
    subjects = Subjects(bus.settings.prefix)
    info = await bus.js.stream_info(subjects.dlq_stream)
    if not info.state.messages:
        return []
    letters = []
    for seq in range(info.state.first_seq, info.state.last_seq + 1):
        msg = await bus.js.get_msg(subjects.dlq_stream, seq)
        letters.append(msgspec.json.decode(msg.data, type=DeadLetter))
    return letters


async def test_work_is_acked_after_handler_succeeds(worker: Worker, bus: Bus) -> None:
    for i in range(20):
        await bus.submit_work("worker", Job(id=f"j{i}"), msg_id=f"j{i}")
    await wait_for(lambda: len(worker.done) == 20)
    await wait_for(lambda: worker._consumer is not None and worker._consumer.acked == 20)
    assert await settle(lambda: consumer_state(bus), (0, 0)) == (0, 0)
    stream = await bus.js.stream_info(bus.subjects.work_stream)
    assert stream.state.messages == 0  # work-queue retention: acked items are gone
    assert worker.msg_ids == {f"j{i}": f"j{i}" for i in range(20)}  # each saw its own headers


async def test_work_retryable_failure_is_redelivered_until_it_succeeds(
    worker: Worker, bus: Bus
) -> None:
    await bus.submit_work("worker", Job(id="flaky", fail_times=2), msg_id="flaky")
    await wait_for(lambda: worker.done == ["flaky"])
    assert worker.attempts["flaky"] == 3
    assert await dead_letters(bus) == []


async def test_work_exhausted_deliveries_go_to_dlq_with_last_error(
    settings: Settings, worker: Worker, bus: Bus
) -> None:
    job = Job(id="doomed", fail_times=100)
    await bus.submit_work("worker", job, msg_id="doomed")
    await wait_for(lambda: len(worker.done) == 0 and worker.dead_lettered_count() == 1, 30)
    [letter] = await dead_letters(bus)
    assert worker.attempts["doomed"] == settings.work_max_deliver
    assert letter.deliveries == settings.work_max_deliver
    assert letter.error == "flaky backend"
    assert letter.code == 503
    assert letter.subject == bus.subjects.work("worker")
    assert letter.headers["Nats-Msg-Id"] == "doomed"
    assert msgspec.json.decode(letter.payload.encode(), type=Job) == job
    assert await settle(lambda: consumer_state(bus), (0, 0)) == (0, 0)


@pytest.mark.parametrize(
    "payload",
    [b'{"id": 7}', b"not json", msgspec.json.encode(Job(id="x", bad=True))],
    ids=["wrong-type", "malformed", "handler-refuses"],
)
async def test_work_bad_input_is_dead_lettered_at_once_not_retried(
    worker: Worker, bus: Bus, payload: bytes
) -> None:
    await bus.js.publish(bus.subjects.work("worker"), payload, headers={"Nats-Msg-Id": "bad"})
    await wait_for(lambda: worker.dead_lettered_count() == 1)
    [letter] = await dead_letters(bus)
    assert letter.deliveries == 1
    assert letter.code == 400
    assert letter.payload.encode() == payload
    assert await settle(lambda: consumer_state(bus), (0, 0)) == (0, 0)


async def test_work_duplicate_msg_id_is_dropped(worker: Worker, bus: Bus) -> None:
    first = await bus.submit_work("worker", Job(id="once"), msg_id="same-id")
    second = await bus.submit_work("worker", Job(id="twice"), msg_id="same-id")
    assert second.duplicate is True
    assert second.seq == first.seq
    await wait_for(lambda: worker.done == ["once"])
    await bus.submit_work("worker", Job(id="marker"), msg_id="marker")
    await wait_for(lambda: "marker" in worker.done)
    assert worker.done == ["once", "marker"]


async def test_work_in_flight_never_exceeds_the_bound(settings: Settings, bus: Bus) -> None:
    bounded = msgspec.structs.replace(settings, work_max_inflight=3, work_batch=2)
    async with anyio.create_task_group() as tg:
        worker = await tg.start(Worker(bounded).run)
        for i in range(30):
            await bus.submit_work("worker", Job(id=f"b{i}", sleep_s=0.05), msg_id=f"b{i}")
        await wait_for(lambda: len(worker.done) == 30)
        worker.stop()
    assert worker._consumer is not None
    assert 2 <= worker._consumer.peak_in_flight <= 3  # concurrent, yet never past the bound
    assert worker.max_seen_in_flight <= 3


def test_backoff_doubles_and_is_capped() -> None:
    assert [backoff(n) for n in (1, 2, 3)] == [0.5, 1.0, 2.0]
    assert backoff(50) == 30.0


async def test_work_item_too_large_for_a_whole_dead_letter_is_kept_truncated_not_stranded(
    worker: Worker, bus: Bus
) -> None:
    size = bus.nc.max_payload - 512
    junk = bytes(range(256)) * (size // 256)  # not JSON, not UTF-8: bad input, base64 grows it
    await bus.js.publish(bus.subjects.work("worker"), junk, headers={"Nats-Msg-Id": "big"})
    await wait_for(lambda: worker.dead_lettered_count() == 1, 30)
    [letter] = await dead_letters(bus)
    stream = await bus.js.stream_info(bus.subjects.work_stream)
    assert letter.truncated and letter.payload_bytes == len(junk)
    kept = base64.b64decode(letter.payload)
    assert letter.encoding == "base64" and 0 < len(kept) < len(junk)
    assert junk.startswith(kept)  # what is kept is the head
    assert stream.state.messages == 0  # terminated: nothing stays behind in SOPHIA_WORK
