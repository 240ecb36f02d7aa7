"""The bus's NATS client: publishes written without a flusher hop, and direct delivery."""

from __future__ import annotations

from collections.abc import AsyncIterator

import anyio
import anyio.lowlevel
import nats
import pytest
from nats.aio.client import Client
from nats.aio.msg import Msg

from bus.config import Settings
from bus.connection import connect
from bus.wire import Wire

pytestmark = pytest.mark.anyio


@pytest.fixture
async def wire(settings: Settings) -> AsyncIterator[Wire]:
    nc = await connect(settings, "test-wire")
    yield nc
    await nc.close()


@pytest.fixture
async def plain(settings: Settings) -> AsyncIterator[Client]:
    nc = await nats.connect(settings.nats_url)
    yield nc
    await nc.close()


async def collect(nc: Client, subject: str, count: int) -> tuple[list[bytes], anyio.Event]:
    got: list[bytes] = []
    done = anyio.Event()

    async def take(msg: Msg) -> None:
        got.append(msg.data)
        if len(got) == count:
            done.set()

    await nc.subscribe(subject, cb=take)
    await nc.flush()
    return got, done


async def test_a_turns_publishes_leave_in_one_write_at_its_end_without_the_flusher(
    wire: Wire, plain: Client, settings: Settings
) -> None:
    subject = f"{settings.prefix}.wire.turn"
    got, done = await collect(plain, subject, 3)
    for i in range(3):
        await wire.publish(subject, str(i).encode())
    assert len(wire._pending) == 3  # waiting for the end of the turn
    assert wire._flush_queue is not None and wire._flush_queue.empty()  # no flusher woken
    await anyio.lowlevel.checkpoint()  # the turn ends
    assert wire._pending == []
    with anyio.fail_after(5):
        await done.wait()
    assert got == [b"0", b"1", b"2"]


async def test_a_burst_that_backs_up_the_socket_arrives_whole_and_in_order(
    wire: Wire, plain: Client, settings: Settings
) -> None:
    subject = f"{settings.prefix}.wire.burst"
    count, body = 4000, b"x" * 16_384  # 64 MiB in one turn: far beyond the socket buffer
    got, done = await collect(plain, subject, count)
    for i in range(count):
        await wire.publish(subject, b"%d:" % i + body)
    await wire.flush()
    with anyio.fail_after(60):
        await done.wait()
    assert [int(data.split(b":", 1)[0]) for data in got] == list(range(count))


async def test_direct_delivery_hands_over_in_order_and_falls_back_to_the_callback(
    wire: Wire, settings: Settings
) -> None:
    subject = f"{settings.prefix}.wire.direct"
    order: list[tuple[str, int]] = []
    room = {"left": 5}
    gate = anyio.Event()

    def direct(msg: Msg) -> bool:
        if room["left"] == 0:
            return False
        room["left"] -= 1
        order.append(("direct", int(msg.data)))
        return True

    async def callback(msg: Msg) -> None:  # the slow path, held until the gate opens
        await gate.wait()
        order.append(("callback", int(msg.data)))

    async def publish(numbers: range) -> None:
        for i in numbers:
            await wire.publish(subject, str(i).encode())
        await wire.flush()

    async def handled(count: int) -> None:
        with anyio.fail_after(10):
            while len(order) < count:  # noqa: ASYNC110
                await anyio.sleep(0.01)

    sub = await wire.subscribe(subject, cb=callback)
    wire.deliver_directly(sub, direct)
    await publish(range(10))  # 0-4 taken directly, 5 refused, 6-9 queue behind it
    await handled(5)
    room["left"] = 2  # room again, but 6-9 still wait in the queue
    await publish(range(10, 12))
    await anyio.sleep(0.1)
    assert order == [("direct", i) for i in range(5)]  # 10 and 11 did not overtake 6-9
    gate.set()
    await handled(12)
    assert order[5:] == [("callback", i) for i in range(5, 12)]
    await publish(range(12, 14))  # the queue is empty and there is room: direct again
    await handled(14)
    assert order[12:] == [("direct", 12), ("direct", 13)]


async def test_direct_delivery_parses_headers(wire: Wire, settings: Settings) -> None:
    subject = f"{settings.prefix}.wire.headers"
    seen: list[Msg] = []

    async def unused(msg: Msg) -> None:
        raise AssertionError("the direct handler took every message")

    sub = await wire.subscribe(subject, cb=unused)
    wire.deliver_directly(sub, lambda msg: seen.append(msg) or True)
    await wire.publish(subject, b"body", headers={"traceparent": "00-ab-cd-01", "X-One": "1"})
    with anyio.fail_after(5):
        while not seen:  # noqa: ASYNC110
            await anyio.sleep(0.01)
    assert seen[0].data == b"body"
    assert seen[0].headers == {"traceparent": "00-ab-cd-01", "X-One": "1"}
    assert seen[0].subject == subject


async def test_publishing_faster_than_the_socket_drains_stays_bounded(
    wire: Wire, plain: Client, settings: Settings
) -> None:
    """One large publish per loop turn: once the socket backs up, nats-py's flusher paces it."""
    subject = f"{settings.prefix}.wire.pace"
    body = b"y" * 512 * 1024
    await collect(plain, subject, 0)  # a Python subscriber keeps the server busy writing
    socket_buffer = wire._transport._io_writer.transport  # type: ignore[union-attr]
    buffered = 0
    for _ in range(300):  # 150 MiB
        await wire.publish(subject, body)
        buffered = max(buffered, socket_buffer.get_write_buffer_size())
        await anyio.lowlevel.checkpoint()  # the next publish is the first in its turn
    await wire.flush()
    assert buffered < 4 * 1_048_576, f"{buffered} bytes waited in the socket buffer"
