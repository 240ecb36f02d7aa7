"""The MCP server the edge serves: tools and resources built from the bus, on the SDK's kernel.

Every public endpoint is a tool ``<service>_<endpoint>`` whose input schema is the endpoint's
request schema and whose output schema is its reply schema. A tool call is one bus request
through the :class:`~edge.gateway.Gateway`; an agent's error comes back as a tool result with
``isError`` and the body ``{"error", "code"}``, so the model can read it. An endpoint whose
request has ``progress_subject`` gets an inbox there when the client asked for progress, and
what arrives becomes ``notifications/progress``. Memory items are resources
``sophia://memory/items/{id}`` read through ``memory.get``.
"""

from __future__ import annotations

from functools import cache
from typing import Any

import anyio
import mcp_types as types
import msgspec
from mcp.server.context import ServerRequestContext
from mcp.server.lowlevel import NotificationOptions, Server
from mcp.server.models import InitializationOptions
from mcp.shared.exceptions import MCPError
from mcp_types import INTERNAL_ERROR, INVALID_PARAMS
from mcp_types import methods as spec_methods

from bus import codec
from bus.errors import SophiaError
from edge.catalog import PROGRESS_FIELD, Catalog, Endpoint
from edge.gateway import Gateway, new_call_id
from edge.mcp.exchange import CallScope
from edge.traces import edge_span

MEMORY_ITEM_PREFIX = "sophia://memory/items/"
RESOURCE_NOT_FOUND = -32002  # the MCP specification's code
RELAY_DRAIN_S = 2.0  # at most this long for queued progress after the reply
_json_decoder = msgspec.json.Decoder()
Context = ServerRequestContext[Any, Any]


def error_body(error: SophiaError) -> dict[str, Any]:
    return {"error": error.description, "code": error.code}


def tool_result(reply: bytes) -> dict[str, Any]:
    """A successful tool result: the reply as text and, being an object, as structured content."""
    value = msgspec.json.decode(reply) if reply else {}
    return _result(reply, value if isinstance(value, dict) else None)


def wire_tool_result(reply: bytes, version: str) -> dict[str, Any]:
    """:func:`tool_result` as the SDK would put it on the wire for protocol ``version``.

    The agent's reply (a JSON object, as every endpoint's reply is) is embedded raw as the
    structured content rather than decoded and encoded again.
    """
    structured = msgspec.Raw(reply) if reply[:1] == b"{" else None
    return _sieve(_result(reply, structured), version)


def wire_tool_error(error: SophiaError, version: str) -> dict[str, Any]:
    return _sieve(tool_error(error), version)


def _result(reply: bytes, structured: Any) -> dict[str, Any]:
    result: dict[str, Any] = {"content": [{"type": "text", "text": reply.decode()}]}
    if structured is not None:
        result["structuredContent"] = structured
    result["isError"] = False
    result["resultType"] = "complete"  # required from 2026-07-28; older sessions drop it
    return result


def _sieve(result: dict[str, Any], version: str) -> dict[str, Any]:
    keys = result_keys(version)
    return {k: v for k, v in result.items() if k in keys}


@cache
def result_keys(version: str) -> frozenset[str]:
    """The ``tools/call`` result fields protocol ``version`` carries, as the SDK's sieve keeps
    them (``resultType`` only from 2026-07-28, for one)."""
    sample = {
        "content": [{"type": "text", "text": "{}"}],
        "structuredContent": {},
        "isError": False,
        "resultType": "complete",
    }
    return frozenset(spec_methods.serialize_server_result("tools/call", version, sample))


def tool_error(error: SophiaError) -> dict[str, Any]:
    body = error_body(error)
    text = msgspec.json.encode(body).decode()
    return {
        "content": [{"type": "text", "text": text}],
        "structuredContent": body,
        "isError": True,
        "resultType": "complete",
    }


def _progress(data: bytes) -> tuple[float, float | None, str | None] | None:
    """A progress message as (progress, total, message): :class:`CallProgress` or any
    object with ``done``/``total`` and a ``path`` (the memory indexer's ``IndexProgress``)."""
    try:
        value = _json_decoder.decode(data)
    except msgspec.DecodeError:
        return None
    if not isinstance(value, dict):
        return None
    progress = value.get("progress", value.get("done"))
    if not isinstance(progress, int | float) or isinstance(progress, bool):
        return None
    total = value.get("total")
    message = value.get("message") or value.get("path")
    return (
        float(progress),
        float(total) if isinstance(total, int | float) and total else None,
        str(message) if message else None,
    )


