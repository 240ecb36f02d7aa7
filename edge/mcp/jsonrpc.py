"""JSON-RPC 2.0 framing for the edge's MCP transports, decoded and encoded with msgspec.

Only the envelope is decoded here; params stay plain dicts for the SDK's kernel to validate.
A body that is not JSON is a parse error (-32700); a body that is JSON but not one message
(a batch, a missing ``method``…) is an invalid request (-32600).
"""

from __future__ import annotations

from typing import Any

import msgspec
from mcp_types import INVALID_REQUEST, PARSE_ERROR

from bus import codec
from bus.limits import MAX_NESTING

RequestId = int | str


class Message(msgspec.Struct, omit_defaults=True):
    """One JSON-RPC message as received; ``id`` is UNSET for a notification."""

    jsonrpc: str = ""
    id: RequestId | msgspec.UnsetType | None = msgspec.UNSET
    method: str | msgspec.UnsetType = msgspec.UNSET
    params: dict[str, Any] | None = None
    result: Any = msgspec.UNSET
    error: Any = msgspec.UNSET

    @property
    def is_request(self) -> bool:
        return self.method is not msgspec.UNSET and self.id is not msgspec.UNSET

    @property
    def is_notification(self) -> bool:
        return self.method is not msgspec.UNSET and self.id is msgspec.UNSET

    @property
    def is_response(self) -> bool:
        return self.method is msgspec.UNSET and (
            self.result is not msgspec.UNSET or self.error is not msgspec.UNSET
        )


class RpcError(Exception):
    """A message could not be taken at all: answered with ``code`` and ``message``."""

    def __init__(self, code: int, message: str, request_id: RequestId | None = None) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        self.request_id = request_id


_encoder = msgspec.json.Encoder()


_decoder = msgspec.json.Decoder(Message)
#: levels ``params`` may nest: room for a tool's arguments at the bus's own limit, whose
#: refusal names the field, while nothing deep enough to exhaust a parser gets further
ENVELOPE_NESTING = 4 * MAX_NESTING


def decode(data: bytes | str) -> Message:
    """Decode one message. Raises RpcError (-32700 not JSON, -32600 not one valid message,
    nested deeper than :data:`bus.limits.MAX_NESTING` included: the SDK parses the message
    again, and a deep one would exhaust the recursion limit there or here)."""
    try:
        msg = _decoder.decode(data)
    except RecursionError:
        raise RpcError(INVALID_REQUEST, "invalid request: nested too deeply") from None
    except msgspec.ValidationError as exc:
        raise RpcError(INVALID_REQUEST, f"invalid request: {exc}") from None
    except msgspec.DecodeError:
        raise RpcError(PARSE_ERROR, "parse error: body is not valid JSON") from None
    try:
        codec.check_nesting(msg.params, ENVELOPE_NESTING)
    except msgspec.ValidationError as exc:  # too deep, or an integer beyond 64 bits
        raise RpcError(INVALID_REQUEST, f"invalid request: params: {exc}") from None
    if msg.jsonrpc != "2.0":
        raise RpcError(INVALID_REQUEST, 'invalid request: "jsonrpc" must be "2.0"', _id(msg))
    if msg.id is None or not (msg.is_request or msg.is_notification or msg.is_response):
        raise RpcError(INVALID_REQUEST, "invalid request: not a request, notification or response")
    return msg


def _id(msg: Message) -> RequestId | None:
    return None if msg.id is msgspec.UNSET else msg.id


def result(request_id: RequestId, value: dict[str, Any]) -> bytes:
    return _encoder.encode({"jsonrpc": "2.0", "id": request_id, "result": value})


def error(
    request_id: RequestId | None, code: int, message: str, data: Any = msgspec.UNSET
) -> bytes:
    body: dict[str, Any] = {"code": code, "message": message}
    if data is not msgspec.UNSET and data is not None:
        body["data"] = data
    return _encoder.encode({"jsonrpc": "2.0", "id": request_id, "error": body})


def notification(method: str, params: dict[str, Any] | None = None) -> bytes:
    body: dict[str, Any] = {"jsonrpc": "2.0", "method": method}
    if params is not None:
        body["params"] = params
    return _encoder.encode(body)
