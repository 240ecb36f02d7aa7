"""MCP over streamable HTTP at ``/mcp``: the SDK's transport, with sessions any replica serves.

Every message is answered by the SDK's streamable-HTTP transport run stateless (one fresh
transport per request, :mod:`edge.mcp.sdk`); what the SDK keeps in one process the edge keeps
in NATS, so any replica behind one address serves any session:

- POST ``initialize`` is answered by the SDK; when it succeeds the edge opens a session
  (``Mcp-Session-Id``) stored in KV (:mod:`edge.mcp.sessions`). Every later message names it;
  an unknown one gets 404 so the client initialises again.
- a request is answered as JSON, or as an event stream when it asked for progress and accepts
  one (the SDK drops notifications from a JSON answer); it is tracked so that the client's
  ``notifications/cancelled``, which may reach any replica, cancels it where it runs
  (:mod:`edge.mcp.inflight`): it is then answered with a "request cancelled" error.
- GET opens the session's event stream, which carries ``notifications/tools/list_changed``
  when the tools the session sees change on the bus; DELETE ends the session.
- requests in the 2026-07-28 envelope (``MCP-Protocol-Version`` says so) need no session: the
  SDK answers them as they come.

``?tools=memory_*,…`` on the URL is the client's tool allow-list; ``?namespace=NAME`` (or the
``Sophia-Namespace`` header), read from each request, is its default memory namespace
(:mod:`edge.namespaces`). Callers have been admitted (token, origin, rate) before they get
here; malformed JSON-RPC is answered here (-32700, -32600) with a short text that never quotes
the body.
"""

from __future__ import annotations

import urllib.parse
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import AsyncExitStack, asynccontextmanager
from typing import Any

import anyio
import msgspec
from starlette.datastructures import Headers
from starlette.types import Message as AsgiMessage
from starlette.types import Receive, Scope, Send

from bus.errors import BadRequestError, NotFoundError, OverLimitError
from bus.schemas.edge import CallCancelled, SessionRecord
from edge.access import Principal, check_pattern
from edge.mcp import jsonrpc
from edge.mcp.jsonrpc import Message, RpcError
from edge.mcp.sdk import (
    HANDSHAKE_PROTOCOL_VERSIONS,
    MODERN_PROTOCOL_VERSIONS,
    StreamableHTTPSessionManager,
)
from edge.mcp.tools import CALL_SCOPE, CallScope, EdgeTools
from edge.namespaces import client_namespace
from edge.runtime import Edge
from edge.traces import carrier_of
from edge.web import read_body, respond, respond_json

SESSION_HEADER = "mcp-session-id"
VERSION_HEADER = "mcp-protocol-version"
SSE = "text/event-stream"
REQUEST_CANCELLED = -32800


