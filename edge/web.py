"""Small ASGI pieces both HTTP surfaces share: bounded bodies, bearer auth, JSON replies.

Guarantee: :func:`read_body` never holds more than ``limit`` bytes (413 before reading when
``Content-Length`` says so, 413 as soon as the stream passes it). :class:`TokenBackend` is a
Starlette authentication backend: the caller's :class:`~edge.access.Principal` lands in
``scope["user"]``; a request without a bearer token is anonymous (the routes that need one
answer 401 "bearer token required"), one with a token the edge does not know (never issued,
or revoked) is refused at once with 401 "bearer token not recognised". Every error the edge
sends is the documented JSON body ``{"error", "code"}``.
"""

from __future__ import annotations

from typing import Any

import msgspec
from starlette.authentication import (
    AuthCredentials,
    AuthenticationBackend,
    AuthenticationError,
    BaseUser,
)
from starlette.datastructures import Headers
from starlette.requests import HTTPConnection
from starlette.responses import Response
from starlette.types import Receive, Scope, Send

from bus.errors import PayloadTooLargeError, SophiaError
from edge.gateway import http_status
from edge.tokens import TokenCache

JSON = b"application/json"
TOKEN_REQUIRED = "bearer token required"
TOKEN_UNKNOWN = "bearer token not recognised (unknown or revoked)"
_encoder = msgspec.json.Encoder()


async def read_body(scope: Scope, receive: Receive, limit: int) -> bytes:
    """The whole request body. Raises PayloadTooLargeError past ``limit`` bytes."""
    length = Headers(scope=scope).get("content-length")
    if length is not None and length.isdigit() and int(length) > limit:
        raise PayloadTooLargeError(f"body: over the limit of {limit} bytes")
    chunks: list[bytes] = []
    size = 0
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            break
        chunk = message.get("body", b"")
        size += len(chunk)
        if size > limit:
            raise PayloadTooLargeError(f"body: over the limit of {limit} bytes")
        chunks.append(chunk)
        if not message.get("more_body", False):
            break
    return b"".join(chunks)


def bearer_token(headers: Headers) -> str | None:
    """The token of an ``Authorization: Bearer …`` header, or None when there is none."""
    kind, _, token = (headers.get("authorization") or "").partition(" ")
    if kind.lower() != "bearer":
        return None
    return token.strip() or None


class TokenBackend(AuthenticationBackend):
    """Starlette authentication against the edge's tokens (see the module docstring)."""

    def __init__(self, tokens: TokenCache) -> None:
        self.tokens = tokens

    async def authenticate(self, conn: HTTPConnection) -> tuple[AuthCredentials, BaseUser] | None:
        token = bearer_token(conn.headers)
        if token is None:
            return None
        principal = self.tokens.principal(token)
        if principal is None:
            raise AuthenticationError(TOKEN_UNKNOWN)
        return AuthCredentials(list(principal.scopes)), principal


def error_body(status: int, text: str) -> bytes:
    return _encoder.encode({"error": text, "code": status})


def error_headers(error: SophiaError) -> list[tuple[bytes, bytes]]:
    retry = getattr(error, "retry_after", None)
    headers = [(b"retry-after", retry.encode())] if retry else []
    if error.code == 401:
        headers.append((b"www-authenticate", b'Bearer realm="sophia"'))
    return headers


def error_response(error: SophiaError) -> Response:
    """The edge's JSON error for ``error`` as a Starlette response."""
    status = http_status(error.code)
    headers = {k.decode(): v.decode() for k, v in error_headers(error)}
    return Response(error_body(status, error.description), status, headers, "application/json")


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


async def respond_error(send: Send, error: SophiaError) -> None:
    """``{"error", "code"}`` with the HTTP status for ``error``'s code (and its headers)."""
    status = http_status(error.code)
    await respond(send, status, error_body(status, error.description), headers=error_headers(error))
