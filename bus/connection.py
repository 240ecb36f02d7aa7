"""Connecting to NATS with bounded retries, and noticing when the link drops.

``connect`` retries the first connection for a bounded time (the bus may still be
starting), then nats-py reconnects with a bounded wait between attempts. ``Link``
tracks the connection state so in-flight requests can fail fast with 503 instead of
hanging while the connection is down.
"""

from __future__ import annotations

import logging
from collections.abc import Callable

import anyio
import nats.errors

from bus.config import Settings
from bus.errors import UnavailableError
from bus.wire import Wire

log = logging.getLogger("sophia.bus")

CONNECT_TIMEOUT_S = 30.0
RECONNECT_ATTEMPTS = 1800  # with a wait of at most reconnect_max_s between them


class Link:
    """Connection state plus the callbacks to run when it changes."""

    def __init__(self) -> None:
        self.connected = False
        self.closing = False  # set before a deliberate drain, so its disconnect is not a warning
        self._on_lost: set[Callable[[], None]] = set()
        self._on_back: set[Callable[[], None]] = set()

    def on_lost(self, cb: Callable[[], None]) -> Callable[[], None]:
        """Call ``cb`` when the connection drops; returns a function that unregisters it."""
        self._on_lost.add(cb)
        return lambda: self._on_lost.discard(cb)

    def on_back(self, cb: Callable[[], None]) -> None:
        """Call ``cb`` each time the connection is re-established."""
        self._on_back.add(cb)

    async def disconnected(self) -> None:
        if self.connected and not self.closing:
            log.warning("nats_disconnected")
        self.connected = False
        for cb in list(self._on_lost):
            cb()

    async def reconnected(self) -> None:
        self.connected = True
        log.info("nats_reconnected")
        for cb in list(self._on_back):
            cb()


async def _error_cb(exc: Exception) -> None:
    log.warning("nats_error", extra={"error": type(exc).__name__})


async def connect(settings: Settings, name: str, link: Link | None = None) -> Wire:
    """Connect to ``settings.nats_url``, retrying for at most ``CONNECT_TIMEOUT_S``.

    Raises UnavailableError when no server answered in that time.
    """
    link = link or Link()
    try:
        with anyio.fail_after(CONNECT_TIMEOUT_S):
            nc = Wire()
            await nc.connect(
                settings.nats_url,
                name=name,
                connect_timeout=2,
                reconnect_time_wait=settings.reconnect_max_s,
                max_reconnect_attempts=RECONNECT_ATTEMPTS,
                disconnected_cb=link.disconnected,
                reconnected_cb=link.reconnected,
                error_cb=_error_cb,
                drain_timeout=int(max(settings.drain_grace_s, 1)),
            )
    except (TimeoutError, OSError, nats.errors.Error) as exc:
        raise UnavailableError(f"cannot reach NATS at {settings.nats_url}") from exc
    link.connected = True
    return nc
