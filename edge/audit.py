"""One audit event per call on ``<prefix>.events.edge.audit``: who, what, outcome, latency.

Guarantee: recording never raises and never waits: events are queued and published together
every :data:`FLUSH_S` (one write for many calls, so nats-server and the events stream take
them as one batch instead of one wake-up per call); what is queued when the edge stops is
published before its connection drains. At most :data:`MAX_PENDING` events wait; past that
new ones are dropped and counted (``dropped``), as are failed publishes (``failed``). The
payload is never part of an event.
"""

from __future__ import annotations

import logging
import time

import anyio
import msgspec
import nats.errors
from anyio.abc import TaskStatus
from nats.aio.client import Client

from bus.schemas.edge import AuditEvent
from bus.subjects import Subjects

log = logging.getLogger("sophia.edge")
_encoder = msgspec.json.Encoder()

FLUSH_S = 0.02
MAX_PENDING = 10_000


class Auditor:
    """Queues and publishes audit events for one edge process; :meth:`run` publishes."""

    def __init__(self, nc: Client, subjects: Subjects, flush_s: float = FLUSH_S) -> None:
        self._nc = nc
        self.subject = subjects.event("edge", "audit")
        self.flush_s = flush_s
        self.failed = 0
        self.dropped = 0
        self._pending: list[bytes] = []
        self._queued = anyio.Event()

    def record(
        self,
        *,
        principal: str,
        transport: str,
        service: str,
        endpoint: str,
        code: int,
        started: float,
        call_id: str = "",
        trace_id: str = "",
        request_bytes: int = 0,
    ) -> None:
        """Queue one event; ``started`` is the call's ``time.perf_counter()`` at its start.

        ``code`` is the HTTP-style status; 499 means the client cancelled the call.
        """
        if len(self._pending) >= MAX_PENDING:
            self.dropped += 1
            if self.dropped == 1 or self.dropped % MAX_PENDING == 0:
                log.warning("audit_dropped", extra={"dropped": self.dropped})
            return
        outcome = "cancelled" if code == 499 else ("ok" if code < 400 else "error")
        event = AuditEvent(
            at=time.time(),
            principal=principal,
            transport=transport,
            service=service,
            endpoint=endpoint,
            outcome=outcome,
            code=code,
            latency_ms=round((time.perf_counter() - started) * 1000, 3),
            call_id=call_id,
            trace_id=trace_id,
            request_bytes=request_bytes,
        )
        self._pending.append(_encoder.encode(event))
        self._queued.set()

    async def run(self, *, task_status: TaskStatus[None] = anyio.TASK_STATUS_IGNORED) -> None:
        """Publish queued events every ``flush_s`` until cancelled, then what is left."""
        task_status.started()
        try:
            while True:
                await self._queued.wait()
                await anyio.sleep(self.flush_s)
                await self.flush()
        finally:
            with anyio.move_on_after(2, shield=True):
                await self.flush()

    async def flush(self) -> None:
        """Publish every queued event now (they leave in the client's next write)."""
        pending, self._pending = self._pending, []
        self._queued = anyio.Event()
        for data in pending:
            try:
                await self._nc.publish(self.subject, data)
            except (nats.errors.Error, OSError):
                self.failed += 1
                log.warning("audit_failed", extra={"failed": self.failed})
