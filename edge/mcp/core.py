"""Answering MCP messages with the SDK's kernel, for any of the edge's transports.

Each connection (a stdio process, an HTTP session) has one ``ServerRunner`` over one SDK
``Connection``; a request is one ``runner.on_request`` call under an :class:`Exchange`, and its
outcome becomes one JSON-RPC reply. Requests in the 2026-07-28 per-request envelope need no
connection: each runs through ``serve_one`` with a connection built from its envelope.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Any, NoReturn

from mcp.server.connection import Connection
from mcp.server.runner import ServerRunner, serve_one
from mcp.shared.exceptions import MCPError
from mcp.shared.inbound import InboundLadderRejection, classify_inbound_request
from mcp.shared.jsonrpc_dispatcher import handler_exception_to_error_data
from mcp_types import INTERNAL_ERROR, INVALID_REQUEST, InitializeRequestParams
from mcp_types import PROTOCOL_VERSION_META_KEY as MODERN_KEY

from bus.schemas.edge import SessionRecord
from edge.mcp import jsonrpc
from edge.mcp.exchange import CallScope, Exchange, NoChannel
from edge.mcp.handlers import EdgeTools
from edge.mcp.jsonrpc import Message

log = logging.getLogger("sophia.edge")
_NO_CHANNEL = NoChannel()


def has_modern_envelope(params: Mapping[str, Any] | None) -> bool:
    """Whether a request carries the 2026-07-28 per-request envelope."""
    meta = (params or {}).get("_meta")
    return isinstance(meta, Mapping) and MODERN_KEY in meta


def progress_token(params: Mapping[str, Any] | None) -> str | int | None:
    meta = (params or {}).get("_meta")
    token = meta.get("progressToken") if isinstance(meta, Mapping) else None
    return token if isinstance(token, str | int) and not isinstance(token, bool) else None


class McpCore:
    """The edge's SDK server and the ways its transports drive it."""

    def __init__(self, tools: EdgeTools) -> None:
        self.tools = tools
        self.server = tools.server()
        self.init_options = tools.init_options(self.server)

    def runner(self, connection: Connection) -> ServerRunner[Any]:
        return ServerRunner(self.server, connection, {}, init_options=self.init_options)

    def new_connection(self, outbound: Any = _NO_CHANNEL, session_id: str = "") -> Connection:
        return Connection.for_loop(outbound, session_id=session_id or None)

    def restore(self, session_id: str, record: SessionRecord) -> ServerRunner[Any]:
        """A runner for a session another replica opened, from its stored record.

        Raises pydantic.ValidationError when the record's client params no longer parse.
        """
        connection = Connection.for_loop(
            _NO_CHANNEL, session_id=session_id, protocol_version_hint=record.protocol_version
        )
        connection.client_params = InitializeRequestParams.model_validate(
            record.client, by_name=False
        )
        connection.initialized.set()
        return self.runner(connection)

    async def answer(
        self,
        runner: ServerRunner[Any] | None,
        msg: Message,
        scope: CallScope,
        headers: Mapping[str, str] | None = None,
    ) -> bytes:
        """The JSON-RPC reply to the request ``msg``; never raises for a handler's failure."""
        assert isinstance(msg.method, str) and msg.id is not None  # a request, checked by decode
        try:
            if msg.method == "tools/call" and self._direct(runner, msg):
                assert runner is not None
                version = runner.connection.protocol_version
                result = await self.tools.call_tool_direct(scope, msg.params or {}, version)
                if result is not None:
                    return jsonrpc.result(msg.id, result)
            exchange = Exchange(scope, msg.id)
            if runner is None or (msg.method != "initialize" and has_modern_envelope(msg.params)):
                result = await self._answer_modern(runner, exchange, msg, headers)
            else:
                result = await runner.on_request(exchange, msg.method, msg.params)
        except Exception as exc:
            error = handler_exception_to_error_data(exc)
            if error is None:
                log.exception("mcp_request_failed", extra={"method": msg.method})
                return jsonrpc.error(msg.id, INTERNAL_ERROR, "internal error")
            return jsonrpc.error(msg.id, error.code, error.message, error.data)
        return jsonrpc.result(msg.id, result)

    @staticmethod
    def _direct(runner: ServerRunner[Any] | None, msg: Message) -> bool:
        """Whether the edge answers ``msg`` itself: the hot path, ``tools/call`` on a connection
        past its handshake. Everything else (and any call in an unusual shape) goes through
        the SDK's kernel."""
        return (
            runner is not None
            and runner.connection.initialize_accepted
            and not has_modern_envelope(msg.params)
        )

    async def _answer_modern(
        self,
        runner: ServerRunner[Any] | None,
        exchange: Exchange,
        msg: Message,
        headers: Mapping[str, str] | None,
    ) -> dict[str, Any]:
        if runner is not None and runner.connection.initialize_accepted:
            _refuse("this connection serves the handshake era; drop the 2026 envelope")
        body = {"method": msg.method, "params": msg.params}
        route = classify_inbound_request(body, headers=headers)
        if isinstance(route, InboundLadderRejection):
            _refuse(route.message, route.code, route.data)
        connection = Connection.from_envelope(
            route.protocol_version, route.client_info, route.client_capabilities
        )
        assert isinstance(msg.method, str)
        return await serve_one(
            self.server, exchange, msg.method, msg.params, connection=connection, lifespan_state={}
        )

    async def notify(self, runner: ServerRunner[Any], msg: Message, scope: CallScope) -> None:
        """Hand a notification to the kernel (``notifications/initialized`` opens the gate)."""
        assert isinstance(msg.method, str)
        await runner.on_notify(Exchange(scope, None), msg.method, msg.params)


def _refuse(message: str, code: int = INVALID_REQUEST, data: Any = None) -> NoReturn:
    raise MCPError(code=code, message=message, data=data)
