"""What a handler may know about the message it is handling, beyond its typed request.

Guarantee: inside an endpoint or work handler :func:`message_headers` returns that message's
NATS headers (an empty mapping when it had none, and outside any handler); each handler task
sees its own message's headers, never another's.
"""

from __future__ import annotations

import contextvars
from collections.abc import Mapping
from types import MappingProxyType

_EMPTY: Mapping[str, str] = MappingProxyType({})
_headers: contextvars.ContextVar[Mapping[str, str]] = contextvars.ContextVar(
    "sophia_message_headers", default=_EMPTY
)


def message_headers() -> Mapping[str, str]:
    """The headers of the message the running handler was called for (read-only by contract)."""
    return _headers.get()


class handling:
    """Make ``headers`` the running handler's for the block (a plain class: this runs for
    every handled message, and a generator-based manager costs more)."""

    __slots__ = ("_headers", "_token")

    def __init__(self, headers: Mapping[str, str] | None) -> None:
        self._headers = headers or _EMPTY

    def __enter__(self) -> None:
        self._token = _headers.set(self._headers)

    def __exit__(self, *exc_info: object) -> None:
        _headers.reset(self._token)
