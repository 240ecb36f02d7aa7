"""MCP over stdio: one JSON-RPC message per line, for editors that start ``sophia mcp``.

Guarantee: requests are answered concurrently (``initialize`` and notifications in order);
``notifications/cancelled`` cancels the named request, which then gets no reply; when the
visible tools change the client gets ``notifications/tools/list_changed``; at end of input
in-flight requests get :data:`EOF_GRACE_S` to finish. Pipes are read and written on the event
loop itself, not through worker threads; stdout is reserved for the protocol (fd 1 is pointed
at stderr while serving, so stray prints cannot corrupt it).
"""

from __future__ import annotations

import asyncio
import os
import stat
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import replace
from typing import Any, Protocol

import anyio
from mcp.server.runner import ServerRunner

from bus.tasks import TaskSet
from edge.catalog import Catalog
from edge.mcp import jsonrpc
from edge.mcp.core import McpCore, progress_token
from edge.mcp.exchange import CallScope
from edge.mcp.inflight import Inflight
from edge.mcp.jsonrpc import Message, RpcError

EOF_GRACE_S = 10.0
MAX_CONCURRENT = 256  # requests answered at once; reading stdin waits beyond that
MAX_LINE_BYTES = 16 * 1_048_576


class LineIO(Protocol):
    async def readline(self) -> bytes: ...
    async def write(self, data: bytes) -> None: ...


class PipeIO:
    """Lines from one file descriptor to another, on the event loop (pipes, ttys, sockets)."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self._reader = reader
        self._writer = writer

    async def readline(self) -> bytes:
        try:
            return await self._reader.readline()
        except ValueError:  # over MAX_LINE_BYTES: the reader has dropped it
            return b"\n"

    async def write(self, data: bytes) -> None:
        self._writer.write(data)  # one whole line per call: writes cannot interleave
        await self._writer.drain()


class FileIO:
    """Lines through worker threads, for descriptors the loop cannot watch (regular files)."""

    def __init__(self, reader: Any, writer: Any) -> None:
        self._reader = reader
        self._writer = writer
        self._lock = anyio.Lock()

    async def readline(self) -> bytes:
        return bytes(await self._reader.readline(MAX_LINE_BYTES))

    async def write(self, data: bytes) -> None:
        async with self._lock:
            await self._writer.write(data)
            await self._writer.flush()


def trace_carrier(params: dict[str, Any] | None) -> dict[str, str] | None:
    """``traceparent``/``tracestate`` a client put in a request's ``_meta``, if any."""
    meta = (params or {}).get("_meta")
    if not isinstance(meta, dict) or "traceparent" not in meta:
        return None
    return {k: str(meta[k]) for k in ("traceparent", "tracestate") if k in meta}


def _watchable(fd: int) -> bool:
    mode = os.fstat(fd).st_mode
    return stat.S_ISFIFO(mode) or stat.S_ISCHR(mode) or stat.S_ISSOCK(mode)


@asynccontextmanager
async def open_stdio() -> AsyncIterator[LineIO]:
    """The process's stdin and stdout as a :class:`LineIO`; fd 1 points at stderr meanwhile."""
    in_fd, out_fd, saved_fd = os.dup(0), os.dup(1), os.dup(1)
    os.dup2(2, 1)
    try:
        if _watchable(in_fd) and _watchable(out_fd):
            loop = asyncio.get_running_loop()
            reader = asyncio.StreamReader(limit=MAX_LINE_BYTES)
            rt, _ = await loop.connect_read_pipe(
                lambda: asyncio.StreamReaderProtocol(reader), os.fdopen(in_fd, "rb", 0)
            )
            wt, wp = await loop.connect_write_pipe(
                asyncio.streams.FlowControlMixin, os.fdopen(out_fd, "wb", 0)
            )
            try:
                yield PipeIO(reader, asyncio.StreamWriter(wt, wp, reader, loop))
            finally:
                rt.close()
                wt.close()
        else:
            async with (
                await anyio.open_file(in_fd, "rb") as fin,
                await anyio.open_file(out_fd, "wb") as fout,
            ):
                yield FileIO(fin, fout)
    finally:
        os.dup2(saved_fd, 1)
        os.close(saved_fd)


class StdioServer:
    """Serves one client over a :class:`LineIO`."""

    def __init__(self, core: McpCore, catalog: Catalog, base: CallScope) -> None:
        self.core = core
        self.catalog = catalog
        self.session = f"stdio-{uuid.uuid4().hex}"
        self.base = replace(base, session_id=self.session)
        self.inflight = Inflight()
        self._io: LineIO | None = None

    async def serve(self, io: LineIO) -> None:
        """Answer messages until end of input; returns after in-flight requests settle."""
        self._io = io
        self.base.send = self._send_notification
        runner = self.core.runner(self.core.new_connection(session_id=self.session))
        requests = TaskSet(MAX_CONCURRENT)
        async with anyio.create_task_group() as tg:
            tg.start_soon(self._announce_changes, runner)
            try:
                while line := await io.readline():
                    if line.strip():
                        await self._take(requests, runner, line)
                with anyio.move_on_after(EOF_GRACE_S):
                    await requests.wait_idle()
            finally:
                with anyio.move_on_after(EOF_GRACE_S, shield=True):
                    await requests.cancel_all()
            tg.cancel_scope.cancel()

    async def _take(self, requests: TaskSet, runner: ServerRunner[Any], line: bytes) -> None:
        try:
            msg = jsonrpc.decode(line)
        except RpcError as exc:
            await self._write(jsonrpc.error(exc.request_id, exc.code, exc.message))
            return
        if msg.is_request and msg.method == "initialize":
            await self._request(runner, msg)  # in order: a pipelined request sees its outcome
        elif msg.is_request:
            await requests.spawn(self._request(runner, msg))  # waits while MAX_CONCURRENT run
        elif msg.is_notification and msg.method == "notifications/cancelled":
            self.inflight.cancel(self.session, (msg.params or {}).get("requestId"))
        elif msg.is_notification:
            await self.core.notify(runner, msg, self.base)

    async def _request(self, runner: ServerRunner[Any], msg: Message) -> None:
        scope = self.base.for_request(
            msg.id,  # type: ignore[arg-type]
            progress_token(msg.params),
            trace_carrier(msg.params),
        )
        reply = b""
        with self.inflight.track(self.session, msg.id):
            reply = await self.core.answer(runner, msg, scope)
        if reply:  # empty when the client cancelled it: no reply then
            await self._write(reply)

    async def _send_notification(self, method: str, params: dict[str, Any] | None) -> None:
        await self._write(jsonrpc.notification(method, params))

    async def _write(self, data: bytes) -> None:
        assert self._io is not None
        await self._io.write(data + b"\n")

    async def _announce_changes(self, runner: ServerRunner[Any]) -> None:
        version, names = self.catalog.version, self.core.tools.tool_names(self.base)
        while True:
            version = await self.catalog.wait_changed(version)
            current = self.core.tools.tool_names(self.base)
            if current != names and runner.connection.initialize_accepted:
                await self._send_notification("notifications/tools/list_changed", None)
            names = current
