"""Running the edge: HTTP (``python -m edge``) or stdio (``sophia mcp``).

Guarantee: the first SIGTERM or SIGINT stops taking connections, ends open event streams and
lets requests in flight finish (bounded by :data:`GRACE_S`), then drains NATS; a second one
stops at once. Exit status from :func:`main`: 0 clean, 2 configuration, 1 otherwise.
"""

from __future__ import annotations

import contextlib
import logging
import signal
from collections.abc import Iterator
from typing import NoReturn

import anyio
import uvicorn
from anyio.abc import TaskStatus

from bus import logs
from bus.config import Settings, load
from bus.errors import UnavailableError
from bus.runner import configured, run_process
from edge.access import LOCAL
from edge.app import build_app
from edge.config import EdgeSettings
from edge.mcp import stdio
from edge.mcp.http import McpHttp
from edge.mcp.tools import CallScope, EdgeTools
from edge.runtime import Edge, open_edge

log = logging.getLogger("sophia.edge")

GRACE_S = 10.0
STDIO_CONNECT_S = 2.0  # sophia mcp answers the editor at once: no longer than this for NATS
STDIO_RETRY_S = 2.0  # then it tries again this often, quietly, until NATS is there


class _Server(uvicorn.Server):
    """uvicorn without its own signal handling: the edge owns shutdown."""

    closing: anyio.Event | None = None

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        yield

    def request_exit(self) -> None:
        """Stop taking connections; end event streams now so they do not hold shutdown."""
        if self.closing is not None:
            self.closing.set()
        self.should_exit = True


async def serve_http(
    settings: Settings,
    edge_settings: EdgeSettings,
    *,
    port: int | None = None,
    task_status: TaskStatus[_Server] = anyio.TASK_STATUS_IGNORED,
) -> None:
    """Serve HTTP on ``SOPHIA_EDGE_BIND`` (or ``port``) until cancelled or asked to exit.

    Raises UnavailableError when NATS cannot be reached, or when the connection ends for good
    (so the process exits and its supervisor starts it afresh).
    """
    host, bind_port = settings.edge_host_port
    async with open_edge(settings, edge_settings) as edge:
        tools = EdgeTools()
        tools.attach(edge.gateway, edge.catalog)
        mcp = McpHttp(edge, tools)
        config = uvicorn.Config(
            build_app(edge, mcp),
            host=host,
            port=bind_port if port is None else port,
            log_config=None,
            access_log=False,
            lifespan="off",
            timeout_graceful_shutdown=int(GRACE_S),
            server_header=False,
            proxy_headers=False,  # nothing reads the client address; X-Forwarded-* changes nothing
        )
        server = _Server(config)
        server.closing = edge.closing
        async with mcp.running(), anyio.create_task_group() as tg:
            tg.start_soon(_report_started, server, task_status)
            tg.start_soon(_stop_when_lost, edge, server)
            try:
                await server.serve()
            finally:
                edge.closing.set()
            tg.cancel_scope.cancel()
        if edge.lost.is_set():
            raise UnavailableError("the bus connection ended and could not be re-established")


async def _stop_when_lost(edge: Edge, server: _Server) -> None:
    await edge.lost.wait()
    server.request_exit()


async def _report_started(server: _Server, task_status: TaskStatus[_Server]) -> None:
    while not server.started:  # noqa: ASYNC110 — uvicorn offers no event to wait on
        await anyio.sleep(0.01)
    task_status.started(server)


async def serve_stdio(
    settings: Settings, edge_settings: EdgeSettings, tools: list[str], namespace: str = ""
) -> None:
    """Serve MCP on stdin/stdout as the local user until end of input; memory calls that name
    no namespace get ``namespace`` when it is set.

    The editor is answered at once, bus or no bus: without NATS the handshake succeeds with
    no tools and instructions saying to run ``sophia up``; the tools appear (with
    ``notifications/tools/list_changed``) as soon as NATS is reachable.
    """
    local = CallScope(
        principal=LOCAL,
        transport="mcp-stdio",
        allow=tuple(tools),
        edge_allow=tuple(edge_settings.tool_patterns),
        namespace=namespace,
    )
    edge_tools = EdgeTools(local)
    async with anyio.create_task_group() as tg:
        await tg.start(_keep_bus, settings, edge_settings, edge_tools)
        await stdio.serve(edge_tools)
        tg.cancel_scope.cancel()


async def _keep_bus(
    settings: Settings,
    edge_settings: EdgeSettings,
    tools: EdgeTools,
    *,
    task_status: TaskStatus[None] = anyio.TASK_STATUS_IGNORED,
) -> None:
    """Attach ``tools`` to the bus whenever it is reachable; ``started()`` after the first try."""
    started, warned = False, False
    while True:
        try:
            async with open_edge(
                settings, edge_settings, shared=False, connect_timeout_s=STDIO_CONNECT_S
            ) as edge:
                tools.attach(edge.gateway, edge.catalog)
                warned = False
                if not started:
                    task_status.started()
                    started = True
                await edge.lost.wait()
        except UnavailableError:
            if not warned:
                log.warning("nats_unreachable", extra={"url": settings.safe_nats_url})
                warned = True
        tools.detach(settings.safe_nats_url)
        if not started:
            task_status.started()
            started = True
        await anyio.sleep(STDIO_RETRY_S)


async def _until_signalled(server: _Server) -> None:
    with anyio.open_signal_receiver(signal.SIGTERM, signal.SIGINT) as signals:
        async for _ in signals:
            if server.should_exit:
                server.force_exit = True
                return
            server.request_exit()


async def _serve_then_stop(
    settings: Settings,
    edge_settings: EdgeSettings,
    scope: anyio.CancelScope,
    *,
    task_status: TaskStatus[_Server] = anyio.TASK_STATUS_IGNORED,
) -> None:
    await serve_http(settings, edge_settings, task_status=task_status)
    scope.cancel()


async def _run_http(settings: Settings, edge_settings: EdgeSettings) -> None:
    async with anyio.create_task_group() as tg:
        server = await tg.start(_serve_then_stop, settings, edge_settings, tg.cancel_scope)
        tg.start_soon(_until_signalled, server)


def main() -> NoReturn:
    """Entry point of ``python -m edge``: never returns (exit codes as :func:`run_process`)."""
    settings, edge_settings = configured("edge", lambda: (load(Settings), load(EdgeSettings)))
    logs.configure(settings.log_level)
    run_process("edge", _run_http, settings, edge_settings)
