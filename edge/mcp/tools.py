"""The MCP server the edge serves: the SDK's low-level ``Server`` with tools from the bus.

Every public endpoint is a tool ``<service>_<endpoint>`` whose input schema is the endpoint's
request schema (closed: an unknown field is a 400 naming it) and whose output schema is its
reply schema. A tool call is one bus request through the :class:`~edge.gateway.Gateway`; an
agent's error comes back as a tool result with ``isError`` and the body ``{"error", "code"}``,
so the model can read it. An endpoint whose request has ``progress_subject`` gets an inbox
there when the client asked for progress, and each :data:`~bus.schemas.progress.Progress`
report arriving there becomes ``notifications/progress``. A memory call that names no
namespace gets the client's (:mod:`edge.namespaces`), and the tool's description says which.
Memory items are resources (:mod:`edge.mcp.resources`).

Every request reaches these handlers through the SDK's own machinery (its stdio loop, its
streamable-HTTP transport); who is calling is read from the request the transport carries
(``ctx.request``: the HTTP request, whose ``scope["state"]`` holds the edge's
:class:`CallScope`) or, on stdio, is the local user. Until the bus is reachable the server
still answers (no tools, and instructions that say how to start it); tools appear when it is.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import anyio
import mcp_types as types
import msgspec
from mcp import MCPError, ServerSession
from mcp.server import InitializationOptions, NotificationOptions, Server, ServerRequestContext
from starlette.requests import Request

from bus import codec, tracing
from bus.errors import SophiaError
from bus.micro import sophia_version
from bus.schemas.progress import Progress, as_notification
from bus.subjects import is_token
from edge.access import Principal, matches_any
from edge.catalog import PROGRESS_FIELD, Catalog, Endpoint
from edge.gateway import Gateway, new_call_id
from edge.mcp.resources import MemoryResources, resources_note
from edge.namespaces import described, takes_namespace, with_namespace
from edge.traces import edge_span

RELAY_DRAIN_S = 2.0  # at most this long for queued progress after the reply
CALL_SCOPE = "sophia_call"  # where the HTTP transport leaves the CallScope in scope["state"]
ONLINE = "Sophia's agents: memory and coding tools, served over its bus."
_progress_decoder = msgspec.json.Decoder(Progress)
Context = ServerRequestContext[Any, Any]


def offline(where: str) -> str:
    """The server's instructions while the bus cannot be reached."""
    return (
        f"Sophia's bus (NATS at {where}) is not reachable, so no tools are listed yet: start "
        "it with `sophia up`. Tools appear here as soon as it is reachable."
    )


@dataclass(slots=True)
class CallScope:
    """Who is calling and through which transport, with which tool allow-lists."""

    principal: Principal
    transport: str  # "mcp-stdio" | "mcp-http"
    session_id: str = ""
    allow: tuple[str, ...] = ()  # the client's own patterns
    edge_allow: tuple[str, ...] = ()  # SOPHIA_EDGE_TOOLS
    carrier: dict[str, str] | None = None  # incoming trace headers (HTTP)
    namespace: str = ""  # the client's default memory namespace ("": the endpoints' own)

    def lists(self, tool_name: str) -> bool:
        """Whether every allow-list in force keeps ``tool_name``."""
        return (
            matches_any(tool_name, self.edge_allow)
            and matches_any(tool_name, self.allow)
            and self.principal.lists(tool_name)
        )

    def reaches(self, endpoint: Endpoint) -> bool:
        """Whether the principal's scopes reach ``endpoint``."""
        return self.principal.may_call(endpoint.service, endpoint.name, endpoint.access)


class EdgeServer(Server[Any]):
    """The SDK's low-level server, announcing ``tools.listChanged`` (the edge sends it), with
    instructions brought up to date (``before_initialize``) for each handshake."""

    before_initialize: Callable[[], None] | None = None

    def create_initialization_options(
        self,
        notification_options: NotificationOptions | None = None,
        experimental_capabilities: dict[str, dict[str, Any]] | None = None,
        extensions: dict[str, dict[str, Any]] | None = None,
    ) -> InitializationOptions:
        if self.before_initialize is not None:
            self.before_initialize()
        return super().create_initialization_options(
            notification_options or NotificationOptions(tools_changed=True),
            experimental_capabilities,
            extensions,
        )


def error_body(error: SophiaError) -> dict[str, Any]:
    return {"error": error.description, "code": error.code}


def tool_result(reply: bytes) -> types.CallToolResult:
    """A successful tool result: the reply as text and, being an object, as structured content."""
    value = msgspec.json.decode(reply) if reply else {}
    return types.CallToolResult(
        content=[types.TextContent(type="text", text=reply.decode())],
        structured_content=value if isinstance(value, dict) else None,
        is_error=False,
    )


