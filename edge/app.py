"""The edge's HTTP surface: ``/mcp``, ``/v1/{service}/{endpoint}``, health and OpenAPI.

A Starlette app. Its authentication middleware (:class:`~edge.web.TokenBackend`) puts the
caller in ``scope["user"]``; every route that needs a caller passes one front door first: a
browser ``Origin`` must be one of the configured CORS origins (403 otherwise; none are
allowed by default), then a known bearer token (401), within its rate (429 with
``Retry-After``). Refusals and failures — 404 and 405 from the router included — answer
``{"error", "code"}``, are audited, and never carry internals or the caller's input.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Awaitable, Callable
from typing import Any

from starlette.applications import Starlette
from starlette.authentication import AuthenticationError
from starlette.datastructures import Headers
from starlette.exceptions import HTTPException
from starlette.middleware import Middleware
from starlette.middleware.authentication import AuthenticationMiddleware
from starlette.middleware.cors import CORSMiddleware
from starlette.requests import HTTPConnection, Request
from starlette.responses import Response
from starlette.routing import Route
from starlette.types import ASGIApp, Receive, Scope, Send

from bus import codec
from bus.errors import ForbiddenError, SophiaError, UnauthorizedError
from bus.micro import sophia_version
from edge.access import Principal
from edge.gateway import decode_json, http_status, new_call_id
from edge.limits import RateLimitedError
from edge.mcp.http import McpHttp
from edge.namespaces import HEADER as NAMESPACE_HEADER
from edge.namespaces import client_namespace, with_namespace
from edge.openapi import document
from edge.runtime import Edge
from edge.traces import carrier_of, edge_span
from edge.web import (
    TOKEN_REQUIRED,
    TokenBackend,
    error_body,
    error_response,
    read_body,
    respond,
    respond_error,
    respond_json,
)

log = logging.getLogger("sophia.edge")

Handler = Callable[[Scope, Receive, Send, Principal], Awaitable[None]]
_MCP_METHODS = ["GET", "POST", "DELETE"]
_ROUTER_ERRORS = {404: "not found", 405: "method not allowed"}


class FrontDoor:
    """Admits a request (origin, token, rate) and runs its handler, translating errors."""

    def __init__(self, edge: Edge, handler: Handler, transport: str) -> None:
        self.edge = edge
        self.handler = handler
        self.transport = transport

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        started = time.perf_counter()
        who: Principal | None = None
        try:
            who = self.admit(scope)
            await self.handler(scope, receive, send, who)
        except SophiaError as exc:
            refused(self.edge, scope, self.transport, who, exc.code, started)
            await respond_error(send, exc)
        except Exception:
            log.exception("edge_request_failed")
            await respond_json(send, 500, {"error": "internal error", "code": 500})

    def admit(self, scope: Scope) -> Principal:
        """The caller. Raises ForbiddenError, UnauthorizedError, RateLimitedError."""
        origin = Headers(scope=scope).get("origin")
        if origin is not None and origin not in self.edge.edge_settings.cors_origins:
            raise ForbiddenError("origin not allowed")
        who = scope.get("user")
        if not isinstance(who, Principal):
            raise UnauthorizedError(TOKEN_REQUIRED)
        wait = self.edge.limiter.acquire(who.name)
        if wait:
            raise RateLimitedError(wait)
        return who


def refused(
    edge: Edge, scope: Scope, transport: str, who: Principal | None, code: int, started: float
) -> None:
    """Audit a call refused before the bus. Names only what exists: an unknown path segment
    is the caller's input, so it is not recorded."""
    params = scope.get("path_params", {})
    service, name = params.get("service", "mcp"), params.get("endpoint", scope["method"])
    if "service" in params and edge.catalog.get(service, name) is None:
        service, name = "", ""
    edge.auditor.record(
        principal=who.name if who else "",
        transport=transport,
        service=service,
        endpoint=name,
        code=http_status(code),
        started=started,
    )


