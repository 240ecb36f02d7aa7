"""JSON by default, MessagePack when ``Content-Type: application/msgpack``.

Decoders and encoders are built once per type and reused; an empty payload decodes as ``{}``
so ``nats req sophia.memory.health ''`` works. Every decoded message passes the nesting limit
(:data:`bus.limits.MAX_NESTING`): a value nested deeper — which decoders, encoders and every
recursive walk over it would choke on later — is a ``msgspec.ValidationError`` at once.
"""

from __future__ import annotations

from collections.abc import Mapping
from functools import cache
from typing import Any

import msgspec
import msgspec.inspect as mi

from bus.limits import MAX_NESTING
from bus.subjects import is_token

CONTENT_TYPE = "Content-Type"
MSGPACK = "application/msgpack"
JSON = "application/json"

_json_encoder = msgspec.json.Encoder()
_msgpack_encoder = msgspec.msgpack.Encoder()
_EMPTY_JSON = b"{}"
_EMPTY_MSGPACK = b"\x80"
_SCALARS = (str, int, float, bool, bytes, type(None))
#: the integers JSON and MessagePack are encoded with here (msgspec's encoders refuse others)
_INT_MIN, _INT_MAX = -(2**63), 2**64 - 1


def is_msgpack(headers: Mapping[str, str] | None) -> bool:
    return bool(headers) and headers.get(CONTENT_TYPE) == MSGPACK  # type: ignore[union-attr]


@cache
def json_decoder(tp: Any) -> msgspec.json.Decoder[Any]:
    return msgspec.json.Decoder(tp)


@cache
def msgpack_decoder(tp: Any) -> msgspec.msgpack.Decoder[Any]:
    return msgspec.msgpack.Decoder(tp)


def decode(data: bytes, tp: Any = Any, msgpack: bool = False) -> Any:
    """Decode ``data`` into ``tp``, within the nesting limit.

    Raises msgspec.DecodeError (not JSON or MessagePack) and msgspec.ValidationError (does
    not fit ``tp``, or nested deeper than MAX_NESTING).
    """
    try:
        if msgpack:
            value = msgpack_decoder(tp).decode(data or _EMPTY_MSGPACK)
        else:
            value = json_decoder(tp).decode(data or _EMPTY_JSON)
    except RecursionError:
        raise _too_deep() from None
    if nests_freely(tp):
        check_nesting(value)
    return value


@cache
def nests_freely(tp: Any) -> bool:
    """Whether a value of ``tp`` can nest deeper than its type says: it holds ``Any`` (a
    free-form object such as ``metadata``) or a recursive type. A type with fixed shapes
    nests no deeper than its declaration, so its messages skip the nesting walk."""
    seen: set[int] = set()
    stack: list[mi.Type] = [mi.type_info(tp)]
    while stack:
        info = stack.pop()
        if isinstance(info, mi.AnyType):
            return True
        if isinstance(
            info, mi.StructType | mi.DataclassType | mi.TypedDictType | mi.NamedTupleType
        ):
            if id(info.cls) in seen:
                return True  # a recursive type
            seen.add(id(info.cls))
            stack.extend(f.type for f in info.fields)
        elif isinstance(info, mi.Metadata):
            stack.append(info.type)
        elif isinstance(info, mi.UnionType):
            stack.extend(info.types)
        elif isinstance(info, mi.DictType):
            stack.extend((info.key_type, info.value_type))
        elif isinstance(info, mi.ListType | mi.SetType | mi.FrozenSetType | mi.VarTupleType):
            stack.append(info.item_type)
        elif isinstance(info, mi.TupleType):
            stack.extend(info.item_types)
    return False


def encode(value: Any, msgpack: bool = False) -> bytes:
    return _msgpack_encoder.encode(value) if msgpack else _json_encoder.encode(value)


def check_nesting(value: Any, limit: int = MAX_NESTING) -> None:
    """Raise msgspec.ValidationError when ``value`` nests containers deeper than ``limit``,
    or holds an integer beyond 64 bits (decoded into a free-form field, it could never be
    encoded again: not stored, not read back, not even answered).

    Iterative (no recursion of its own); Structs count as one level, like the JSON object
    they came from. Costs one step per container and item, so a flat message costs nothing.
    The error names the top-level field the value sits in (a schema's field name, or a
    top-level key that looks like one: never free text of the caller's).
    """
    if isinstance(value, _SCALARS):
        return
    stack: list[tuple[Any, int, str]] = [(value, 1, "")]
    while stack:
        node, depth, where = stack.pop()
        if depth > limit:
            raise _too_deep(limit, where)
        if isinstance(node, dict):
            items: Any = node.items()
        elif isinstance(node, list | tuple | set | frozenset):
            items = ((None, child) for child in node)
        elif isinstance(node, msgspec.Struct):
            items = ((f, getattr(node, f)) for f in node.__struct_fields__)
        else:
            continue
        for key, child in items:
            if isinstance(child, int) and not _INT_MIN <= child <= _INT_MAX:
                raise _too_big(_named(where, key, depth))
            if not isinstance(child, _SCALARS):
                stack.append((child, depth + 1, _named(where, key, depth)))


def _named(where: str, key: Any, depth: int) -> str:
    named = where or (key if depth == 1 and isinstance(key, str) else "")
    return named if is_token(named) else ""


def _too_big(where: str) -> msgspec.ValidationError:
    at = f" - at `$.{where}`" if where else ""
    return msgspec.ValidationError(f"Integer beyond 64 bits{at}")


def _too_deep(limit: int = MAX_NESTING, where: str = "") -> msgspec.ValidationError:
    at = f" - at `$.{where}`" if where else ""
    return msgspec.ValidationError(f"Objects and arrays nested deeper than {limit} levels{at}")
