"""One request's context as the SDK kernel sees it, and what the edge's handlers need from it.

The kernel (``mcp.server.runner.ServerRunner``) takes a ``DispatchContext``; :class:`Exchange`
is the edge's: it carries a :class:`CallScope` (who is calling, through which transport, with
which allow-list) as the transport's request context, so handlers read it from
``ctx.request``. Notifications (progress) go to ``send``, which the transport provides; the
edge never sends requests to the client.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from typing import Any

import anyio
from mcp.shared.dispatcher import CallOptions
from mcp.shared.exceptions import NoBackChannelError
from mcp.shared.message import ServerMessageMetadata
from mcp.shared.transport_context import TransportContext

from edge.access import Principal, matches_any
from edge.mcp.jsonrpc import RequestId

Send = Callable[[str, dict[str, Any] | None], Awaitable[None]]


async def _drop(method: str, params: dict[str, Any] | None) -> None:
    """Where notifications go when the transport has no channel for them."""


@dataclass(slots=True)
class CallScope:
    """Who is calling and how: what the edge's MCP handlers read from ``ctx.request``."""

    principal: Principal
    transport: str  # "mcp-stdio" | "mcp-http"
    session_id: str = ""
    allow: tuple[str, ...] = ()  # the client's and the edge's tool patterns, all must match
    edge_allow: tuple[str, ...] = ()
    carrier: dict[str, str] | None = None  # incoming trace headers
    request_id: RequestId | None = None
    progress_token: str | int | None = None
    send: Send = _drop

    def for_request(
        self,
        request_id: RequestId | None,
        progress_token: str | int | None,
        carrier: dict[str, str] | None,
    ) -> CallScope:
        """This scope for one request (``dataclasses.replace`` costs several times more)."""
        return CallScope(
            self.principal,
            self.transport,
            self.session_id,
            self.allow,
            self.edge_allow,
            carrier,
            request_id,
            progress_token,
            self.send,
        )

    def lists(self, tool_name: str) -> bool:
        """Whether every allow-list in force keeps ``tool_name``."""
        return (
            matches_any(tool_name, self.edge_allow)
            and matches_any(tool_name, self.allow)
            and self.principal.lists(tool_name)
        )

    async def progress(self, progress: float, total: float | None, message: str | None) -> None:
        """Send ``notifications/progress`` for this request, if the client asked for progress."""
        if self.progress_token is None:
            return
        params: dict[str, Any] = {"progressToken": self.progress_token, "progress": progress}
        if total:
            params["total"] = total
        if message:
            params["message"] = message
        await self.send("notifications/progress", params)


_TRANSPORTS = {
    "mcp-stdio": TransportContext(kind="stdio", can_send_request=False),
    "mcp-http": TransportContext(kind="streamable-http", can_send_request=False),
}


class Exchange:
    """A ``DispatchContext`` for one inbound request or notification."""

    __slots__ = ("_cancel", "message_metadata", "request_id", "scope", "transport")

    can_send_request = False

    def __init__(self, scope: CallScope, request_id: RequestId | None) -> None:
        self.scope = scope
        self.request_id = request_id
        self.transport = _TRANSPORTS[scope.transport]
        self.message_metadata = ServerMessageMetadata(request_context=scope, can_send_request=False)
        self._cancel: anyio.Event | None = None

    @property
    def cancel_requested(self) -> anyio.Event:
        if self._cancel is None:
            self._cancel = anyio.Event()
        return self._cancel

    async def send_raw_request(
        self, method: str, params: Mapping[str, Any] | None, opts: CallOptions | None = None
    ) -> dict[str, Any]:
        raise NoBackChannelError(method)

    async def notify(
        self, method: str, params: Mapping[str, Any] | None, opts: CallOptions | None = None
    ) -> None:
        await self.scope.send(method, dict(params) if params is not None else None)

    async def progress(
        self, progress: float, total: float | None = None, message: str | None = None
    ) -> None:
        await self.scope.progress(progress, total, message)


class NoChannel:
    """A connection's standalone channel where the edge sends nothing through the SDK."""

    async def send_raw_request(
        self, method: str, params: Mapping[str, Any] | None, opts: CallOptions | None = None
    ) -> dict[str, Any]:
        raise NoBackChannelError(method)

    async def notify(
        self, method: str, params: Mapping[str, Any] | None, opts: CallOptions | None = None
    ) -> None:
        return None
