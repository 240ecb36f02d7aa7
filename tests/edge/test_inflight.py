"""In-flight requests: a client's cancellation stops its block; no other one is lost."""

from __future__ import annotations

import asyncio

import anyio
import pytest

from edge.mcp.inflight import Inflight

pytestmark = pytest.mark.anyio


async def test_inflight_cancel_stops_the_block_and_goes_no_further() -> None:
    inflight = Inflight()
    reached: list[str] = []

    async def request() -> None:
        with inflight.track("s", 7):
            reached.append("started")
            await anyio.sleep(30)
            reached.append("finished")  # never: the block is cancelled
        reached.append("after")

    async with anyio.create_task_group() as tg:
        tg.start_soon(request)
        with anyio.fail_after(5):
            while not len(inflight):  # noqa: ASYNC110
                await anyio.sleep(0.01)
        assert inflight.cancel("s", "7")  # ids compare as text
    assert reached == ["started", "after"]
    assert len(inflight) == 0
    assert not inflight.cancel("s", 7)


async def test_inflight_outer_cancellation_is_not_swallowed() -> None:
    inflight = Inflight()
    reached: list[str] = []

    async def request() -> None:
        with inflight.track("s", 1):
            await anyio.sleep(30)
        reached.append("after")
        await anyio.sleep(30)
        reached.append("resumed")  # never: the task group is cancelling the task

    with anyio.fail_after(5):
        async with anyio.create_task_group() as tg:
            tg.start_soon(request)
            while not len(inflight):  # noqa: ASYNC110
                await anyio.sleep(0.01)
            inflight.cancel("s", 1)  # both at once: the group's cancellation still wins
            tg.cancel_scope.cancel()
    assert "resumed" not in reached
    assert len(inflight) == 0


async def test_inflight_native_cancellation_at_the_same_time_propagates() -> None:
    inflight = Inflight()
    started = asyncio.Event()

    async def request() -> str:
        with inflight.track("s", 1):
            started.set()
            await asyncio.sleep(30)
        return "swallowed"

    task = asyncio.get_running_loop().create_task(request())
    await started.wait()
    inflight.cancel("s", 1)
    task.cancel()  # e.g. the stdio server cancelling what is left at shutdown
    with pytest.raises(asyncio.CancelledError):
        await task
    assert len(inflight) == 0


async def test_inflight_wait_idle_returns_when_the_last_request_ends() -> None:
    inflight = Inflight()
    release = anyio.Event()

    async def request(i: int) -> None:
        with inflight.track("s", i):
            await release.wait()

    async with anyio.create_task_group() as tg:
        for i in range(3):
            tg.start_soon(request, i)
        while len(inflight) < 3:  # noqa: ASYNC110
            await anyio.sleep(0.01)
        with anyio.move_on_after(0.1) as early:
            await inflight.wait_idle()
        release.set()
        with anyio.fail_after(5):
            await inflight.wait_idle()
    assert early.cancelled_caught
    assert len(inflight) == 0
