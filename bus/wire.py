"""nats-py's client with a shorter path for every message the bus publishes or handles itself.

nats-py moves each message through two extra event-loop hops: a publish only queues its bytes
and wakes a flusher task to write them, and a received message is queued for a per-
subscription task that then calls the callback. Measured here, that is about a third of a
request/reply round trip. :class:`Wire` keeps nats-py (its parser, reconnects, JetStream, KV)
and takes both hops out:

- what is published in one turn of the event loop is written in one call at the end of that
  turn, by a plain callback instead of a task woken through a queue. A burst still costs one
  write, and nats-server one wake-up (measured: writing each turn's first publish at once
  as well gave no faster stdio calls and cost nats-server 15% more CPU per call). While the
  connection is reconnecting, the socket is backed up, or a forced flush is asked for,
  nats-py's own path (buffering, its flusher, the flush timeout) runs instead;
- a subscription registered with :meth:`Wire.deliver_directly` has its messages handed to a
  plain function from the parser. The function returns ``False`` when it cannot take the
  message now (its handler pool is full), and the message then goes the ordinary way: queued
  for the subscription's callback, where it waits for room. While any message waits in that
  queue, later ones queue behind it, so none overtakes another.

Written against nats-py 2.16 (``pyproject.toml`` pins it): the overridden methods are private
to nats-py, so a new version needs this file checked against its ``_process_msg`` and
``_flush_pending``.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

from nats import errors
from nats.aio.client import Client
from nats.aio.msg import Msg
from nats.aio.subscription import Subscription

DirectHandler = Callable[[Msg], bool]


class Wire(Client):
    """A nats-py ``Client`` that writes without its flusher task and can deliver without a queue."""

    def __init__(self) -> None:
        super().__init__()
        self._direct: dict[int, DirectHandler] = {}
        self._turn_open = False  # a write is due at the end of this turn of the event loop

    def deliver_directly(self, sub: Subscription, handler: DirectHandler) -> None:
        """Hand ``sub``'s messages to ``handler`` as they are parsed, instead of its callback.

        ``handler`` must not block; it returns ``False`` to leave a message to the callback.
        """
        self._direct[sub._id] = handler

    async def _flush_pending(self, force_flush: bool = False) -> Any:
        if force_flush or not self.is_connected or self._backlogged():
            return await super()._flush_pending(force_flush)
        if not self._turn_open:
            self._turn_open = True
            asyncio.get_running_loop().call_soon(self._close_turn)
        done: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        done.set_result(None)
        return done

    def _close_turn(self) -> None:
        """Write, in one call, what this turn of the event loop published."""
        self._turn_open = False
        if self._pending_data_size > 0 and self.is_connected and self._transport is not None:
            self._transport.writelines(self._pending)
            self._pending = []
            self._pending_data_size = 0

    def _backlogged(self) -> bool:
        """True unless the socket takes writes at once (nats-py's flusher then waits for it)."""
        writer = getattr(self._transport, "_io_writer", None)  # None on websockets
        return writer is None or writer.transport.get_write_buffer_size() > 0

    async def _process_msg(
        self, sid: int, subject: bytes, reply: bytes, data: bytes, headers: bytes
    ) -> None:
        handler = self._direct.get(sid)
        if handler is None:
            return await super()._process_msg(sid, subject, reply, data, headers)
        sub = self._subs.get(sid)
        if sub is None:  # unsubscribed; sids are never reused
            del self._direct[sid]
            return None
        self.stats["in_msgs"] += 1
        self.stats["in_bytes"] += len(data)
        sub._received += 1
        msg = self._build_message(sid, subject, reply, data, await self._process_headers(headers))
        if not sub._pending_queue.qsize() and handler(msg):
            return None
        sub._pending_size += len(data)
        try:
            sub._pending_queue.put_nowait(msg)
        except asyncio.QueueFull:
            sub._pending_size -= len(data)
            await self._error_cb(
                errors.SlowConsumerError(subject=msg.subject, reply=msg.reply, sid=sid, sub=sub)
            )
        return None
