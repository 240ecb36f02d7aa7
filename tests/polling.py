"""Waiting for a condition in tests, with a bound: the test fails instead of hanging."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import TypeVar

import anyio

T = TypeVar("T")


async def wait_for(check: Callable[[], bool], limit_s: float = 15.0) -> None:
    """Poll ``check`` until it holds. Raises TimeoutError when ``limit_s`` passes first."""
    with anyio.fail_after(limit_s):
        while not check():  # noqa: ASYNC110 — the condition lives outside anyio
            await anyio.sleep(0.02)


async def settle(read: Callable[[], Awaitable[T]], expected: T, limit_s: float = 15.0) -> T:
    """Re-read an async value until it equals ``expected``; return the last reading.

    For server state that follows a fire-and-forget message (an ack, say) a moment later.
    """
    value = await read()
    with anyio.move_on_after(limit_s):
        while value != expected:
            await anyio.sleep(0.02)
            value = await read()
    return value
