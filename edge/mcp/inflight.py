"""Requests being answered in this process, so a client's cancellation can reach them.

A cancellation names a session and a request id; it may arrive at any replica, so it travels
as a :class:`~bus.schemas.edge.CallCancelled` event and every replica cancels what it holds.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import anyio

from edge.mcp.jsonrpc import RequestId


def request_key(request_id: RequestId | None) -> str:
    """Request ids as text, so ``7`` and ``"7"`` from the wire and the event compare equal."""
    return "" if request_id is None else str(request_id)


class Inflight:
    """Cancel scopes of running requests, by (session, request id)."""

    def __init__(self) -> None:
        self._scopes: dict[tuple[str, str], anyio.CancelScope] = {}
        self._idle = anyio.Event()
        self._idle.set()

    def __len__(self) -> int:
        return len(self._scopes)

    @contextmanager
    def track(self, session: str, request_id: RequestId | None) -> Iterator[anyio.CancelScope]:
        """Run the block in a scope that :meth:`cancel` can cancel."""
        key = (session, request_key(request_id))
        with anyio.CancelScope() as scope:
            self._scopes[key] = scope
            if self._idle.is_set():
                self._idle = anyio.Event()
            try:
                yield scope
            finally:
                if self._scopes.get(key) is scope:
                    del self._scopes[key]
                if not self._scopes:
                    self._idle.set()

    async def wait_idle(self) -> None:
        """Return once no tracked request is running."""
        while self._scopes:
            await self._idle.wait()

    def cancel(self, session: str, request_id: RequestId | str | None) -> bool:
        """Cancel the request if it runs here; return whether it did."""
        scope = self._scopes.get((session, request_key(request_id)))
        if scope is None:
            return False
        scope.cancel()
        return True
