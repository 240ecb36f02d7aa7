"""Durable work: a continuous pull consumer with bounded in-flight work and dead letters.

Guarantees, per delivered item: it is acked only after its handler returned; a
retryable failure (a RetryableError, or an unexpected exception) is nak'ed with capped
exponential backoff; bad input (it does not decode, or the handler raised any other
SophiaError) and the last allowed delivery are copied to the DLQ stream, then terminated.
A dead letter always fits the bus: an item too large to be copied whole keeps as much of its
payload as fits and says so (``truncated``, ``payload_bytes``), so nothing is stranded. Never
more than ``max_in_flight`` items are being handled by one process: pull requests ask only
for the free slots (backpressure lives on the server, not in a local buffer). An item whose
handler runs longer than a third of ``ack_wait_s`` is told to the server as still in progress
(``+WPI``) about every third of it, so a long step (a coder's model calls) is never
redelivered while its handler lives, and is redelivered ``ack_wait_s`` after its process died.

A watchdog bounds that extension: a handler still running ``deadline_s`` after it started is
given up on — logged (``work_deadline_exceeded``), no longer reported in progress, cancelled,
and its item nak'ed for another delivery (dead-lettered if it was the last allowed one). A
handler that ignores the cancellation keeps its slot, so its process asks for less work, and
whatever it does later is neither acked nor nak'ed: the item is no longer its own.

After a dead letter is written, ``on_dead_letter`` (the agent's ``work_dead_lettered``) is
called with the decoded item, the DLQ's error and code, so whoever waits on the item's outcome
can be told; it runs in a task of its own, bounded by ``hook_timeout_s``, and what it raises is
logged and swallowed: the consumer never waits for it. An item that does not decode (bad
input) has nothing to tell, and skips it.
"""

from __future__ import annotations

import base64
import json
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

import anyio
import nats.errors
from msgspec.structs import replace as msgspec_replace
from nats.aio.msg import Msg
from nats.aio.subscription import Subscription
from opentelemetry.trace import SpanKind, Status, StatusCode

from bus import codec, context, metrics, tracing, wire
from bus.client import MSG_ID_HEADER, Bus
from bus.errors import RetryableError, SophiaError, describe
from bus.handlers import WorkHandler
from bus.schemas.common import DeadLetter
from bus.tasks import TaskSet

log = logging.getLogger("sophia.bus")

PULL_EXPIRES_S = 5.0
NAK_BASE_S = 0.5
NAK_MAX_S = 30.0
STATUS = "Status"
PENDING_MESSAGES = "Nats-Pending-Messages"
HOOK_TIMEOUT_S = 30.0
MAX_HOOKS = 64  # dead-letter hooks running at once; past it a dead letter is only logged

#: called after a dead letter was written: the decoded item, the DLQ's error text and code
DeadLetterHook = Callable[[Any, str, int], Awaitable[None]]


def backoff(delivery: int) -> float:
    """Nak delay after the ``delivery``-th failed attempt: 0.5 s doubling, at most 30 s."""
    return min(NAK_BASE_S * 2 ** max(delivery - 1, 0), NAK_MAX_S)


@dataclass(slots=True)
class Handling:
    """One item being handled: when it started, its last sign of life, its cancel scope."""

    msg: Msg
    started: float
    seen: float
    scope: anyio.CancelScope = field(default_factory=anyio.CancelScope)
    expired: bool = False  # the watchdog gave it up: the item is no longer this handler's


def _describe(exc: BaseException) -> tuple[str, int, bool]:
    """(text, code, retryable) for a failed work item: bad input and refusals are final."""
    code, text = describe(exc)
    if code == 500 and not isinstance(exc, SophiaError):
        text = f"internal error ({type(exc).__name__})"  # its message may hold anything
    retryable = isinstance(exc, RetryableError) or (
        not isinstance(exc, SophiaError) and code == 500
    )
    return text, code, retryable