def tool_error(error: SophiaError) -> types.CallToolResult:
    body = error_body(error)
    return types.CallToolResult(
        content=[types.TextContent(type="text", text=msgspec.json.encode(body).decode())],
        structured_content=body,
        is_error=True,
    )


def trace_carrier(ctx: Context, call: CallScope) -> dict[str, str] | None:
    """The caller's trace context: HTTP headers, else ``_meta`` keys (stdio clients)."""
    if call.carrier:
        return call.carrier
    meta: Any = ctx.meta or {}
    if "traceparent" not in meta:
        return None
    return {k: str(meta[k]) for k in tracing.TRACE_HEADERS if k in meta}


class EdgeTools:
    """Tool and resource handlers over the catalog; one instance per edge process."""

    def __init__(self, local: CallScope | None = None) -> None:
        self.local = local  # stdio: the one caller of this process
        self.gateway: Gateway | None = None
        self.catalog: Catalog | None = None
        self._version = -1
        self._tools: dict[str, tuple[Endpoint, types.Tool]] = {}
        self._swapped = anyio.Event()  # set (and replaced) when the bus comes or goes
        self._swaps = 0
        self.client: ServerSession | None = None  # stdio: where list_changed goes
        self.resources = MemoryResources(self)
        self.server = EdgeServer(
            "sophia",
            version=sophia_version(),
            instructions=ONLINE,
            on_list_tools=self.list_tools,
            on_call_tool=self.call_tool,
            on_list_resources=self.resources.list_resources,
            on_list_resource_templates=self.resources.list_resource_templates,
            on_read_resource=self.resources.read_resource,
        )
        self.server.before_initialize = self._refresh
        self.server.middleware = []  # the edge starts its own span per call
        self.server.add_notification_handler(
            "notifications/initialized", types.NotificationParams, self.initialized
        )

    def attach(self, gateway: Gateway, catalog: Catalog) -> None:
        """The bus is reachable: serve its tools."""
        self.gateway, self.catalog = gateway, catalog
        self._version = -1
        self._refresh()
        self._swap()

    def detach(self, where: str) -> None:
        """The bus is gone: no tools until it is back."""
        self.gateway = self.catalog = None
        self._tools, self._version = {}, -1
        self.server.instructions = offline(where)
        self._swap()

    def _swap(self) -> None:
        self._swaps += 1
        self._swapped.set()
        self._swapped = anyio.Event()

    @property
    def version(self) -> tuple[int, int]:
        """Differs whenever the tools may have changed (the bus came or went, or its catalog)."""
        return self._swaps, -1 if self.catalog is None else self.catalog.version

    async def wait_changed(self, after: tuple[int, int]) -> tuple[int, int]:
        """Wait until :attr:`version` differs from ``after``; return the new version."""
        swapped, catalog = self._swapped, self.catalog
        if self.version == after:
            async with anyio.create_task_group() as tg:
                if catalog is not None:

                    async def on_catalog() -> None:
                        await catalog.wait_changed(after[1])
                        tg.cancel_scope.cancel()

                    tg.start_soon(on_catalog)
                await swapped.wait()
                tg.cancel_scope.cancel()
        return self.version

    def scope_of(self, ctx: Context) -> CallScope:
        """The caller of the request ``ctx`` belongs to. Raises MCPError when unknown."""
        request = ctx.request
        if isinstance(request, Request):
            call = request.scope.get("state", {}).get(CALL_SCOPE)
            if isinstance(call, CallScope):
                return call
        elif self.local is not None:
            return self.local
        raise MCPError(code=types.INVALID_PARAMS, message="request arrived without a caller")

    # ---- tools -----------------------------------------------------------------------------

    def visible(self, call: CallScope) -> list[tuple[Endpoint, types.Tool]]:
        """The tools ``call``'s principal may call and every allow-list keeps, described as
        ``call``'s client sees them (its namespace)."""
        self._refresh()
        return [
            (endpoint, _for_client(endpoint, tool, call.namespace))
            for name, (endpoint, tool) in self._tools.items()
            if call.lists(name) and call.reaches(endpoint)
        ]

    def tool_names(self, call: CallScope) -> list[str]:
        return [tool.name for _, tool in self.visible(call)]

    async def initialized(self, ctx: Context, params: types.NotificationParams) -> None:
        """The handshake is done: on stdio, keep the session to tell it of tool changes."""
        if ctx.request is None and self.local is not None:
            self.client = ctx.session

    async def list_tools(
        self, ctx: Context, params: types.PaginatedRequestParams | None
    ) -> types.ListToolsResult:
        return types.ListToolsResult(tools=[tool for _, tool in self.visible(self.scope_of(ctx))])

    async def call_tool(
        self, ctx: Context, params: types.CallToolRequestParams
    ) -> types.CallToolResult:
        call = self.scope_of(ctx)
        endpoint = self._endpoint_for(call, params.name)
        try:
            reply = await self._run(ctx, call, endpoint, params.arguments or {})
        except SophiaError as exc:
            return tool_error(exc)
        return tool_result(reply)

    async def _run(
        self, ctx: Context, call: CallScope, endpoint: Endpoint, args: dict[str, Any]
    ) -> bytes:
        with edge_span(f"tools/call {endpoint.tool_name}", trace_carrier(ctx, call)):
            wants_progress = bool(ctx.meta and ctx.meta.get("progress_token") is not None)
            if endpoint.progress_field and wants_progress:
                return await self._call_with_progress(ctx, call, endpoint, args)
            return await self._call(call, endpoint, args)

    async def request(
        self, ctx: Context, call: CallScope, endpoint: Endpoint, args: dict[str, Any], span: str
    ) -> bytes:
        """One call to ``endpoint`` in a span named ``span`` (resources use it). Raises
        SophiaError."""
        with edge_span(span, trace_carrier(ctx, call)):
            return await self._call(call, endpoint, args)

    async def _call(
        self, call: CallScope, endpoint: Endpoint, args: dict[str, Any], inbox: str = ""
    ) -> bytes:
        """Call ``endpoint`` with the client's ``args`` (validated as they are, with the
        client's namespace where they name none), plus the edge's own progress inbox when
        there is one."""
        assert self.gateway is not None  # an endpoint was found, so the bus is attached
        args = with_namespace(endpoint, args, call.namespace)
        payload = codec.encode({**args, PROGRESS_FIELD: inbox} if inbox else args)
        return await self.gateway.call(
            call.principal,
            endpoint,
            args,
            payload,
            transport=call.transport,
            call_id=new_call_id(),
        )

    async def _call_with_progress(
        self, ctx: Context, call: CallScope, endpoint: Endpoint, args: dict[str, Any]
    ) -> bytes:
        """Name an inbox in the request and relay what arrives there as progress notifications."""
        assert self.gateway is not None
        nc = self.gateway.bus.nc
        sub = await nc.subscribe(nc.new_inbox(), pending_msgs_limit=256)
        finished = anyio.Event()

        async def relay() -> None:
            try:
                async for msg in sub.messages:
                    if not msg.data:  # the end marker: everything sent before it is through
                        return
                    try:
                        report = _progress_decoder.decode(msg.data)
                    except msgspec.DecodeError:
                        continue
                    await ctx.session.report_progress(*as_notification(report))
            finally:
                finished.set()

        try:
            async with anyio.create_task_group() as tg:
                tg.start_soon(relay)
                reply = await self._call(call, endpoint, args, inbox=sub.subject)
                # Progress published before the reply is queued here already (NATS keeps one
                # publisher's order); an end marker sent now arrives after all of it.
                await nc.publish(sub.subject, b"")
                with anyio.move_on_after(RELAY_DRAIN_S):
                    await finished.wait()
                tg.cancel_scope.cancel()
        finally:
            with anyio.move_on_after(2, shield=True):
                await sub.unsubscribe()
        return reply

    def _endpoint_for(self, call: CallScope, name: str) -> Endpoint:
        self._refresh()
        found = self._tools.get(name)
        if found is None or not call.lists(name):
            shown = f": {name}" if is_token(name) and len(name) <= 128 else ""
            raise MCPError(code=types.INVALID_PARAMS, message=f"Unknown tool{shown}")
        endpoint = found[0]
        if not call.reaches(endpoint):
            raise MCPError(
                code=types.INVALID_PARAMS,
                message=f"tool {name} is outside the scopes of token {call.principal.name!r}",
                data={"status": 403},
            )
        return endpoint

    def _refresh(self) -> None:
        if self.catalog is None or self._version == self.catalog.version:
            return
        tools: dict[str, tuple[Endpoint, types.Tool]] = {}
        for endpoint in self.catalog.endpoints(public_only=True):
            if endpoint.tool_name not in tools:  # two services map to one name: the first keeps it
                tools[endpoint.tool_name] = (endpoint, _tool(endpoint))
        self._tools, self._version = tools, self.catalog.version
        self.server.instructions = ONLINE + resources_note(self.catalog)


def _for_client(endpoint: Endpoint, tool: types.Tool, namespace: str) -> types.Tool:
    """``tool`` as a client with its own ``namespace`` sees it: its description says so."""
    if not namespace or not takes_namespace(endpoint):
        return tool
    return tool.model_copy(update={"description": described(endpoint, namespace)})


def _tool(endpoint: Endpoint) -> types.Tool:
    read_only = endpoint.access == "read"
    return types.Tool(
        name=endpoint.tool_name,
        description=described(endpoint),
        input_schema=endpoint.tool_schema,
        output_schema=endpoint.response_schema,
        annotations=types.ToolAnnotations(read_only_hint=True) if read_only else None,
    )
