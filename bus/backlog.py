"""A service's backlog as metrics gauges: work in flight, consumer lag, DLQ depth.

Work in flight is read live from the consumer. Lag and DLQ depth live on the JetStream server,
so they are read every :data:`REFRESH_S` (each read bounded by :data:`READ_TIMEOUT_S`) and
cached; a scrape only reads the cache, so any number of scrapers cost the server one consumer
info and one stream info per interval per process. A failed read keeps the last value (the
gauge says what was last known rather than dropping out while the bus blinks).
"""

from __future__ import annotations

import logging

import anyio
import nats.errors
import nats.js.errors

from bus import metrics
from bus.client import Bus
from bus.errors import SophiaError
from bus.work import WorkConsumer

log = logging.getLogger("sophia.bus")

REFRESH_S = 5.0
READ_TIMEOUT_S = 2.0


class Backlog:
    """Feeds the backlog gauges of one service; :meth:`run` until cancelled, then :meth:`close`."""

    def __init__(self, bus: Bus, service: str, consumer: WorkConsumer) -> None:
        self.bus, self.service, self.consumer = bus, service, consumer
        self.lag: int | None = None
        self.ack_pending: int | None = None
        self.dlq_depth: int | None = None
        metrics.watch(metrics.WORK_IN_FLIGHT, service, lambda: consumer.in_flight)
        metrics.watch(metrics.CONSUMER_LAG, service, lambda: self.lag)
        metrics.watch(metrics.CONSUMER_ACK_PENDING, service, lambda: self.ack_pending)
        metrics.watch(metrics.DLQ_DEPTH, service, lambda: self.dlq_depth)

    async def run(self) -> None:
        """Refresh the cached values every REFRESH_S until cancelled."""
        while True:
            await self.refresh()
            await anyio.sleep(REFRESH_S)

    async def refresh(self) -> None:
        """Read lag and DLQ depth once (each bounded); on failure keep the last values."""
        subjects = self.bus.subjects
        try:
            with anyio.fail_after(READ_TIMEOUT_S):
                info = await self.bus.js.consumer_info(
                    subjects.work_stream, subjects.consumer(self.service), timeout=READ_TIMEOUT_S
                )
                self.lag, self.ack_pending = info.num_pending, info.num_ack_pending
                dlq = await self.bus.js.stream_info(
                    subjects.dlq_stream, subjects_filter=subjects.dlq(self.service)
                )
                self.dlq_depth = sum((dlq.state.subjects or {}).values())
        except (TimeoutError, nats.errors.Error, nats.js.errors.Error, SophiaError) as exc:
            log.debug("backlog_read_failed", extra={"service": self.service, "error": repr(exc)})

    def close(self) -> None:
        metrics.unwatch(self.service)
