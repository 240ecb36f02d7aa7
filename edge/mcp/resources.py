"""Memory items as MCP resources ``sophia://memory/items/{id}``, read through ``memory.get``.

- ``resources/templates/list`` names the URI template when the caller reaches ``memory.get``.
- ``resources/read`` returns the item as JSON (an unknown id: -32002, the specification's
  "resource not found").
- ``resources/list`` pages through the items most recent first, in the client's namespace
  when it set one (else every namespace), through the memory agent's ``memory.list``; the
  MCP cursor is that endpoint's own ``next_cursor``, passed through untouched. A memory agent
  without ``memory.list`` lists nothing, and the server's instructions say so (see
  :func:`resources_note`): thousands of items are only reachable a page at a time, and search
  is the way in without it.
"""

from __future__ import annotations

import datetime
from typing import TYPE_CHECKING, Any

import mcp_types as types
import msgspec
from mcp import MCPError

from bus.errors import SophiaError
from edge.catalog import Catalog, Endpoint

if TYPE_CHECKING:
    from edge.mcp.tools import CallScope, Context, EdgeTools

MEMORY_ITEM_PREFIX = "sophia://memory/items/"
RESOURCE_NOT_FOUND = -32002  # the MCP specification's code
LIST_ENDPOINT = "list"  # memory.list: a page of items, most recent first
PAGE = 50  # items per resources/list page
_ERROR_CODES = {404: RESOURCE_NOT_FOUND, 400: types.INVALID_PARAMS}


class ListedItem(msgspec.Struct, kw_only=True):
    """What the edge reads of one item in a ``memory.list`` page (more fields are ignored)."""

    id: str
    namespace: str = ""
    kind: str = ""
    created_at: float = 0.0
    title: str = ""


class ListedPage(msgspec.Struct, kw_only=True):
    items: list[ListedItem] = msgspec.field(default_factory=list)
    next_cursor: str = ""


_page_decoder = msgspec.json.Decoder(ListedPage)


def memory_endpoint(catalog: Catalog | None, name: str) -> Endpoint | None:
    """The public memory endpoint ``name``, when the bus has one."""
    endpoint = catalog.get("memory", name) if catalog is not None else None
    return endpoint if endpoint is not None and endpoint.public else None


def resources_note(catalog: Catalog | None) -> str:
    """What the server's instructions say about memory resources ("" without a memory agent)."""
    if memory_endpoint(catalog, "get") is None:
        return ""
    if memory_endpoint(catalog, LIST_ENDPOINT) is not None:
        return (
            f" Memory items are resources {MEMORY_ITEM_PREFIX}{{id}}; resources/list pages them "
            "most recent first."
        )
    return (
        f" Memory items are resources {MEMORY_ITEM_PREFIX}{{id}}, read by id (ids come from "
        "memory_search hits). resources/list is empty: this memory agent cannot list its "
        "items a page at a time (it has no memory.list endpoint), so search is the way in."
    )


def as_resource(item: ListedItem) -> types.Resource:
    what = f"{item.kind or 'item'} in namespace {item.namespace!r}" if item.namespace else None
    modified = None
    if item.created_at > 0:
        at = datetime.datetime.fromtimestamp(item.created_at, datetime.UTC)
        modified = at.isoformat().replace("+00:00", "Z")
    return types.Resource(
        uri=MEMORY_ITEM_PREFIX + item.id,
        name=item.title or item.id,
        description=what,
        mime_type="application/json",
        annotations=types.Annotations(last_modified=modified) if modified else None,
    )


class MemoryResources:
    """The resource handlers of one :class:`~edge.mcp.tools.EdgeTools`."""

    def __init__(self, tools: EdgeTools) -> None:
        self.tools = tools

    def reachable(self, call: CallScope, name: str) -> Endpoint | None:
        endpoint = memory_endpoint(self.tools.catalog, name)
        return endpoint if endpoint is not None and call.reaches(endpoint) else None

    async def list_resources(
        self, ctx: Context, params: types.PaginatedRequestParams | None
    ) -> types.ListResourcesResult:
        call = self.tools.scope_of(ctx)
        endpoint = self.reachable(call, LIST_ENDPOINT)
        if endpoint is None or self.reachable(call, "get") is None:
            return types.ListResourcesResult(resources=[])
        args: dict[str, Any] = {"limit": PAGE}
        if params is not None and params.cursor:
            args["cursor"] = params.cursor
        reply = await self._ask(ctx, call, endpoint, args, "resources/list memory")
        try:
            page = _page_decoder.decode(reply)
        except (msgspec.DecodeError, msgspec.ValidationError):
            unreadable = "memory.list: unreadable reply"
            raise MCPError(code=types.INTERNAL_ERROR, message=unreadable) from None
        return types.ListResourcesResult(
            resources=[as_resource(item) for item in page.items],
            next_cursor=page.next_cursor or None,
        )

    async def list_resource_templates(
        self, ctx: Context, params: types.PaginatedRequestParams | None
    ) -> types.ListResourceTemplatesResult:
        templates = []
        if self.reachable(self.tools.scope_of(ctx), "get") is not None:
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
        call = self.tools.scope_of(ctx)
        uri = str(params.uri)
        item_id = uri.removeprefix(MEMORY_ITEM_PREFIX)
        endpoint = self.reachable(call, "get")
        if not uri.startswith(MEMORY_ITEM_PREFIX) or not item_id or endpoint is None:
            raise MCPError(code=RESOURCE_NOT_FOUND, message="Unknown resource")
        reply = await self._ask(ctx, call, endpoint, {"id": item_id}, "resources/read memory")
        contents = types.TextResourceContents(
            uri=uri, mime_type="application/json", text=reply.decode()
        )
        return types.ReadResourceResult(contents=[contents])

    async def _ask(
        self, ctx: Context, call: CallScope, endpoint: Endpoint, args: dict[str, Any], span: str
    ) -> bytes:
        """One call for a resource request; an agent's error becomes the MCP error for it."""
        try:
            return await self.tools.request(ctx, call, endpoint, args, span)
        except SophiaError as exc:
            code = _ERROR_CODES.get(exc.code, types.INTERNAL_ERROR)
            body = {"error": exc.description, "code": exc.code}
            raise MCPError(code=code, message=exc.description, data=body) from None
