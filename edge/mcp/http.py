"""MCP over streamable HTTP at ``/mcp``, with sessions any replica can serve.

POST carries one JSON-RPC message: ``initialize`` opens a session (``Mcp-Session-Id``) stored
in KV; every later message names it, and an unknown one gets 404 so the client re-initialises.
A request is answered as JSON, or as an event stream when it asked for progress and accepts
one. GET opens the session's event stream for ``notifications/tools/list_changed``; DELETE
ends the session. Requests in the 2026-07-28 envelope (``MCP-Protocol-Version`` says so) need
no session. ``?tools=memory_*,…`` on the URL is the client's tool allow-list.
"""

from __future__ import annotations

import urllib.parse
from dataclasses import dataclass
from typing import Any

import anyio
from mcp.shared.inbound import MCP_PROTOCOL_VERSION_HEADER
from mcp_types.version import HANDSHAKE_PROTOCOL_VERSIONS, MODERN_PROTOCOL_VERSIONS
from starlette.types import Receive, Scope, Send

from bus.errors import BadRequestError, NotFoundError, OverLimitError
from bus.schemas.edge import CallCancelled
from edge.access import Principal, check_pattern
from edge.catalog import Catalog
from edge.gateway import Gateway
from edge.mcp import jsonrpc
from edge.mcp.core import McpCore, progress_token
from edge.mcp.exchange import CallScope
from edge.mcp.inflight import Inflight
from edge.mcp.jsonrpc import Message, RpcError
from edge.mcp.sessions import Session, Sessions
from edge.web import header, headers_dict, read_body, respond, respond_json

SESSION_HEADER = b"mcp-session-id"
SSE = b"text/event-stream"
REQUEST_CANCELLED = -32800
_TRACE_HEADERS = (b"traceparent", b"tracestate")
_MODERN_HEADERS = (b"mcp-protocol-version", b"mcp-method", b"mcp-name")


class SseStream:
    """One event stream response; writes are serialised."""

    def __init__(self, send: Send) -> None:
        self._send = send
        self._lock = anyio.Lock()

    async def open(self, headers: list[tuple[bytes, bytes]] | None = None) -> None:
        base = [(b"content-type", SSE), (b"cache-control", b"no-store")]
        await self._send(
            {"type": "http.response.start", "status": 200, "headers": base + (headers or [])}
        )

    async def event(self, data: bytes) -> None:
        await self._chunk(b"event: message\ndata: " + data + b"\n\n")

    async def comment(self, text: bytes) -> None:
        await self._chunk(b": " + text + b"\n\n")

    async def close(self) -> None:
        async with self._lock:
            await self._send({"type": "http.response.body", "body": b"", "more_body": False})

    async def _chunk(self, body: bytes) -> None:
        async with self._lock:
            await self._send({"type": "http.response.body", "body": body, "more_body": True})


@dataclass
class HttpLimits:
    max_body_bytes: int
    max_streams: int
    keepalive_s: float
    edge_allow: tuple[str, ...]


