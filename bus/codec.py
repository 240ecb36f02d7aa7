"""JSON by default, MessagePack when ``Content-Type: application/msgpack``.

Decoders and encoders are built once per type and reused; an empty payload
decodes as ``{}`` so ``nats req sophia.memory.health ''`` works.
"""

from __future__ import annotations

from functools import cache
from typing import Any

import msgspec

CONTENT_TYPE = "Content-Type"
MSGPACK = "application/msgpack"
JSON = "application/json"

_json_encoder = msgspec.json.Encoder()
_msgpack_encoder = msgspec.msgpack.Encoder()
_EMPTY_JSON = b"{}"
_EMPTY_MSGPACK = b"\x80"


def is_msgpack(headers: dict[str, str] | None) -> bool:
    return bool(headers) and headers.get(CONTENT_TYPE) == MSGPACK  # type: ignore[union-attr]


@cache
def json_decoder(tp: Any) -> msgspec.json.Decoder[Any]:
    return msgspec.json.Decoder(tp)


@cache
def msgpack_decoder(tp: Any) -> msgspec.msgpack.Decoder[Any]:
    return msgspec.msgpack.Decoder(tp)


def decode(data: bytes, tp: Any, msgpack: bool = False) -> Any:
    """Decode ``data`` into ``tp``. Raises msgspec.DecodeError / ValidationError."""
    if msgpack:
        return msgpack_decoder(tp).decode(data or _EMPTY_MSGPACK)
    return json_decoder(tp).decode(data or _EMPTY_JSON)


def encode(value: Any, msgpack: bool = False) -> bytes:
    return _msgpack_encoder.encode(value) if msgpack else _json_encoder.encode(value)
