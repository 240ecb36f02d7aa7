"""Request/reply over one wildcard inbox per connection: the bus's hot path for every request.

nats-py's ``Client.request`` waits through ``asyncio.wait_for`` (one more future, timer and
callback chain per reply) and draws random bytes from the OS for every request token. Here a
reply resolves its request's future from the inbox subscription's callback, a timer bounds
the wait, and tokens are a counter: the inbox prefix is already unique to the connection (a
NUID). Public nats-py API only (``subscribe``, ``publish``, ``new_inbox``); measured in
``bench/bus.py`` (``client_rps_ratio``) against ``nc.request`` on the same connection.

Guarantee: :meth:`ReplyMux.request` returns the first message published to its own inbox or
raises — ``NoRespondersError`` (the server's 503 status), ``TimeoutError_`` when ``timeout``
passes, ``UnavailableError`` at once when :meth:`ReplyMux.fail_all` is called (the connection
dropped); a cancelled request leaves nothing behind, and a late reply is dropped.
"""

from __future__ import annotations

import asyncio

import nats.errors
from nats.aio.client import Client
from nats.aio.msg import Msg

from bus.errors import TimeoutError_, UnavailableError

STATUS_HEADER = "Status"
NO_RESPONDERS = "503"
PENDING_REPLIES = 65_536  # replies queued in the inbox before nats-py reports a slow consumer


def _expire(future: asyncio.Future[Msg], subject: str, timeout: float) -> None:
    if not future.done():
        future.set_exception(TimeoutError_(f"no reply on {subject} within {timeout:g}s"))


class ReplyMux:
    """Requests on one connection, their replies routed by token from one subscription."""

    def __init__(self, nc: Client) -> None:
        self._nc = nc
        self._prefix = ""
        self._subscribing: asyncio.Lock | None = None
        self._waiting: dict[str, asyncio.Future[Msg]] = {}
        self._next_token = 0

    def __len__(self) -> int:
        """Requests waiting for their reply."""
        return len(self._waiting)

    async def request(
        self, subject: str, payload: bytes, headers: dict[str, str] | None, timeout: float
    ) -> Msg:
        """Publish ``payload`` on ``subject`` and wait at most ``timeout`` seconds for the reply.

        Raises nats.errors.NoRespondersError, TimeoutError_, UnavailableError, and what
        ``Client.publish`` raises (MaxPayloadError, ConnectionClosedError, …).
        """
        if not self._prefix:
            await self._subscribe()
        token = str(self._next_token)
        self._next_token += 1
        loop = asyncio.get_running_loop()
        future: asyncio.Future[Msg] = loop.create_future()
        self._waiting[token] = future
        timer = loop.call_later(timeout, _expire, future, subject, timeout)
        try:
            await self._nc.publish(subject, payload, reply=self._prefix + token, headers=headers)
            msg = await future
        finally:
            timer.cancel()
            self._waiting.pop(token, None)
        if msg.headers and msg.headers.get(STATUS_HEADER) == NO_RESPONDERS and not msg.data:
            raise nats.errors.NoRespondersError
        return msg

    def fail_all(self) -> None:
        """Fail every waiting request with UnavailableError (the connection dropped)."""
        waiting, self._waiting = self._waiting, {}
        for future in waiting.values():
            if not future.done():
                future.set_exception(
                    UnavailableError("bus connection lost while waiting for a reply")
                )

    async def _subscribe(self) -> None:
        if self._subscribing is None:
            self._subscribing = asyncio.Lock()
        async with self._subscribing:
            if self._prefix:
                return
            prefix = self._nc.new_inbox() + "."
            await self._nc.subscribe(
                prefix + "*", cb=self._on_reply, pending_msgs_limit=PENDING_REPLIES
            )
            self._prefix = prefix

    async def _on_reply(self, msg: Msg) -> None:
        future = self._waiting.pop(msg.subject[len(self._prefix) :], None)
        if future is not None and not future.done():
            future.set_result(msg)
