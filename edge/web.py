"""Small ASGI pieces both HTTP surfaces share: headers, bounded bodies, bearer auth, replies.

Guarantee: :func:`read_body` never holds more than ``limit`` bytes (413 before reading when
``Content-Length`` says so, 413 as soon as the stream passes it); :func:`authenticate` answers
401 for a missing, malformed, unknown or revoked token and never says which.
"""

from __future__ import annotations

from typing import Any

import msgspec
from starlette.types import Receive, Scope, Send

from bus.errors import PayloadTooLargeError, SophiaError, UnauthorizedError
from edge.access import Principal
from edge.gateway import http_status
from edge.tokens import TokenCache

JSON = b"application/json"
_encoder = msgspec.json.Encoder()


_INDEX = "sophia.headers"  # the request's headers by name, built once per request


def _index(scope: Scope) -> dict[bytes, bytes]:
    index: dict[bytes, bytes] | None = scope.get(_INDEX)
    if index is None:
        index = {}
        for key, value in scope["headers"]:
            index.setdefault(key, value)  # the first value of a repeated header, as before
        scope[_INDEX] = index
    return index


def header(scope: Scope, name: bytes) -> str | None:
    """The first value of header ``name`` (lower-case bytes), decoded, or None."""
    value = _index(scope).get(name)
    return None if value is None else value.decode("latin-1")


def headers_dict(scope: Scope, names: tuple[bytes, ...]) -> dict[str, str]:
    index = _index(scope)
    return {name.decode(): index[name].decode("latin-1") for name in names if name in index}


async def read_body(scope: Scope, receive: Receive, limit: int) -> bytes:
    """The whole request body. Raises PayloadTooLargeError past ``limit`` bytes."""
    length = header(scope, b"content-length")
    if length is not None and length.isdigit() and int(length) > limit:
        raise PayloadTooLargeError(f"body over {limit} bytes")
    chunks: list[bytes] = []
    size = 0
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            break
        chunk = message.get("body", b"")
        size += len(chunk)
        if size > limit:
            raise PayloadTooLargeError(f"body over {limit} bytes")
        chunks.append(chunk)
        if not message.get("more_body", False):
            break
    return b"".join(chunks)


def authenticate(scope: Scope, tokens: TokenCache) -> Principal:
    """The principal of the request's bearer token. Raises UnauthorizedError."""
    value = header(scope, b"authorization")
    if value is None:
        raise UnauthorizedError("bearer token required")
    kind, _, token = value.partition(" ")
    principal = tokens.principal(token.strip()) if kind.lower() == "bearer" else None
    if principal is None:
        raise UnauthorizedError("bearer token required")
    return principal


async def respond(
    send: Send,
    status: int,
    body: bytes = b"",
    content_type: bytes = JSON,
    headers: list[tuple[bytes, bytes]] | None = None,
) -> None:
    """Send one complete response."""
    raw = [(b"content-type", content_type), (b"content-length", str(len(body)).encode())]
    await send({"type": "http.response.start", "status": status, "headers": raw + (headers or [])})
    await send({"type": "http.response.body", "body": body})


async def respond_json(send: Send, status: int, value: Any, **kwargs: Any) -> None:
    await respond(send, status, _encoder.encode(value), **kwargs)


def error_headers(error: SophiaError) -> list[tuple[bytes, bytes]]:
    retry = getattr(error, "retry_after", None)
    headers = [(b"retry-after", retry.encode())] if retry else []
    if error.code == 401:
        headers.append((b"www-authenticate", b'Bearer realm="sophia"'))
    return headers


async def respond_error(send: Send, error: SophiaError) -> None:
    """``{"error", "code"}`` with the HTTP status for ``error``'s code (and its headers)."""
    status = http_status(error.code)
    await respond_json(
        send, status, {"error": error.description, "code": status}, headers=error_headers(error)
    )
