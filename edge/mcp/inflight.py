"""Requests being answered in this process, so a client's cancellation can reach them.

A cancellation names a session and a request id; it may arrive at any replica, so it travels
as a :class:`~bus.schemas.edge.CallCancelled` event and every replica cancels what it holds.

Guarantee: cancelling a tracked request cancels its block (the task running it gets one
``CancelledError`` there), and the block's ``with`` swallows that cancellation and nothing
else: a cancellation of the task from elsewhere propagates as ever (asyncio's is counted, so
``Task.uncancel`` tells them apart; an anyio scope's is delivered again at the next await).
This is ``asyncio.timeout``'s technique; an anyio cancel scope per request would do the same
at several times the cost, and every request passes here.
"""

from __future__ import annotations

import asyncio
from typing import Any

import anyio

from edge.mcp.jsonrpc import RequestId


def request_key(request_id: RequestId | None) -> str:
    """Request ids as text, so ``7`` and ``"7"`` from the wire and the event compare equal."""
    return "" if request_id is None else str(request_id)


class Inflight:
    """Running requests, by (session, request id)."""

    def __init__(self) -> None:
        self._running: dict[tuple[str, str], _Tracked] = {}
        self._idle: anyio.Event | None = None  # made only while someone waits

    def __len__(self) -> int:
        return len(self._running)

    def track(self, session: str, request_id: RequestId | None) -> _Tracked:
        """Run the block so that :meth:`cancel` can cancel it."""
        return _Tracked(self, (session, request_key(request_id)))

    async def wait_idle(self) -> None:
        """Return once no tracked request is running."""
        while self._running:
            if self._idle is None:
                self._idle = anyio.Event()
            await self._idle.wait()

    def cancel(self, session: str, request_id: RequestId | str | None) -> bool:
        """Cancel the request if it runs here; return whether it did."""
        tracked = self._running.get((session, request_key(request_id)))
        if tracked is None:
            return False
        tracked.cancel()
        return True

    def _add(self, tracked: _Tracked) -> None:
        self._running[tracked.key] = tracked

    def _remove(self, tracked: _Tracked) -> None:
        if self._running.get(tracked.key) is tracked:
            del self._running[tracked.key]
        if not self._running and self._idle is not None:
            self._idle.set()
            self._idle = None


class _Tracked:
    """One tracked request's block."""

    __slots__ = ("_cancelling", "_inflight", "_task", "key")

    def __init__(self, inflight: Inflight, key: tuple[str, str]) -> None:
        self._inflight = inflight
        self.key = key
        self._task: asyncio.Task[Any] | None = None
        self._cancelling = False

    @property
    def cancelled(self) -> bool:
        """Whether :meth:`Inflight.cancel` cancelled this block."""
        return self._cancelling

    def cancel(self) -> None:
        if self._task is not None and not self._cancelling:
            self._cancelling = True
            self._task.cancel()

    def __enter__(self) -> _Tracked:
        self._task = asyncio.current_task()
        self._inflight._add(self)
        return self

    def __exit__(self, exc_type: type[BaseException] | None, *rest: Any) -> bool:
        self._inflight._remove(self)
        if not self._cancelling or self._task is None:
            return False
        # ours to swallow only if no one else asked the task to stop as well
        return self._task.uncancel() == 0 and exc_type is asyncio.CancelledError