def scope_of(ctx: Context) -> CallScope:
    scope = ctx.request
    if not isinstance(scope, CallScope):
        raise MCPError(code=INVALID_PARAMS, message="request arrived without a caller")
    return scope


class EdgeTools:
    """Tool and resource handlers over the catalog; one instance per edge process."""

    def __init__(self, gateway: Gateway, catalog: Catalog) -> None:
        self.gateway = gateway
        self.catalog = catalog
        self._version = -1
        self._tools: dict[str, tuple[Endpoint, types.Tool]] = {}

    def server(self) -> Server[Any]:
        """The SDK server whose kernel the edge's transports drive."""
        server: Server[Any] = Server(
            "sophia",
            version="1",
            instructions="Sophia's agents: memory and coding tools, served over its bus.",
            on_list_tools=self.list_tools,
            on_call_tool=self.call_tool,
            on_list_resources=self.list_resources,
            on_list_resource_templates=self.list_resource_templates,
            on_read_resource=self.read_resource,
        )
        server.middleware = []  # the edge starts its own span per call
        return server

    @staticmethod
    def init_options(server: Server[Any]) -> InitializationOptions:
        return server.create_initialization_options(NotificationOptions(tools_changed=True))

    # ---- tools -----------------------------------------------------------------------------

    def visible(self, scope: CallScope) -> list[tuple[Endpoint, types.Tool]]:
        """The tools ``scope``'s principal may call and every allow-list keeps."""
        self._refresh()
        return [
            (endpoint, tool)
            for name, (endpoint, tool) in self._tools.items()
            if scope.lists(name)
            and scope.principal.may_call(endpoint.service, endpoint.name, endpoint.access)
        ]

    def tool_names(self, scope: CallScope) -> list[str]:
        return [tool.name for _, tool in self.visible(scope)]

    async def list_tools(
        self, ctx: Context, params: types.PaginatedRequestParams | None
    ) -> types.ListToolsResult:
        return types.ListToolsResult(tools=[tool for _, tool in self.visible(scope_of(ctx))])

    async def call_tool(self, ctx: Context, params: types.CallToolRequestParams) -> dict[str, Any]:
        """The SDK kernel's handler (sessions in the 2026 per-request envelope take this way)."""
        try:
            reply = await self.run_tool(scope_of(ctx), params.name, params.arguments or {})
        except SophiaError as exc:
            return tool_error(exc)
        return tool_result(reply)

    async def call_tool_direct(
        self, scope: CallScope, params: dict[str, Any], version: str
    ) -> dict[str, Any] | None:
        """``tools/call`` on an initialised connection without the SDK kernel's model round
        trips: the wire result for protocol ``version``, or ``None`` when ``params`` is not
        the plain shape (then the kernel answers it, with its own errors)."""
        name, args = params.get("name"), params.get("arguments")
        if not isinstance(name, str) or not isinstance(args, dict | None):
            return None
        try:
            reply = await self.run_tool(scope, name, args or {})
        except SophiaError as exc:
            return wire_tool_error(exc, version)
        return wire_tool_result(reply, version)

    async def run_tool(self, scope: CallScope, name: str, args: dict[str, Any]) -> bytes:
        """Call tool ``name``: the agent's reply payload.

        Raises MCPError (unknown tool, outside the token's scopes), SophiaError (the call failed).
        """
        endpoint = self._endpoint_for(scope, name)
        call_id = new_call_id()
        with edge_span(f"tools/call {name}", scope.carrier):
            if not endpoint.progress_field:
                return await self._call(scope, endpoint, args, call_id)
            # the inbox is the edge's to name, never the client's
            args = {k: v for k, v in args.items() if k != PROGRESS_FIELD}
            return await self._call_with_progress(scope, endpoint, args, call_id)

    async def _call(
        self, scope: CallScope, endpoint: Endpoint, args: dict[str, Any], call_id: str
    ) -> bytes:
        return await self.gateway.call(
            scope.principal,
            endpoint,
            args,
            codec.encode(args),
            transport=scope.transport,
            call_id=call_id,
        )

    async def _call_with_progress(
        self, scope: CallScope, endpoint: Endpoint, args: dict[str, Any], call_id: str
    ) -> bytes:
        """Name an inbox in the request and relay what arrives there as progress notifications.

        Without a progress token from the client the field stays empty: no progress is sent.
        """
        if scope.progress_token is None:
            return await self._call(scope, endpoint, args, call_id)
        nc = self.gateway.bus.nc
        sub = await nc.subscribe(nc.new_inbox(), pending_msgs_limit=256)

        finished = anyio.Event()

        async def relay() -> None:
            try:
                async for msg in sub.messages:
                    if not msg.data:  # the end marker: everything sent before it is through
                        return
                    update = _progress(msg.data)
                    if update is not None:
                        await scope.progress(*update)
            finally:
                finished.set()

        args = {**args, PROGRESS_FIELD: sub.subject}
        try:
            async with anyio.create_task_group() as tg:
                tg.start_soon(relay)
                reply = await self._call(scope, endpoint, args, call_id)
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

    def _endpoint_for(self, scope: CallScope, name: str) -> Endpoint:
        self._refresh()
        found = self._tools.get(name)
        if found is None or not scope.lists(name):
            raise MCPError(code=INVALID_PARAMS, message=f"Unknown tool: {name}")
        endpoint = found[0]
        if not scope.principal.may_call(endpoint.service, endpoint.name, endpoint.access):
            raise MCPError(
                code=INVALID_PARAMS,
                message=f"tool {name} is outside the scopes of token {scope.principal.name!r}",
                data={"status": 403},
            )
        return endpoint

    def _refresh(self) -> None:
        if self._version == self.catalog.version:
            return
        tools: dict[str, tuple[Endpoint, types.Tool]] = {}
        for endpoint in self.catalog.endpoints(public_only=True):
            if endpoint.tool_name in tools:
                continue  # two services map to one name: the first (sorted) keeps it
            tools[endpoint.tool_name] = (endpoint, _tool(endpoint))
        self._tools, self._version = tools, self.catalog.version

    # ---- resources -------------------------------------------------------------------------

    async def list_resources(
        self, ctx: Context, params: types.PaginatedRequestParams | None
    ) -> types.ListResourcesResult:
        return types.ListResourcesResult(resources=[])

    async def list_resource_templates(
        self, ctx: Context, params: types.PaginatedRequestParams | None
    ) -> types.ListResourceTemplatesResult:
        templates = []
        if self._memory_get(scope_of(ctx)) is not None:
            templates.append(
                types.ResourceTemplate(
                    name="memory_item",
                    uri_template=MEMORY_ITEM_PREFIX + "{id}",
                    description="One item kept by Sophia's memory, as JSON.",
                    mime_type="application/json",
                )
            )
        return types.ListResourceTemplatesResult(resource_templates=templates)

    async def read_resource(
        self, ctx: Context, params: types.ReadResourceRequestParams
    ) -> types.ReadResourceResult:
        scope = scope_of(ctx)
        uri = str(params.uri)
        item_id = uri.removeprefix(MEMORY_ITEM_PREFIX)
        endpoint = self._memory_get(scope)
        if not uri.startswith(MEMORY_ITEM_PREFIX) or not item_id or endpoint is None:
            raise MCPError(code=RESOURCE_NOT_FOUND, message=f"Unknown resource: {uri}")
        with edge_span("resources/read memory", scope.carrier):
            try:
                reply = await self._call(scope, endpoint, {"id": item_id}, new_call_id())
            except SophiaError as exc:
                code = RESOURCE_NOT_FOUND if exc.code == 404 else INTERNAL_ERROR
                raise MCPError(code=code, message=exc.description, data=error_body(exc)) from None
        contents = types.TextResourceContents(
            uri=uri, mime_type="application/json", text=reply.decode()
        )
        return types.ReadResourceResult(contents=[contents])

    def _memory_get(self, scope: CallScope) -> Endpoint | None:
        endpoint = self.catalog.get("memory", "get")
        if endpoint is None or not endpoint.public or not scope.principal.may_call("memory", "get"):
            return None
        return endpoint


def _tool(endpoint: Endpoint) -> types.Tool:
    read_only = endpoint.access == "read"
    return types.Tool(
        name=endpoint.tool_name,
        description=endpoint.description or f"{endpoint.service} {endpoint.name}",
        input_schema=endpoint.tool_schema,
        output_schema=endpoint.response_schema,
        annotations=types.ToolAnnotations(read_only_hint=True) if read_only else None,
    )
