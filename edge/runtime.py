"""One edge process's parts, wired together and run for as long as the process serves.

Guarantee: :func:`open_edge` yields once discovery has polled once (and, for HTTP, the tokens
and sessions are being watched); the edge answers the NATS service API as ``edge`` (``nats
micro ls`` lists every replica). On exit it sets :attr:`Edge.closing` (open event streams
end), cancels its background tasks and drains the NATS connection within a bounded time.
When nats-py gives the connection up for good, :attr:`Edge.lost` is set: the HTTP edge then
stops (its supervisor starts it afresh), the stdio edge drops its tools and reconnects.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass

import anyio
import msgspec
from nats.aio.msg import Msg

from bus import codec, connection, metrics, topology, tracing, wire
from bus.client import Bus
from bus.config import Settings
from bus.connection import Link, connect
from bus.limits import HEADER_ROOM
from bus.micro import ServiceIdentity
from bus.schemas.edge import EDGE_SERVICE, CallCancelled, TokenSync, TokenSynced
from edge import traces
from edge.audit import Auditor
from edge.catalog import Catalog
from edge.config import EdgeSettings
from edge.gateway import Gateway
from edge.limits import RateLimiter
from edge.mcp.inflight import Inflight
from edge.mcp.sessions import Sessions
from edge.tokens import TokenCache

log = logging.getLogger("sophia.edge")

DRAIN_S = 5.0
_cancel_decoder = msgspec.json.Decoder(CallCancelled)
_sync_decoder = msgspec.json.Decoder(TokenSync)


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
    inflight: Inflight
    limiter: RateLimiter
    closing: anyio.Event
    lost: anyio.Event
    tokens: TokenCache
    sessions: Sessions
    identity: ServiceIdentity

    @property
    def max_body_bytes(self) -> int:
        """The body limit: the configured one, and always room for headers under the bus's
        max_payload (a body the bus cannot carry is a 413 here, never a lost connection)."""
        room = self.bus.nc.max_payload - HEADER_ROOM
        return min(self.edge_settings.edge_max_body_bytes, room)


@asynccontextmanager
async def open_edge(
    settings: Settings,
    edge_settings: EdgeSettings,
    *,
    shared: bool = True,
    connect_timeout_s: float = connection.CONNECT_TIMEOUT_S,
) -> AsyncIterator[Edge]:
    """Connect, discover, watch; yield the wired :class:`Edge`. Raises UnavailableError.

    ``shared``: serve clients through several replicas (HTTP) — watch tokens and sessions and
    hear cancellations and token revocations from elsewhere. Stdio serves one local client and
    needs none of it.
    """
    traces.configure(settings)
    metrics.configure(settings, EDGE_SERVICE)
    link = Link()
    nc = await connect(settings, "sophia-edge", link, timeout_s=connect_timeout_s)
    try:
        bus = Bus(nc, settings, link)
        await topology.ensure_streams(bus.js, settings)
        async with anyio.create_task_group() as tg:
            edge = await _wire(bus, link, settings, edge_settings)
            link.on_closed(edge.lost.set)
            await tg.start(edge.catalog.run)
            await tg.start(edge.auditor.run)
            await edge.identity.answer(nc)  # as `edge`, with no endpoints of its own
            if shared:
                await tg.start(edge.tokens.run)
                await tg.start(edge.sessions.watch)
                await nc.subscribe(bus.subjects.event("edge", "cancel"), cb=_canceller(edge))
                await nc.subscribe(bus.subjects.endpoint(EDGE_SERVICE, "tokens.sync"),
                                   cb=_token_syncer(edge))  # fmt: skip
            try:
                yield edge
            finally:
                edge.closing.set()
                tg.cancel_scope.cancel()
    finally:
        await connection.close(nc, link, DRAIN_S)
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
    identity = ServiceIdentity.of_this_process(
        EDGE_SERVICE, "MCP and HTTP in front of the bus", settings.prefix
    )
    return Edge(
        settings=settings,
        edge_settings=edge_settings,
        bus=bus,
        link=link,
        catalog=catalog,
        auditor=auditor,
        gateway=Gateway(bus, catalog, auditor, edge_settings.edge_call_timeout_s),
        inflight=Inflight(),
        limiter=RateLimiter(edge_settings.edge_rate_per_s, edge_settings.edge_rate_burst),
        closing=anyio.Event(),
        lost=anyio.Event(),
        tokens=TokenCache(await bus.js.key_value(subjects.config_bucket)),
        sessions=Sessions(await bus.js.key_value(subjects.sessions_bucket)),
        identity=identity,
    )


def _canceller(edge: Edge) -> Callable[[Msg], Awaitable[None]]:
    async def cancel(msg: Msg) -> None:
        try:
            event = _cancel_decoder.decode(msg.data)
        except (msgspec.DecodeError, msgspec.ValidationError):
            return
        if event.session and edge.inflight.cancel(event.session, event.request_id):
            log.info("call_cancelled", extra={"session": event.session})

    return cancel


def _token_syncer(edge: Edge) -> Callable[[Msg], Awaitable[None]]:
    """Re-read one token and answer once this replica's view has it (revocation waits)."""

    async def sync(msg: Msg) -> None:
        try:
            request = _sync_decoder.decode(msg.data)
            await edge.tokens.recheck(request.name)
        except Exception:  # a bad request or an unreachable bucket: no confirmation
            log.warning("token_sync_failed")
            return
        if msg.reply:
            answer = codec.encode(TokenSynced(id=edge.identity.id, name=request.name))
            await wire.publish(edge.bus.nc, msg.reply, answer)

    return sync
