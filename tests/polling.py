"""Waiting for a condition in tests, with a bound: the test fails instead of hanging."""

from __future__ import annotations

from collections.abc import Callable

import anyio


async def wait_for(check: Callable[[], bool], limit_s: float = 15.0) -> None:
    """Poll ``check`` until it holds. Raises TimeoutError when ``limit_s`` passes first."""
    with anyio.fail_after(limit_s):
        while not check():  # noqa: ASYNC110 — the condition lives outside anyio
            await anyio.sleep(0.02)