async def call_endpoint(
    edge: Edge, scope: Scope, receive: Receive, send: Send, who: Principal
) -> None:
    """``POST /v1/{service}/{endpoint}``: the body is the request, the reply is the body; a
    memory request that names no namespace gets the ``Sophia-Namespace`` header's (or
    ``?namespace=``).

    Raises SophiaError for refusals before the bus (the front door audits those).
    """
    params = scope["path_params"]
    endpoint = edge.gateway.resolve(who, params["service"], params["endpoint"])
    body = await read_body(scope, receive, edge.max_body_bytes)
    args = decode_json(body)
    namespaced = with_namespace(endpoint, args, client_namespace(scope))
    if namespaced is not args:
        args, body = namespaced, codec.encode(namespaced)
    carrier = carrier_of(Headers(scope=scope))
    with edge_span(f"POST /v1/{endpoint.service}/{endpoint.name}", carrier):
        try:
            reply = await edge.gateway.call(
                who, endpoint, args, body or b"{}", transport="http", call_id=new_call_id()
            )
        except SophiaError as exc:  # audited by the gateway already
            await respond_error(send, exc)
            return
    await respond(send, 200, reply)


async def openapi(edge: Edge, scope: Scope, receive: Receive, send: Send, who: Principal) -> None:
    """The OpenAPI document of exactly what ``who`` may call."""
    reachable = [
        e
        for e in edge.catalog.endpoints()
        if who.may_call(e.service, e.name, e.access) and who.lists(e.tool_name)
    ]
    await respond_json(send, 200, document(reachable, sophia_version()))


class Plain:
    """An unauthenticated GET endpoint (health checks)."""

    def __init__(self, answer: Callable[[], tuple[int, dict[str, Any]]]) -> None:
        self.answer = answer

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        status, body = self.answer()
        await respond_json(send, status, body)


def health(edge: Edge) -> tuple[int, dict[str, Any]]:
    """Up while the bus connection lives (connected or reconnecting); 503 once it has ended."""
    state = edge.link.state
    return (503 if state == "closed" else 200), {
        "status": "down" if state == "closed" else "ok",
        "nats": state,
    }


def readiness(edge: Edge) -> tuple[int, dict[str, Any]]:
    services = sorted(edge.catalog.services)
    ready = edge.link.connected and edge.catalog.polls > 0 and bool(services)
    body = {
        "status": "ready" if ready else "not ready",
        "nats": edge.link.connected,
        "services": services,
    }
    return (200 if ready else 503), body


def build_app(edge: Edge, mcp: McpHttp) -> ASGIApp:
    """The Starlette app over ``edge``; CORS only when origins are configured."""

    def door(fn: Any, transport: str) -> ASGIApp:
        async def handler(scope: Scope, receive: Receive, send: Send, who: Principal) -> None:
            await fn(edge, scope, receive, send, who)

        return FrontDoor(edge, handler, transport)

    def token_refused(conn: HTTPConnection, exc: AuthenticationError) -> Response:
        transport = "mcp-http" if conn.scope["path"] == "/mcp" else "http"
        refused(edge, conn.scope, transport, None, 401, time.perf_counter())
        return error_response(UnauthorizedError(str(exc)))

    async def http_error(request: Request, exc: Exception) -> Response:
        assert isinstance(exc, HTTPException)
        text = _ROUTER_ERRORS.get(exc.status_code, "bad request")
        body = error_body(exc.status_code, text)
        return Response(body, exc.status_code, exc.headers, media_type="application/json")

    routes = [
        Route("/mcp", FrontDoor(edge, mcp.handle, "mcp-http"), methods=_MCP_METHODS),
        Route("/v1/{service}/{endpoint}", door(call_endpoint, "http"), methods=["POST"]),
        Route("/openapi.json", door(openapi, "http"), methods=["GET"]),
        Route("/healthz", Plain(lambda: health(edge)), methods=["GET"]),
        Route("/readyz", Plain(lambda: readiness(edge)), methods=["GET"]),
    ]
    middleware = []
    if edge.edge_settings.cors_origins:
        middleware.append(
            Middleware(
                CORSMiddleware,
                allow_origins=edge.edge_settings.cors_origins,
                allow_methods=_MCP_METHODS,
                allow_headers=[
                    "authorization",
                    "content-type",
                    "mcp-session-id",
                    "mcp-protocol-version",
                    "traceparent",
                    NAMESPACE_HEADER,
                ],
                expose_headers=["mcp-session-id"],
            )
        )
    middleware.append(
        Middleware(
            AuthenticationMiddleware, backend=TokenBackend(edge.tokens), on_error=token_refused
        )
    )
    return Starlette(
        routes=routes, middleware=middleware, exception_handlers={HTTPException: http_error}
    )
