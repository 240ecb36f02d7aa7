"""Input checks of the memory engine: each failure is a BadRequestError naming the field.

Requests usually arrive decoded by msgspec (which checks types and bounds); these checks
hold the same line for Structs built in Python, where msgspec checks nothing.
"""

from __future__ import annotations

from typing import Any, TypeVar

import msgspec

from bus.errors import BadRequestError
from bus.schemas.memory import KINDS, MAX_K

T = TypeVar("T")


def decode(raw: bytes | str | dict[str, Any], cls: type[T]) -> T:
    """Decode JSON (or convert a dict) into ``cls``. Raises BadRequestError naming the field."""
    try:
        if isinstance(raw, dict):
            return msgspec.convert(raw, cls)
        return msgspec.json.decode(raw, type=cls)
    except msgspec.ValidationError as exc:
        raise BadRequestError(explain(str(exc))) from None
    except msgspec.DecodeError:
        raise BadRequestError("body: not valid JSON") from None


def explain(message: str) -> str:
    """``Expected `int`, got `str` - at `$.k``` -> ``k: Expected `int`, got `str```."""
    what, sep, where = message.partition(" - at `$.")
    return f"{where.rstrip('`')}: {what}" if sep else message


def text(value: Any, field: str, max_bytes: int, *, allow_empty: bool = False) -> str:
    if not isinstance(value, str):
        raise BadRequestError(f"{field}: must be a string")
    if not allow_empty and not value.strip():
        raise BadRequestError(f"{field}: must not be empty")
    if len(value) > max_bytes or len(value.encode("utf-8", "surrogatepass")) > max_bytes:
        raise BadRequestError(f"{field}: longer than {max_bytes} bytes")
    return value


def namespace(value: Any, field: str = "namespace") -> str:
    if not isinstance(value, str) or not 0 < len(value) <= 128 or not value.strip():
        raise BadRequestError(f"{field}: must be a non-empty string of at most 128 characters")
    return value


def kind(value: Any, field: str = "kind") -> str:
    if value not in KINDS:
        raise BadRequestError(f"{field}: must be one of {', '.join(KINDS)}")
    return value


def k(value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= MAX_K:
        raise BadRequestError(f"k: must be a whole number from 1 to {MAX_K}")
    return value


def mapping(value: Any, field: str) -> dict[str, Any]:
    if not isinstance(value, dict) or not all(isinstance(key, str) for key in value):
        raise BadRequestError(f"{field}: must be an object with string keys")
    try:
        msgspec.json.encode(value)
    except (TypeError, OverflowError):
        raise BadRequestError(f"{field}: must hold JSON values only") from None
    return value


def ident(value: Any) -> str:
    if not isinstance(value, str) or not 0 < len(value) <= 64:
        raise BadRequestError("id: must be a non-empty string of at most 64 characters")
    return value
