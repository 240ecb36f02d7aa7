"""A CLI command's short NATS session: connect fast or fail, find running services.

Guarantees: :func:`open_bus` gives up after ``connect_timeout`` with an
UnavailableError that names the URL (passwords redacted); :func:`discover`
collects every reply that arrives within its window, never waits longer.
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import TypeVar

import anyio
import msgspec
import nats
import nats.errors
from nats.aio.client import Client

from bus.client import Bus
from bus.config import Settings, redact_url
from bus.errors import UnavailableError
from bus.micro import PingResponse
from bus.subjects import srv
from ops.natsserver import port_open

T = TypeVar("T", bound=msgspec.Struct)

CONNECT_TIMEOUT_S = 2.0
DISCOVER_WINDOW_S = 0.5


@asynccontextmanager
async def open_bus(
    settings: Settings, connect_timeout: float = CONNECT_TIMEOUT_S
) -> AsyncIterator[Bus]:
    """A connected Bus for one command, drained on exit. Raises UnavailableError."""
    url = redact_url(settings.nats_url)
    failures: list[Exception] = []

    async def note_failure(exc: Exception) -> None:  # instead of nats-py's printed tracebacks
        failures.append(exc)

    try:
        with anyio.fail_after(connect_timeout + 1):
            nc = await nats.connect(
                settings.nats_url,
                name="sophia-cli",
                connect_timeout=connect_timeout,
                allow_reconnect=False,
                max_reconnect_attempts=1,  # one retry, then NoServersError (0 means forever)
                reconnect_time_wait=0.1,
                error_cb=note_failure,
            )
    except (TimeoutError, OSError, nats.errors.Error) as exc:
        cause = failures[-1] if failures else exc
        reason = getattr(cause, "strerror", None) or type(cause).__name__
        raise UnavailableError(
            f"NATS is not reachable at {url} ({reason}); is the stack up? (`sophia up`)"
        ) from None
    try:
        yield Bus(nc, settings)
    finally:
        with anyio.move_on_after(2, shield=True):
            await nc.drain()
        if not nc.is_closed:
            await nc.close()


async def discover(
    nc: Client, subject: str, reply_type: type[T], window: float = DISCOVER_WINDOW_S
) -> list[T]:
    """Every reply to one un-addressed request on ``subject`` that arrives within ``window``.

    Replies that do not decode as ``reply_type`` are skipped (another kind of service).
    """
    decoder = msgspec.json.Decoder(reply_type)
    replies: list[T] = []
    inbox = nc.new_inbox()
    sub = await nc.subscribe(inbox)
    try:
        await nc.publish(subject, b"", reply=inbox)
        with anyio.move_on_after(window):
            async for msg in sub.messages:
                try:
                    replies.append(decoder.decode(msg.data))
                except msgspec.DecodeError:
                    continue
    finally:
        await sub.unsubscribe()
    return replies


def ours(metadata: dict[str, str], settings: Settings) -> bool:
    """Whether a service instance belongs to this install (same prefix)."""
    return metadata.get("prefix") == settings.prefix


async def missing_agents(nc: Client, settings: Settings, names: set[str]) -> set[str]:
    """The agent names among ``names`` with no instance answering ``$SRV.PING``."""
    pings = await discover(nc, srv("PING"), PingResponse, window=0.3)
    return names - {p.name for p in pings if ours(p.metadata, settings)}


async def wait_ready(
    settings: Settings, agents: set[str], edge: tuple[str, int] | None, timeout: float
) -> set[str]:
    """Wait until every agent answers and the edge listens; returns what still does not.

    Never waits past ``timeout``; an unreachable NATS counts as nothing answering.
    """
    waiting = set(agents) | ({"edge"} if edge else set())
    deadline = time.monotonic() + timeout
    while waiting and time.monotonic() < deadline:
        left = max(deadline - time.monotonic(), 0.1)
        try:
            async with open_bus(settings, min(CONNECT_TIMEOUT_S, left)) as bus:
                while waiting and time.monotonic() < deadline:
                    waiting = await _still_waiting(bus.nc, settings, waiting, edge)
                    if waiting:
                        await anyio.sleep(0.2)
        except (UnavailableError, nats.errors.Error):
            await anyio.sleep(0.2)
    return waiting


async def _still_waiting(
    nc: Client, settings: Settings, waiting: set[str], edge: tuple[str, int] | None
) -> set[str]:
    left = await missing_agents(nc, settings, waiting - {"edge"})
    if "edge" in waiting and edge and not await anyio.to_thread.run_sync(port_open, *edge):
        left.add("edge")
    return left
