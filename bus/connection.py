"""Connecting to NATS with bounded retries, and noticing when the link drops or ends.

``connect`` retries the first connection for a bounded time (the bus may still be starting).
After a disconnect nats-py reconnects through :func:`reconnect_delay`: the first attempt goes
out at once, later ones back off from 50 ms, doubling up to ``SOPHIA_RECONNECT_MAX_S``, for
at most :data:`RECONNECT_ATTEMPTS` attempts. ``Link`` tracks the state so in-flight requests
fail fast with 503 instead of hanging while the connection is down, and tells its owner when
nats-py has given the connection up for good (attempts exhausted, or the server refused it):
the process then ends, so its supervisor starts it afresh instead of leaving it deaf.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

import anyio
import nats.errors
from nats.aio.client import Client, Server

from bus.config import Settings
from bus.errors import UnavailableError
from bus.subjects import INBOX_PREFIX

log = logging.getLogger("sophia.bus")

CONNECT_TIMEOUT_S = 30.0
RECONNECT_ATTEMPTS = 1800  # with a wait of at most reconnect_max_s between them
RECONNECT_FIRST_S = 0.05  # the wait after the first failed reconnect attempt


class Link:
    """Connection state plus the callbacks to run when it changes."""

    def __init__(self) -> None:
        self.connected = False
        self.closing = False  # set before a deliberate drain, so its disconnect is not a warning
        self.closed = False  # nats-py gave the connection up (or it was closed on purpose)
        self._on_lost: set[Callable[[], None]] = set()
        self._on_back: set[Callable[[], None]] = set()
        self._on_closed: set[Callable[[], None]] = set()

    @property
    def state(self) -> str:
        """``connected``, ``reconnecting`` or ``closed``."""
        if self.closed:
            return "closed"
        return "connected" if self.connected else "reconnecting"

    def on_lost(self, cb: Callable[[], None]) -> Callable[[], None]:
        """Call ``cb`` when the connection drops; returns a function that unregisters it."""
        self._on_lost.add(cb)
        return lambda: self._on_lost.discard(cb)

    def on_back(self, cb: Callable[[], None]) -> None:
        """Call ``cb`` each time the connection is re-established."""
        self._on_back.add(cb)

    def on_closed(self, cb: Callable[[], None]) -> None:
        """Call ``cb`` once if the connection ends for good without :attr:`closing` set."""
        self._on_closed.add(cb)

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

    async def ended(self) -> None:
        """nats-py's ``closed_cb``: the client will not reconnect any more."""
        self.connected = False
        self.closed = True
        if self.closing:
            return
        log.error("nats_connection_closed")
        for cb in list(self._on_lost) + list(self._on_closed):
            cb()


def reconnect_delay(max_wait_s: float) -> Callable[[list[Server], dict[str, Any]], Any]:
    """nats-py's ``reconnect_to_server_handler``: the server tried least, and how long to wait.

    No wait before a server's first attempt; then 50 ms, doubling, capped at ``max_wait_s``.
    """

    def choose(servers: list[Server], info: dict[str, Any]) -> tuple[Server | None, float]:
        server = min(servers, key=lambda s: s.reconnects)
        if server.reconnects == 0:
            return server, 0.0
        return server, min(RECONNECT_FIRST_S * 2 ** (server.reconnects - 1), max_wait_s)

    return choose


def _errors(link: Link) -> Callable[[Exception], Any]:
    """nats-py's ``error_cb``: a warning while connected; while (re)connecting, each failed
    attempt is a debug line (the disconnect itself was the warning), so a bus that stays
    down does not fill the log."""

    async def error_cb(exc: Exception) -> None:
        level = logging.WARNING if link.connected else logging.DEBUG
        log.log(level, "nats_error", extra={"error": type(exc).__name__})

    return error_cb


def credentials(settings: Settings) -> dict[str, Any]:
    """nats-py options that present this process's own user (none when it has no user).

    Its inboxes get a prefix of their own, ``_INBOX.<user>.``, so the server can let a user
    subscribe to its own replies only (ops/nats/accounts.conf); they stay inboxes for
    :func:`bus.subjects.is_inbox`.
    """
    if not settings.nats_user:
        return {}
    return {
        "user": settings.nats_user,
        "password": settings.nats_password,
        "inbox_prefix": INBOX_PREFIX + settings.nats_user,
    }


async def connect(
    settings: Settings,
    name: str,
    link: Link | None = None,
    *,
    timeout_s: float = CONNECT_TIMEOUT_S,
) -> Client:
    """Connect to ``settings.nats_url`` (one URL or several, comma-separated), as
    ``settings.nats_user`` when set, retrying for at most ``timeout_s``.

    Raises UnavailableError when no server answered in that time.
    """
    link = link or Link()
    try:
        with anyio.fail_after(timeout_s):
            nc = Client()
            await nc.connect(
                [url.strip() for url in settings.nats_url.split(",")],
                name=name,
                connect_timeout=2,
                reconnect_time_wait=settings.reconnect_max_s,  # type: ignore[arg-type]
                max_reconnect_attempts=RECONNECT_ATTEMPTS,
                reconnect_to_server_handler=reconnect_delay(settings.reconnect_max_s),
                disconnected_cb=link.disconnected,
                reconnected_cb=link.reconnected,
                closed_cb=link.ended,
                error_cb=_errors(link),
                drain_timeout=int(max(settings.drain_grace_s, 1)),
                **credentials(settings),
            )
    except (TimeoutError, OSError, nats.errors.Error) as exc:
        raise UnavailableError(f"cannot reach NATS at {settings.safe_nats_url}") from exc
    link.connected = True
    return nc


async def close(nc: Client, link: Link, grace_s: float) -> None:
    """Drain ``nc`` (bounded by ``grace_s``), then close it; never raises, never warns."""
    link.closing = True
    with anyio.move_on_after(grace_s, shield=True):
        try:
            if nc.is_connected:
                await nc.drain()
        except nats.errors.Error:
            pass
    if not nc.is_closed:
        with anyio.CancelScope(shield=True):
            await nc.close()
