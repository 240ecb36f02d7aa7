"""MCP over stdio with the SDK's own transport (``mcp.stdio_server``), for editors that start
``sophia mcp``.

The edge gives ``stdio_server`` its own pair of line streams instead of letting it open
stdin and stdout, for one stated reason: the SDK drops a line that is not a JSON-RPC message
without a word, where JSON-RPC 2.0 requires an error reply (-32700 parse error, -32600
invalid request, id null), and a client that sent one would wait forever
(``test_stdio_malformed_lines_get_errors_and_serving_goes_on``). So every line that is a
message goes to the SDK as it is, and each other line is answered here, through the same
writer the SDK writes to — one whole line per write, under one lock, so they never
interleave. Everything else (requests, cancellation, progress) is the SDK's. While serving,
fd 1 points at stderr, so stray prints cannot corrupt the protocol (as the SDK's own streams
would do).

Tools follow the bus: when the tools the client sees change, it gets
``notifications/tools/list_changed``.
"""

from __future__ import annotations

import os
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any, cast

import anyio
from mcp import stdio_server

from edge.mcp import jsonrpc
from edge.mcp.jsonrpc import RpcError
from edge.mcp.tools import EdgeTools


class LineWriter:
    """stdout as the SDK writes to it (``write`` then ``flush``), one whole line at a time."""

    def __init__(self, file: anyio.AsyncFile[str]) -> None:
        self._file = file
        self._lock = anyio.Lock()

    async def write(self, text: str) -> int:
        async with self._lock:
            written = await self._file.write(text)
            await self._file.flush()
            return written

    async def flush(self) -> None:
        return None  # every write is flushed


class MessageLines:
    """stdin as the SDK reads it (``async for line``), without the lines that are not messages:
    those are answered with their JSON-RPC error here."""

    def __init__(self, file: anyio.AsyncFile[str], writer: LineWriter) -> None:
        self._file = file
        self._writer = writer

    def __aiter__(self) -> AsyncIterator[str]:
        return self._lines()

    async def _lines(self) -> AsyncIterator[str]:
        async for line in self._file:
            if not line.strip():
                continue
            try:
                jsonrpc.decode(line)  # the envelope only, with msgspec: the SDK parses the rest
            except RpcError as exc:
                error = jsonrpc.error(exc.request_id, exc.code, exc.message)
                await self._writer.write(error.decode() + "\n")
                continue
            yield line


@asynccontextmanager
async def open_lines() -> AsyncIterator[tuple[MessageLines, LineWriter]]:
    """The process's stdin and stdout as the SDK's line streams; fd 1 points at stderr meanwhile."""
    in_fd, out_fd, saved = os.dup(0), os.dup(1), os.dup(1)
    os.dup2(2, 1)
    try:
        reader = await anyio.open_file(in_fd, encoding="utf-8", errors="replace")
        out = await anyio.open_file(out_fd, "w", encoding="utf-8")
        async with reader, out:
            writer = LineWriter(out)
            yield MessageLines(reader, writer), writer
    finally:
        os.dup2(saved, 1)
        os.close(saved)


async def serve(tools: EdgeTools) -> None:
    """Answer MCP on stdin/stdout until end of input (then in-flight requests are cancelled)."""
    async with open_lines() as (lines, writer), anyio.create_task_group() as tg:
        tg.start_soon(announce_changes, tools)
        sdk_in, sdk_out = cast(Any, lines), cast(Any, writer)
        async with stdio_server(sdk_in, sdk_out) as (read, write):
            options = tools.server.create_initialization_options()
            await tools.server.run(read, write, options)
        tg.cancel_scope.cancel()


async def announce_changes(tools: EdgeTools) -> None:
    """Send ``notifications/tools/list_changed`` whenever the visible tools change."""
    assert tools.local is not None
    version, names = tools.version, tools.tool_names(tools.local)
    while True:
        version = await tools.wait_changed(version)
        current = tools.tool_names(tools.local)
        if current != names and tools.client is not None:
            await tools.client.send_tool_list_changed()
        names = current
