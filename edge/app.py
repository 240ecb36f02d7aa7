"""The edge's HTTP surface: ``/mcp``, ``/v1/{service}/{endpoint}``, health and OpenAPI.

Every request passes one front door before its handler: a browser ``Origin`` must be one of
the configured CORS origins (403 otherwise; none are allowed by default), then a bearer token
(401) within its rate (429 with ``Retry-After``). Refusals and failures answer
``{"error", "code"}``, are audited, and never carry internals.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Awaitable, Callable
from typing import Any

from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.middleware.cors import CORSMiddleware
from starlette.routing import Route
from starlette.types import ASGIApp, Receive, Scope, Send

from bus.agent import sophia_version
from bus.errors import ForbiddenError, SophiaError
from edge.access import Principal
from edge.gateway import decode_json, http_status, new_call_id
from edge.limits import RateLimitedError
from edge.mcp.http import McpHttp
from edge.openapi import document
from edge.runtime import Edge
from edge.traces import edge_span
from edge.web import (
    authenticate,
    header,
    headers_dict,
    read_body,
    respond,
    respond_error,
    respond_json,
)

log = logging.getLogger("sophia.edge")

_TRACE_HEADERS = (b"traceparent", b"tracestate")
Handler = Callable[[Scope, Receive, Send, Principal], Awaitable[None]]


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
            await self._refused(scope, who, exc, started)
            await respond_error(send, exc)
        except Exception:
            log.exception("edge_request_failed", extra={"path": scope.get("path", "")})
            await respond_json(send, 500, {"error": "internal error", "code": 500})

    def admit(self, scope: Scope) -> Principal:
        """The caller. Raises ForbiddenError, UnauthorizedError, RateLimitedError."""
        origin = header(scope, b"origin")
        if origin is not None and origin not in self.edge.edge_settings.cors_origins:
            raise ForbiddenError("origin not allowed")
        who = authenticate(scope, self.edge.tokens)
        wait = self.edge.limiter.acquire(who.name)
        if wait:
            raise RateLimitedError(wait)
        return who

    async def _refused(
        self, scope: Scope, who: Principal | None, error: SophiaError, started: float
    ) -> None:
        params = scope.get("path_params", {})
        self.edge.auditor.record(
            principal=who.name if who else "",
            transport=self.transport,
            service=params.get("service", "mcp"),
            endpoint=params.get("endpoint", scope["method"]),
            code=http_status(error.code),
            started=started,
        )


async def call_endpoint(
    edge: Edge, scope: Scope, receive: Receive, send: Send, who: Principal
) -> None:
    """``POST /v1/{service}/{endpoint}``: the body is the request, the reply is the body.

    Raises SophiaError for refusals before the bus (the front door audits those).
    """
    params = scope["path_params"]
    endpoint = edge.gateway.resolve(who, params["service"], params["endpoint"])
    body = await read_body(scope, receive, edge.edge_settings.edge_max_body_bytes)
    args = decode_json(body)
    with edge_span(
        f"POST /v1/{endpoint.service}/{endpoint.name}", headers_dict(scope, _TRACE_HEADERS)
    ):
        try:
            reply = await edge.gateway.call(
                who, endpoint, args, body or b"{}", transport="http", call_id=new_call_id()
            )
        except SophiaError as exc:  # audited by the gateway already
            await respond_error(send, exc)
            return
    await respond(send, 200, reply)


async def openapi(edge: Edge, scope: Scope, receive: Receive, send: Send, who: Principal) -> None:
    await respond_json(send, 200, document(edge.catalog.endpoints(), sophia_version()))


class Plain:
    """An unauthenticated GET endpoint (health checks)."""

    def __init__(self, answer: Callable[[], tuple[int, dict[str, Any]]]) -> None:
        self.answer = answer

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        status, body = self.answer()
        await respond_json(send, status, body)


def readiness(edge: Edge) -> tuple[int, dict[str, Any]]:
    services = sorted(edge.catalog.services)
    ready = edge.link.connected and edge.catalog.polls > 0 and bool(services)
    body = {
        "status": "ready" if ready else "not ready",
        "nats": edge.link.connected,
        "services": services,
    }
    return (200 if ready else 503), body


class McpLane:
    """``/mcp`` straight to its front door, everything else through the Starlette app.

    Nearly every request of an MCP client is a POST to ``/mcp``, and Starlette's middleware
    stack and router cost about a tenth of the edge's own work per call there. The lane is
    only laid without CORS, whose middleware must see every request.
    """

    def __init__(self, app: ASGIApp, door: ASGIApp) -> None:
        self.app = app
        self.door = door

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if (
            scope["type"] == "http"
            and scope["path"] == "/mcp"
            and scope["method"] in _MCP_METHODS
            and not scope.get("root_path")
        ):
            await self.door(scope, receive, send)
        else:
            await self.app(scope, receive, send)


_MCP_METHODS = frozenset({"GET", "POST", "DELETE"})


def build_app(edge: Edge, mcp: McpHttp) -> ASGIApp:
    """The Starlette app over ``edge``; CORS only when origins are configured."""

    def door(fn: Any, transport: str) -> ASGIApp:
        async def handler(scope: Scope, receive: Receive, send: Send, who: Principal) -> None:
            await fn(edge, scope, receive, send, who)

        return FrontDoor(edge, handler, transport)

    mcp_door = FrontDoor(edge, mcp.handle, "mcp-http")
    routes = [
        Route("/mcp", mcp_door, methods=list(_MCP_METHODS)),
        Route("/v1/{service}/{endpoint}", door(call_endpoint, "http"), methods=["POST"]),
        Route("/openapi.json", door(openapi, "http"), methods=["GET"]),
        Route("/healthz", Plain(lambda: (200, {"status": "ok"})), methods=["GET"]),
        Route("/readyz", Plain(lambda: readiness(edge)), methods=["GET"]),
    ]
    middleware = []
    if edge.edge_settings.cors_origins:
        middleware.append(
            Middleware(
                CORSMiddleware,
                allow_origins=edge.edge_settings.cors_origins,
                allow_methods=["GET", "POST", "DELETE"],
                allow_headers=[
                    "authorization",
                    "content-type",
                    "mcp-session-id",
                    "mcp-protocol-version",
                    "traceparent",
                ],
                expose_headers=["mcp-session-id"],
            )
        )
    app = Starlette(routes=routes, middleware=middleware)
    return app if middleware else McpLane(app, mcp_door)