class WorkConsumer:
    """Pulls ``<prefix>.work.<service>`` and runs ``handler`` for each item."""

    def __init__(
        self,
        bus: Bus,
        service: str,
        item_type: Any,
        handler: WorkHandler,
        *,
        max_in_flight: int,
        batch: int,
        max_deliver: int,
        ack_wait_s: float = 30.0,
        deadline_s: float = 3600.0,
        on_dead_letter: DeadLetterHook | None = None,
        hook_timeout_s: float = HOOK_TIMEOUT_S,
    ) -> None:
        self.bus = bus
        self.on_dead_letter = on_dead_letter
        self.hook_timeout_s = hook_timeout_s
        self.heartbeat_s = ack_wait_s / 3
        self.deadline_s = deadline_s
        self.service = service
        self.item_type = item_type
        self.handler = handler
        self.max_in_flight = max_in_flight
        self.batch = batch
        self.max_deliver = max_deliver
        self.in_flight = 0
        self.peak_in_flight = 0
        self.acked = 0
        self.failed = 0
        self.dead_lettered = 0
        self.expired = 0
        self._outstanding = 0  # credits asked for and not yet delivered or expired
        self._last_pull = 0.0
        self._stopping = False
        self._wake = anyio.Event()
        self._tasks = TaskSet(max_in_flight)
        self._hooks = TaskSet(MAX_HOOKS)
        self._handling: dict[int, Handling] = {}  # by id(msg)
        self._running = False
        self._sub: Subscription | None = None
        self._inbox = ""
        subjects = bus.subjects
        self._next_subject = subjects.pull_next(service)
        self._work_subject = subjects.work(service)
        self._dlq_subject = subjects.dlq(service)

    async def run(self) -> None:
        """Pull until :meth:`stop`; each delivered item is handled in a task of its own."""
        self._running = True
        self._inbox = self.bus.nc.new_inbox()
        self._sub = await self.bus.nc.subscribe(self._inbox, cb=self._on_message)
        try:
            while not self._stopping:
                await self._top_up()
                self._wake = anyio.Event()
                tick = min(PULL_EXPIRES_S / 2, self.heartbeat_s, self.deadline_s / 4)
                with anyio.move_on_after(tick):
                    await self._wake.wait()
                await self._tend()
        finally:
            self._stopping = True

    def reset_pulls(self) -> None:
        """Forget outstanding pulls (after a reconnect the server may have dropped them)."""
        self._outstanding = 0
        self._wake.set()

    def stop(self) -> None:
        """Stop asking for work; items already delivered are still handled."""
        self._stopping = True
        self._wake.set()

    async def wait_idle(self) -> None:
        await self._tasks.wait_idle()
        await self._hooks.wait_idle()

    async def cancel_all(self) -> None:
        """Cancel handlers still running: their items are nak'ed for prompt redelivery."""
        await self._tasks.cancel_all()
        await self._hooks.cancel_all()

    async def close(self) -> None:
        if self._sub is not None:
            await self._sub.unsubscribe()
            self._sub = None

    async def _tend(self) -> None:
        """Give up on handlers past ``deadline_s``; tell the server that the others handled
        for longer than ``heartbeat_s`` are alive."""
        now = time.monotonic()
        for handling in list(self._handling.values()):
            if handling.expired:
                continue
            if now - handling.started >= self.deadline_s:
                await self._expire(handling)
                continue
            if now - handling.seen < self.heartbeat_s:
                continue
            handling.seen = now
            try:
                await handling.msg.in_progress()
            except nats.errors.Error:  # the connection is down: redelivery covers it
                log.debug("work_heartbeat_failed", extra={"service": self.service})

    async def _expire(self, handling: Handling) -> None:
        """The watchdog: stop extending ``handling``, cancel it, let its item go elsewhere."""
        handling.expired = True
        handling.scope.cancel()
        msg = handling.msg
        delivery = msg.metadata.num_delivered
        self.expired += 1
        extra = {"service": self.service, "delivery": delivery, "deadline_s": self.deadline_s}
        log.warning("work_deadline_exceeded", extra=extra)
        metrics.work_items.add(1, {"service": self.service, "outcome": "expired"})
        try:
            if delivery < self.max_deliver:
                await msg.nak(delay=backoff(delivery))
            else:
                text = f"handler ran past the work deadline of {self.deadline_s:g} s"
                await self._dead_letter(msg, text, 408)
        except nats.errors.Error:  # the connection is down: ack_wait redelivers it
            log.debug("work_expire_failed", extra={"service": self.service})

    async def _top_up(self) -> None:
        now = time.monotonic()
        if self._outstanding and now > self._last_pull + PULL_EXPIRES_S + 1.0:
            self._outstanding = 0  # every earlier pull has expired; its 408 was lost
        free = self.max_in_flight - self.in_flight - self._outstanding
        if free < min(self.batch, self.max_in_flight) / 2 and self._outstanding:
            return
        if free <= 0 or not self.bus.link or not self.bus.link.connected:
            return
        ask = min(free, self.batch)
        request = {"batch": ask, "expires": int(PULL_EXPIRES_S * 1e9)}
        self._outstanding += ask
        self._last_pull = now
        await self.bus.nc.publish(self._next_subject, json.dumps(request).encode(), self._inbox)

    async def _on_message(self, msg: Msg) -> None:
        headers = msg.headers
        if headers and STATUS in headers and not msg.data:
            self._on_status(headers)
            return
        self._outstanding = max(self._outstanding - 1, 0)
        if self._stopping or not self._running:
            await msg.nak()
            return
        self.in_flight += 1
        self.peak_in_flight = max(self.peak_in_flight, self.in_flight)
        self._tasks.start(self._handle(msg))

    def _on_status(self, headers: dict[str, str]) -> None:
        status = headers[STATUS]
        if status in ("408", "409"):
            # An expired or refused pull: its undelivered credits come back.
            pending = headers.get(PENDING_MESSAGES)
            if pending and pending.isdigit():
                self._outstanding = max(self._outstanding - int(pending), 0)
            else:
                self._outstanding = 0
            self._wake.set()

    async def _handle(self, msg: Msg) -> None:
        now = time.monotonic()
        handling = Handling(msg, started=now, seen=now)
        self._handling[id(msg)] = handling
        try:
            with handling.scope:
                await self._process(handling)
        finally:
            del self._handling[id(msg)]
            self.in_flight -= 1
            self._wake.set()

    async def _process(self, handling: Handling) -> None:
        msg = handling.msg
        meta = msg.metadata
        delivery = meta.num_delivered
        with tracing.message_span(
            self._work_subject,
            msg.headers,
            kind=SpanKind.CONSUMER,
            operation="process",
            attributes={
                "messaging.consumer.group.name": self.service,
                "messaging.message.id": (msg.headers or {}).get(MSG_ID_HEADER, ""),
                "messaging.message.body.size": len(msg.data),
                "messaging.nats.delivery_count": delivery,
            },
        ) as span:
            if delivery > self.max_deliver:
                await self._dead_letter(msg, "delivery limit reached: the last attempt died", 500)
                return
            try:
                item = codec.decode(msg.data, self.item_type, codec.is_msgpack(msg.headers))
                with context.handling(msg.headers):
                    await self.handler(item)
            except anyio.get_cancelled_exc_class():
                if not handling.expired:
                    with anyio.move_on_after(2, shield=True):
                        await msg.nak()
                raise
            except Exception as exc:
                if handling.expired:
                    log.warning("work_failed_after_deadline", extra={"service": self.service})
                    return
                text, code, retryable = _describe(exc)
                span.set_status(Status(StatusCode.ERROR, text))
                self.failed += 1
                if not isinstance(exc, SophiaError):
                    log.exception("work_failed", extra={"service": self.service})
                else:
                    log.warning("work_failed", extra={"service": self.service, "code": code})
                if retryable and delivery < self.max_deliver:
                    await msg.nak(delay=backoff(delivery))
                    metrics.work_items.add(1, {"service": self.service, "outcome": "retried"})
                else:
                    await self._dead_letter(msg, text, code)
                return
            if handling.expired:  # it returned after all, late: its item went elsewhere
                log.warning("work_done_after_deadline", extra={"service": self.service})
                return
            await msg.ack()
            self.acked += 1
            metrics.work_items.add(1, {"service": self.service, "outcome": "acked"})

    async def _dead_letter(self, msg: Msg, error: str, code: int) -> None:
        """Copy ``msg`` to the DLQ with its error, then terminate it (in that order)."""
        meta = msg.metadata
        dedupe = {MSG_ID_HEADER: f"dlq-{meta.stream}-{meta.sequence.stream}"}
        letter = DeadLetter(
            service=self.service,
            subject=msg.subject,
            headers=dict(msg.headers or {}),
            payload="",
            encoding="utf-8",
            deliveries=meta.num_delivered,
            error=error,
            code=code,
            stream_seq=meta.sequence.stream,
            failed_at=time.time(),
            payload_bytes=len(msg.data),
        )
        body = fitted(letter, msg.data, wire.room(self.bus.nc, dedupe))
        await self.bus.js.publish(self._dlq_subject, body, headers=dedupe)
        await msg.term()
        self.dead_lettered += 1
        metrics.work_items.add(1, {"service": self.service, "outcome": "dead_lettered"})
        log.warning("work_dead_lettered", extra={"service": self.service, "code": code})
        self._tell_dead_letter(msg, error, code)

    def _tell_dead_letter(self, msg: Msg, error: str, code: int) -> None:
        """Start ``on_dead_letter`` for ``msg``'s item, unless it does not decode."""
        if self.on_dead_letter is None:
            return
        try:
            item = codec.decode(msg.data, self.item_type, codec.is_msgpack(msg.headers))
        except Exception:  # bad input: nobody waits on an item that never decoded
            return
        if not self._hooks.has_room():
            log.warning("work_dead_letter_hook_skipped", extra={"service": self.service})
            return
        self._hooks.start(self._run_hook(self.on_dead_letter, item, error, code, msg.headers))

    async def _run_hook(
        self,
        hook: DeadLetterHook,
        item: Any,
        error: str,
        code: int,
        headers: dict[str, str] | None,
    ) -> None:
        try:
            with anyio.fail_after(self.hook_timeout_s), context.handling(headers):
                await hook(item, error, code)
        except Exception:
            log.exception("work_dead_letter_hook_failed", extra={"service": self.service})


def _payload_text(data: bytes) -> tuple[str, str]:
    try:
        return data.decode(), "utf-8"
    except UnicodeDecodeError:
        return base64.b64encode(data).decode(), "base64"


def fitted(letter: DeadLetter, data: bytes, room: int) -> bytes:
    """``letter`` with ``data`` as its payload, encoded within ``room`` bytes.

    When the whole letter does not fit, its headers are dropped and its payload is cut from the
    end (kept as base64), and it says so: ``truncated`` true, ``payload_bytes`` the original
    size.
    """
    payload, encoding = _payload_text(data)
    whole = codec.encode(msgspec_replace(letter, payload=payload, encoding=encoding))
    if len(whole) <= room:
        return whole
    bare = msgspec_replace(letter, payload="", encoding="base64", truncated=True, headers={})
    spare = room - len(codec.encode(bare)) - 64  # JSON escaping never grows base64
    keep = max(spare // 4 * 3, 0)
    cut = base64.b64encode(data[:keep]).decode()
    return codec.encode(msgspec_replace(bare, payload=cut))