class McpHttp:
    """The ASGI handler behind ``/mcp``, over the SDK's stateless transport."""

    def __init__(self, edge: Edge, tools: EdgeTools) -> None:
        self.edge = edge
        self.tools = tools
        self.edge_allow = tuple(edge.edge_settings.tool_patterns)
        self._json = StreamableHTTPSessionManager(tools.server, json_response=True, stateless=True)
        self._sse = StreamableHTTPSessionManager(tools.server, json_response=False, stateless=True)
        self._streams: set[str] = set()

    @asynccontextmanager
    async def running(self) -> AsyncIterator[McpHttp]:
        """The SDK transports' own task groups, for as long as the edge serves."""
        async with AsyncExitStack() as stack:
            await stack.enter_async_context(self._json.run())
            await stack.enter_async_context(self._sse.run())
            yield self

    async def handle(self, scope: Scope, receive: Receive, send: Send, who: Principal) -> None:
        """Serve one request to ``/mcp``. Raises SophiaError for the HTTP-level refusals."""
        method = scope["method"]
        if method == "POST":
            await self._post(scope, receive, send, who)
        elif method == "GET":
            session_id, record = await self._session(scope, who)
            await self._stream(scope, receive, send, self._call(scope, who, session_id, record))
        elif method == "DELETE":
            session_id, _ = await self._session(scope, who)
            await self.edge.sessions.end(session_id)
            await respond(send, 200)

    # ---- POST ------------------------------------------------------------------------------

    async def _post(self, scope: Scope, receive: Receive, send: Send, who: Principal) -> None:
        body = await read_body(scope, receive, self.edge.max_body_bytes)
        try:
            msg = jsonrpc.decode(body)
        except RpcError as exc:
            await respond(send, 400, jsonrpc.error(exc.request_id, exc.code, exc.message))
            return
        version = Headers(scope=scope).get(VERSION_HEADER)
        if version in MODERN_PROTOCOL_VERSIONS:  # no session in this era
            await self._sdk(self._json, scope, body, send, self._call(scope, who, "", None))
        elif version is not None and version not in HANDSHAKE_PROTOCOL_VERSIONS:
            raise BadRequestError(f"{VERSION_HEADER}: this version is not supported")
        elif msg.is_request and msg.method == "initialize":
            await self._initialize(scope, body, send, who, msg)
        else:
            await self._in_session(scope, body, send, who, msg)

    async def _initialize(
        self, scope: Scope, body: bytes, send: Send, who: Principal, msg: Message
    ) -> None:
        allow = _client_allow(scope)
        answer = _Captured()
        await self._sdk(self._json, scope, body, answer, self._call(scope, who, "", None, allow))
        result = answer.result()
        if result is not None:  # the handshake succeeded: the session begins
            version = str(result.get("protocolVersion", ""))
            session_id = await self.edge.sessions.open(who, version, msg.params or {}, allow)
            answer.headers.append((SESSION_HEADER.encode(), session_id.encode()))
        await answer.replay(send)

    async def _in_session(
        self, scope: Scope, body: bytes, send: Send, who: Principal, msg: Message
    ) -> None:
        session_id, record = await self._session(scope, who)
        if not msg.is_request:  # notifications and responses: nothing for the SDK to answer
            if msg.method == "notifications/cancelled":
                params = msg.params or {}
                await self.edge.gateway.announce_cancel(
                    CallCancelled(
                        session=session_id,
                        request_id=str(params.get("requestId", ""))[:64],
                        reason=str(params.get("reason", ""))[:200],
                    )
                )
            await respond(send, 202)
            return
        call = self._call(scope, who, session_id, record)
        headers = Headers(scope=scope)
        wants_stream = _progress_token(msg) is not None and SSE in headers.get("accept", "")
        manager = self._sse if wants_stream else self._json
        if VERSION_HEADER not in headers:  # the SDK takes the session's version from here
            version = (VERSION_HEADER.encode(), record.protocol_version.encode())
            scope = {**scope, "headers": [*scope["headers"], version]}
        started = _Started(send)
        with self.edge.inflight.track(session_id, msg.id) as tracked:  # type: ignore[arg-type]
            await self._sdk(manager, scope, body, started, call)
        if tracked.cancelled:
            await started.finish(jsonrpc.error(msg.id, REQUEST_CANCELLED, "request cancelled"))  # type: ignore[arg-type]

    async def _sdk(
        self,
        manager: StreamableHTTPSessionManager,
        scope: Scope,
        body: bytes,
        send: Send,
        call: CallScope,
    ) -> None:
        """Let the SDK answer the message in ``body`` (already read) for ``call``."""
        state = {**scope.get("state", {}), CALL_SCOPE: call}
        await manager.handle_request({**scope, "state": state}, _replay(body), send)

    def _call(
        self,
        scope: Scope,
        who: Principal,
        session_id: str,
        record: SessionRecord | None,
        allow: list[str] | None = None,
    ) -> CallScope:
        if allow is None:
            allow = record.tools if record is not None else _client_allow(scope)
        return CallScope(
            principal=who,
            transport="mcp-http",
            session_id=session_id,
            allow=tuple(allow),
            edge_allow=self.edge_allow,
            carrier=carrier_of(Headers(scope=scope)),
            namespace=client_namespace(scope),
        )

    async def _session(self, scope: Scope, who: Principal) -> tuple[str, SessionRecord]:
        session_id = Headers(scope=scope).get(SESSION_HEADER)
        if not session_id:
            raise BadRequestError("Mcp-Session-Id header required (initialize first)")
        record = await self.edge.sessions.find(session_id, who)
        if record is None:
            raise NotFoundError("session not found; initialize again")
        return session_id, record

    # ---- GET: the session's event stream ---------------------------------------------------

    async def _stream(self, scope: Scope, receive: Receive, send: Send, call: CallScope) -> None:
        if SSE not in Headers(scope=scope).get("accept", ""):
            await respond_json(send, 406, {"error": "accept text/event-stream", "code": 406})
            return
        if call.session_id in self._streams:
            await respond_json(send, 409, {"error": "stream already open", "code": 409})
            return
        if len(self._streams) >= self.edge.edge_settings.edge_max_streams:
            raise OverLimitError("too many open streams")
        self._streams.add(call.session_id)
        stream = SseStream(send)
        try:
            await stream.open([(SESSION_HEADER.encode(), call.session_id.encode())])
            async with anyio.create_task_group() as tg:
                tg.start_soon(_until_disconnect, receive, tg.cancel_scope)
                tg.start_soon(_until_set, self.edge.closing, tg.cancel_scope)
                await self._announce(stream, call)
        finally:
            self._streams.discard(call.session_id)
            with anyio.move_on_after(1, shield=True):
                await stream.close()

    async def _announce(self, stream: SseStream, call: CallScope) -> None:
        catalog = self.edge.catalog
        version, names = catalog.version, self.tools.tool_names(call)
        while True:
            with anyio.move_on_after(self.edge.edge_settings.edge_keepalive_s) as timer:
                version = await catalog.wait_changed(version)
            if timer.cancelled_caught:
                await stream.comment(b"keepalive")
                continue
            current = self.tools.tool_names(call)
            if current != names:
                await stream.event(jsonrpc.notification("notifications/tools/list_changed"))
            names = current


