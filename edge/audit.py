"""One audit event per call on ``<prefix>.events.edge.audit``: who, what, outcome, latency.

Guarantee: recording never raises and never waits for JetStream's acknowledgement (a plain
publish that the events stream stores), so auditing adds no round trip to a call; a publish
that fails is logged as ``audit_failed`` and counted. The payload is never part of the event.
"""

from __future__ import annotations

import logging
import time

import msgspec
import nats.errors
from nats.aio.client import Client

from bus.schemas.edge import AuditEvent
from bus.subjects import Subjects

log = logging.getLogger("sophia.edge")
_encoder = msgspec.json.Encoder()


class Auditor:
    """Publishes audit events for one edge process."""

    def __init__(self, nc: Client, subjects: Subjects) -> None:
        self._nc = nc
        self.subject = subjects.event("edge", "audit")
        self.failed = 0

    async def record(
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
        """Publish one event; ``started`` is the call's ``time.perf_counter()`` at its start.

        ``code`` is the HTTP-style status; 499 means the client cancelled the call.
        """
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
        try:
            await self._nc.publish(self.subject, _encoder.encode(event))
        except (nats.errors.Error, OSError):
            self.failed += 1
            log.warning("audit_failed", extra={"service": service, "endpoint": endpoint})
