"""Requests being answered in this process, so a client's cancellation can reach them.

A cancellation names a session and a request id; it may arrive at any replica, so it travels
as a :class:`~bus.schemas.edge.CallCancelled` event and every replica cancels what it holds.
"""

from __future__ import annotations

from typing import Any

import anyio

from edge.mcp.jsonrpc import RequestId


def request_key(request_id: RequestId | None) -> str:
    """Request ids as text, so ``7`` and ``"7"`` from the wire and the event compare equal."""
    return "" if request_id is None else str(request_id)


class Inflight:
    """Cancel scopes of running requests, by (session, request id)."""

    def __init__(self) -> None:
        self._scopes: dict[tuple[str, str], anyio.CancelScope] = {}
        self._idle: anyio.Event | None = None  # made only while someone waits

    def __len__(self) -> int:
        return len(self._scopes)

    def track(self, session: str, request_id: RequestId | None) -> _Tracked:
        """Run the block in a scope that :meth:`cancel` can cancel."""
        return _Tracked(self, (session, request_key(request_id)))

    async def wait_idle(self) -> None:
        """Return once no tracked request is running."""
        while self._scopes:
            if self._idle is None:
                self._idle = anyio.Event()
            await self._idle.wait()

    def cancel(self, session: str, request_id: RequestId | str | None) -> bool:
        """Cancel the request if it runs here; return whether it did."""
        scope = self._scopes.get((session, request_key(request_id)))
        if scope is None:
            return False
        scope.cancel()
        return True

    def _add(self, key: tuple[str, str], scope: anyio.CancelScope) -> None:
        self._scopes[key] = scope

    def _remove(self, key: tuple[str, str], scope: anyio.CancelScope) -> None:
        if self._scopes.get(key) is scope:
            del self._scopes[key]
        if not self._scopes and self._idle is not None:
            self._idle.set()
            self._idle = None


class _Tracked:
    """One tracked request's block (a plain class: every request passes here)."""

    __slots__ = ("_inflight", "_key", "_scope")

    def __init__(self, inflight: Inflight, key: tuple[str, str]) -> None:
        self._inflight = inflight
        self._key = key
        self._scope = anyio.CancelScope()

    def __enter__(self) -> anyio.CancelScope:
        scope = self._scope.__enter__()
        self._inflight._add(self._key, scope)
        return scope

    def __exit__(self, *exc_info: Any) -> bool:
        self._inflight._remove(self._key, self._scope)
        return bool(self._scope.__exit__(*exc_info))
