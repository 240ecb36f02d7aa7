"""One edge process's parts, wired together and run for as long as the process serves.

Guarantee: :func:`open_edge` yields once discovery has polled once (and, for HTTP, the tokens
and sessions are being watched); on exit it sets :attr:`Edge.closing` (open event streams
end), cancels its background tasks and drains the NATS connection within a bounded time.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass

import anyio
import msgspec
from nats.aio.msg import Msg

from bus import topology, tracing
from bus.client import Bus
from bus.config import Settings
from bus.connection import Link, connect
from bus.schemas.edge import CallCancelled
from edge import traces
from edge.audit import Auditor
from edge.catalog import Catalog
from edge.config import EdgeSettings
from edge.gateway import Gateway
from edge.limits import RateLimiter
from edge.mcp.core import McpCore
from edge.mcp.handlers import EdgeTools
from edge.mcp.inflight import Inflight
from edge.mcp.sessions import Sessions
from edge.tokens import TokenCache

log = logging.getLogger("sophia.edge")

DRAIN_S = 5.0
_cancel_decoder = msgspec.json.Decoder(CallCancelled)


@dataclass
class Edge:
    """Everything the edge's transports share."""

    settings: Settings
    edge_settings: EdgeSettings
    bus: Bus
    link: Link
    catalog: Catalog
    auditor: Auditor
    gateway: Gateway
    core: McpCore
    inflight: Inflight
    limiter: RateLimiter
    closing: anyio.Event
    tokens: TokenCache
    sessions: Sessions


@asynccontextmanager
async def open_edge(
    settings: Settings, edge_settings: EdgeSettings, *, shared: bool = True
) -> AsyncIterator[Edge]:
    """Connect, discover, watch; yield the wired :class:`Edge`. Raises UnavailableError.

    ``shared``: serve clients through several replicas (HTTP) — watch tokens and sessions and
    hear cancellations from other replicas. Stdio serves one local client and needs none.
    """
    traces.configure()
    link = Link()
    nc = await connect(settings, "sophia-edge", link)
    try:
        bus = Bus(nc, settings, link)
        await topology.ensure_streams(bus.js, settings)
        async with anyio.create_task_group() as tg:
            edge = await _wire(bus, link, settings, edge_settings)
            await tg.start(edge.catalog.run)
            await tg.start(edge.auditor.run)
            if shared:
                await tg.start(edge.tokens.run)
                await tg.start(edge.sessions.watch)
                subject = bus.subjects.event("edge", "cancel")
                await nc.subscribe(subject, cb=_canceller(edge.inflight))
            try:
                yield edge
            finally:
                edge.closing.set()
                tg.cancel_scope.cancel()
    finally:
        with anyio.move_on_after(DRAIN_S, shield=True):
            if nc.is_connected:
                await nc.drain()
        if not nc.is_closed:
            await nc.close()
        tracing.shutdown()


async def _wire(bus: Bus, link: Link, settings: Settings, edge_settings: EdgeSettings) -> Edge:
    subjects = bus.subjects
    catalog = Catalog(
        bus.nc,
        settings.prefix,
        edge_settings.edge_discovery_s,
        edge_settings.edge_discovery_window_s,
    )
    auditor = Auditor(bus.nc, subjects)
    gateway = Gateway(bus, catalog, auditor, edge_settings.edge_call_timeout_s)
    core = McpCore(EdgeTools(gateway, catalog))
    tokens = TokenCache(await bus.js.key_value(subjects.config_bucket))
    sessions = Sessions(await bus.js.key_value(subjects.sessions_bucket), core)
    return Edge(
        settings=settings,
        edge_settings=edge_settings,
        bus=bus,
        link=link,
        catalog=catalog,
        auditor=auditor,
        gateway=gateway,
        core=core,
        inflight=Inflight(),
        limiter=RateLimiter(edge_settings.edge_rate_per_s, edge_settings.edge_rate_burst),
        closing=anyio.Event(),
        tokens=tokens,
        sessions=sessions,
    )


def _canceller(inflight: Inflight):  # type: ignore[no-untyped-def]
    async def cancel(msg: Msg) -> None:
        try:
            event = _cancel_decoder.decode(msg.data)
        except (msgspec.DecodeError, msgspec.ValidationError):
            return
        if event.session and inflight.cancel(event.session, event.request_id):
            log.info("call_cancelled", extra={"session": event.session})

    return cancel