class SseStream:
    """One event-stream response; writes are serialised."""

    def __init__(self, send: Send) -> None:
        self._send = send
        self._lock = anyio.Lock()

    async def open(self, headers: list[tuple[bytes, bytes]] | None = None) -> None:
        base = [(b"content-type", SSE.encode()), (b"cache-control", b"no-store")]
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


class _Captured:
    """A ``send`` that keeps one whole JSON response, to look at before it goes out."""

    def __init__(self) -> None:
        self.status = 500
        self.headers: list[tuple[bytes, bytes]] = []
        self.body = b""

    async def __call__(self, message: AsgiMessage) -> None:
        if message["type"] == "http.response.start":
            self.status = message["status"]
            self.headers = [(k, v) for k, v in message.get("headers", []) if k != b"content-length"]
        elif message["type"] == "http.response.body":
            self.body += message.get("body", b"")

    def result(self) -> dict[str, Any] | None:
        """The JSON-RPC result, when the response is a successful one."""
        if self.status != 200:
            return None
        try:
            value = msgspec.json.decode(self.body)
        except msgspec.DecodeError:
            return None
        result = value.get("result") if isinstance(value, dict) else None
        return result if isinstance(result, dict) else None

    async def replay(self, send: Send) -> None:
        length = (b"content-length", str(len(self.body)).encode())
        start = {"type": "http.response.start", "status": self.status}
        await send({**start, "headers": [*self.headers, length]})
        await send({"type": "http.response.body", "body": self.body})


class _Started:
    """A ``send`` that remembers how far the response got, so it can be finished."""

    def __init__(self, send: Send) -> None:
        self._send = send
        self.started = False
        self.ended = False

    async def __call__(self, message: AsgiMessage) -> None:
        if message["type"] == "http.response.start":
            self.started = True
        elif message["type"] == "http.response.body" and not message.get("more_body", False):
            self.ended = True
        await self._send(message)

    async def finish(self, reply: bytes) -> None:
        """End the response with ``reply`` if nothing was sent, else close what was begun."""
        if not self.started:
            await respond(self._send, 200, reply)
        elif not self.ended:
            await self._send({"type": "http.response.body", "body": b"", "more_body": False})


def _replay(body: bytes) -> Callable[[], Awaitable[AsgiMessage]]:
    """A ``receive`` that hands the SDK the body already read, then waits like a client."""
    sent = False

    async def receive() -> AsgiMessage:
        nonlocal sent
        if not sent:
            sent = True
            return {"type": "http.request", "body": body, "more_body": False}
        await anyio.sleep_forever()  # the answer ends the exchange, not the client
        raise AssertionError("unreachable")

    return receive


def _progress_token(msg: Message) -> object:
    meta = (msg.params or {}).get("_meta")
    return meta.get("progressToken") if isinstance(meta, dict) else None


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