class McpHttp:
    """The ASGI app behind ``/mcp``; callers have been admitted (auth, rate) already."""

    def __init__(
        self,
        core: McpCore,
        sessions: Sessions,
        gateway: Gateway,
        catalog: Catalog,
        inflight: Inflight,
        limits: HttpLimits,
        closing: anyio.Event,
    ) -> None:
        self.core = core
        self.sessions = sessions
        self.gateway = gateway
        self.catalog = catalog
        self.inflight = inflight
        self.limits = limits
        self.closing = closing
        self._streams: set[str] = set()

    async def handle(self, scope: Scope, receive: Receive, send: Send, who: Principal) -> None:
        """Serve one request to ``/mcp``. Raises SophiaError for the HTTP-level refusals."""
        method = scope["method"]
        if method == "POST":
            await self._post(scope, receive, send, who)
        elif method == "GET":
            await self._stream(scope, receive, send, who, await self._session(scope, who))
        elif method == "DELETE":
            await self.sessions.end(await self._session(scope, who))
            await respond(send, 200)
        else:
            await respond_json(
                send, 405, {"error": "method not allowed", "code": 405},
                headers=[(b"allow", b"GET, POST, DELETE")],
            )  # fmt: skip

    # ---- POST ------------------------------------------------------------------------------

    async def _post(self, scope: Scope, receive: Receive, send: Send, who: Principal) -> None:
        body = await read_body(scope, receive, self.limits.max_body_bytes)
        try:
            msg = jsonrpc.decode(body)
        except RpcError as exc:
            await respond(send, 400, jsonrpc.error(exc.request_id, exc.code, exc.message))
            return
        version = header(scope, _VERSION_HEADER)
        if version in MODERN_PROTOCOL_VERSIONS:
            await self._modern(scope, send, who, msg)
        elif version is not None and version not in HANDSHAKE_PROTOCOL_VERSIONS:
            raise BadRequestError(f"unsupported MCP-Protocol-Version {version[:32]!r}")
        elif msg.is_request and msg.method == "initialize":
            await self._initialize(scope, send, who, msg)
        else:
            await self._in_session(scope, send, who, await self._session(scope, who), msg)

    async def _initialize(self, scope: Scope, send: Send, who: Principal, msg: Message) -> None:
        session = self.sessions.open(who, _client_allow(scope))
        reply = await self.core.answer(session.runner, msg, self._scope(scope, who, session, msg))
        headers = []
        if session.runner.connection.client_params is not None:  # the handshake succeeded
            await self.sessions.save(session, msg.params or {})
            headers.append((SESSION_HEADER, session.id.encode()))
        await respond(send, 200, reply, headers=headers)

    async def _in_session(
        self, scope: Scope, send: Send, who: Principal, session: Session, msg: Message
    ) -> None:
        if msg.is_request:
            await self._request(scope, send, self._scope(scope, who, session, msg), session, msg)
            return
        if msg.is_notification and msg.method == "notifications/cancelled":
            event = CallCancelled(
                session=session.id,
                request_id=str((msg.params or {}).get("requestId", "")),
                reason=str((msg.params or {}).get("reason", ""))[:200],
            )
            await self.gateway.announce_cancel(event)
        elif msg.is_notification:
            await self.core.notify(session.runner, msg, self._scope(scope, who, session, msg))
        await respond(send, 202)

    async def _request(
        self, scope: Scope, send: Send, call: CallScope, session: Session, msg: Message
    ) -> None:
        stream = None
        if call.progress_token is not None and SSE in (header(scope, b"accept") or "").encode():
            stream = SseStream(send)
            await stream.open()
            call.send = self._sse_sender(stream)
        reply = jsonrpc.error(msg.id, REQUEST_CANCELLED, "request cancelled")
        with self.inflight.track(session.id, msg.id):
            reply = await self.core.answer(session.runner, msg, call)
        if stream is None:
            await respond(send, 200, reply)
        else:
            await stream.event(reply)
            await stream.close()

    async def _modern(self, scope: Scope, send: Send, who: Principal, msg: Message) -> None:
        if not msg.is_request:
            await respond(send, 202)
            return
        call = self._scope(scope, who, None, msg)
        reply = await self.core.answer(None, msg, call, headers_dict(scope, _MODERN_HEADERS))
        await respond(send, 200, reply)

    def _scope(
        self, scope: Scope, who: Principal, session: Session | None, msg: Message
    ) -> CallScope:
        return CallScope(
            principal=who,
            transport="mcp-http",
            session_id=session.id if session else "",
            allow=tuple(session.record.tools) if session else tuple(_client_allow(scope)),
            edge_allow=self.limits.edge_allow,
            carrier=headers_dict(scope, _TRACE_HEADERS) or None,
            request_id=msg.id if msg.is_request else None,  # type: ignore[arg-type]
            progress_token=progress_token(msg.params),
        )

    @staticmethod
    def _sse_sender(stream: SseStream) -> Any:
        async def send(method: str, params: dict[str, Any] | None) -> None:
            await stream.event(jsonrpc.notification(method, params))

        return send

    async def _session(self, scope: Scope, who: Principal) -> Session:
        session_id = header(scope, SESSION_HEADER)
        if not session_id:
            raise BadRequestError("Mcp-Session-Id header required (initialize first)")
        session = await self.sessions.find(session_id, who)
        if session is None:
            raise NotFoundError("session not found; initialize again")
        return session

    # ---- GET: the session's event stream ---------------------------------------------------

    async def _stream(
        self, scope: Scope, receive: Receive, send: Send, who: Principal, session: Session
    ) -> None:
        if SSE not in (header(scope, b"accept") or "").encode():
            await respond_json(send, 406, {"error": "accept text/event-stream", "code": 406})
            return
        if session.id in self._streams:
            await respond_json(send, 409, {"error": "stream already open", "code": 409})
            return
        if len(self._streams) >= self.limits.max_streams:
            raise OverLimitError("too many open streams")
        self._streams.add(session.id)
        stream = SseStream(send)
        try:
            await stream.open([(SESSION_HEADER, session.id.encode())])
            async with anyio.create_task_group() as tg:
                tg.start_soon(_until_disconnect, receive, tg.cancel_scope)
                tg.start_soon(_until_set, self.closing, tg.cancel_scope)
                await self._announce(stream, self._scope(scope, who, session, _EMPTY))
        finally:
            self._streams.discard(session.id)
            with anyio.move_on_after(1, shield=True):
                await stream.close()

    async def _announce(self, stream: SseStream, call: CallScope) -> None:
        version, names = self.catalog.version, self.core.tools.tool_names(call)
        while True:
            with anyio.move_on_after(self.limits.keepalive_s) as timer:
                version = await self.catalog.wait_changed(version)
            if timer.cancelled_caught:
                await stream.comment(b"keepalive")
                continue
            current = self.core.tools.tool_names(call)
            if current != names:
                await stream.event(jsonrpc.notification("notifications/tools/list_changed"))
            names = current


_VERSION_HEADER = MCP_PROTOCOL_VERSION_HEADER.lower().encode()
_EMPTY = Message(jsonrpc="2.0", method="", id=0)


def _client_allow(scope: Scope) -> list[str]:
    """The ``tools`` query parameter as patterns. Raises BadRequestError for a bad one."""
    query = urllib.parse.parse_qs(scope.get("query_string", b"").decode("latin-1"))
    patterns = [p.strip() for value in query.get("tools", []) for p in value.split(",")]
    try:
        return [check_pattern(p) for p in patterns if p]
    except ValueError as exc:
        raise BadRequestError(str(exc)) from None


async def _until_disconnect(receive: Receive, scope: anyio.CancelScope) -> None:
    while (await receive())["type"] != "http.disconnect":
        pass
    scope.cancel()


async def _until_set(event: anyio.Event, scope: anyio.CancelScope) -> None:
    await event.wait()
    scope.cancel()
