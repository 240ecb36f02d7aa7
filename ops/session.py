"""A CLI command's short NATS session: connect fast or fail, find running services.

Guarantees: :func:`open_bus` gives up after ``connect_timeout`` with an
UnavailableError that names the URL (passwords redacted), and a nats-py error raised in
its block leaves it as the SophiaError :func:`nats_failure` names, so no nats-py traceback
reaches a user; :func:`discover` collects every reply that arrives within its window,
never waits longer.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import TypeVar

import anyio
import msgspec
import nats
import nats.errors
import nats.js.errors
from nats.aio.client import Client

from bus import topology
from bus.client import Bus
from bus.config import Settings, redact_url
from bus.connection import credentials
from bus.errors import (
    InternalError,
    PayloadTooLargeError,
    RetryableError,
    SophiaError,
    TimeoutError_,
    UnauthorizedError,
    UnavailableError,
    error_from_code,
    first_of,
)
from bus.micro import PingResponse
from bus.subjects import srv
from ops.natsserver import port_open

T = TypeVar("T", bound=msgspec.Struct)

CONNECT_TIMEOUT_S = 2.0
DISCOVER_WINDOW_S = 0.5

_CONNECTION_LOST = (
    nats.errors.ConnectionClosedError,
    nats.errors.ConnectionDrainingError,
    nats.errors.ConnectionReconnectingError,
    nats.errors.StaleConnectionError,
    nats.errors.OutboundBufferLimitError,
    nats.errors.NoServersError,
)


@asynccontextmanager
async def open_bus(
    settings: Settings, connect_timeout: float = CONNECT_TIMEOUT_S
) -> AsyncIterator[Bus]:
    """A connected Bus for one command, drained on exit.

    Raises UnavailableError, UnauthorizedError (NATS refused the credentials), and for a
    nats-py error inside the block the SophiaError :func:`nats_failure` gives.
    """
    url = redact_url(settings.nats_url)
    nc = await _connect(settings, url, connect_timeout)
    try:
        yield Bus(nc, settings)
    except Exception as exc:
        failure = first_of(exc, nats.errors.Error)
        if failure is None:
            raise
        raise nats_failure(failure, url) from exc
    finally:
        with anyio.move_on_after(2, shield=True), contextlib.suppress(nats.errors.Error):
            await nc.drain()  # raises when the connection is already gone: nothing to drain
        if not nc.is_closed:
            await nc.close()


async def _connect(settings: Settings, url: str, connect_timeout: float) -> Client:
    failures: list[Exception] = []

    async def note_failure(exc: Exception) -> None:  # instead of nats-py's printed tracebacks
        failures.append(exc)

    try:
        with anyio.fail_after(connect_timeout + 1):
            return await nats.connect(
                settings.nats_url,
                name="sophia-cli",
                connect_timeout=connect_timeout,
                allow_reconnect=False,
                max_reconnect_attempts=1,  # one retry, then NoServersError (0 means forever)
                reconnect_time_wait=0.1,
                error_cb=note_failure,
                **credentials(settings),
            )
    except (TimeoutError, OSError, nats.errors.Error) as exc:
        cause = failures[-1] if failures else exc
        if any(_refused_credentials(f) for f in [*failures, exc]):
            raise UnauthorizedError(
                f"NATS at {url} refused the credentials; check SOPHIA_NATS_URL"
            ) from None
        reason = getattr(cause, "strerror", None) or type(cause).__name__
        raise UnavailableError(
            f"NATS is not reachable at {url} ({reason}); is the stack up? (`sophia up`)"
        ) from None


def _refused_credentials(exc: BaseException) -> bool:
    # nats-py 2.x raises a plain Error("nats: 'Authorization Violation'") while connecting
    # (its AuthorizationError only after): the server's words are all there is to go by.
    return isinstance(exc, nats.errors.AuthorizationError) or (
        isinstance(exc, nats.errors.Error) and "authorization violation" in str(exc).lower()
    )


def nats_failure(exc: nats.errors.Error, url: str) -> SophiaError:
    """The SophiaError a nats-py error met while talking to NATS at ``url`` stands for.

    ``url`` is shown as given, so pass it redacted. JetStream's own refusals keep their
    status (404 not found, 400 bad request…) and the server's reason.
    """
    if isinstance(exc, nats.js.errors.ServiceUnavailableError):
        return topology.jetstream_missing(url)
    if isinstance(exc, nats.js.errors.APIError):
        code = exc.code if exc.code and 400 <= exc.code < 600 else 500
        reason = exc.description or "no reason given"
        return error_from_code(code, f"JetStream refused the request: {reason}")
    if isinstance(exc, nats.errors.TimeoutError):
        return TimeoutError_(f"NATS at {url} did not answer in time")
    if isinstance(exc, nats.errors.NoRespondersError):
        return UnavailableError(f"nothing answers that request on NATS at {url}")
    if isinstance(exc, nats.errors.MaxPayloadError):
        return PayloadTooLargeError("message: over the bus's size limit")
    if isinstance(exc, _CONNECTION_LOST):
        return UnavailableError(f"lost the connection to NATS at {url}")
    return InternalError(f"NATS client error ({type(exc).__name__})")


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
        except RetryableError:  # NATS not up yet, or the connection dropped: try again
            await anyio.sleep(0.2)
    return waiting


async def _still_waiting(
    nc: Client, settings: Settings, waiting: set[str], edge: tuple[str, int] | None
) -> set[str]:
    left = await missing_agents(nc, settings, waiting - {"edge"})
    if "edge" in waiting and edge and not await anyio.to_thread.run_sync(port_open, *edge):
        left.add("edge")
    return left
