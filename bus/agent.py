"""The ``Agent`` base: one NATS micro service per agent, endpoints and durable work.

A subclass declares endpoints with ``@endpoint`` and at most one ``@work``
handler, and loads settings of its own in ``__init__`` (so a bad value stops the process
before it connects). ``run()`` connects, makes sure the streams exist, registers the service
(``$SRV.PING|INFO|STATS``), serves, and on :meth:`stop` shuts down gracefully:
stop announcing and pulling, let in-flight work finish within the grace period,
nak what is left, drain the connection. When nats-py gives the connection up for good, the
agent shuts down the same way and ``run()`` raises UnavailableError, so the process exits and
its supervisor starts it afresh.

A reply never exceeds the server's ``max_payload``: one that would is answered with a 413
naming the limit instead, and error texts are bounded and never quote the request.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Awaitable, Callable
from typing import Any, ClassVar

import anyio
import nats.errors
from anyio.abc import TaskGroup, TaskStatus
from nats.aio.client import Client
from nats.aio.msg import Msg
from nats.aio.subscription import Subscription
from opentelemetry.trace import SpanKind, Status, StatusCode

from bus import codec, connection, context, metrics, topology, tracing, wire
from bus.backlog import Backlog
from bus.client import Bus, service_error
from bus.config import Settings, load
from bus.connection import Link, connect
from bus.errors import UnavailableError, describe
from bus.handlers import EndpointHandler, EndpointSpec, WorkSpec, collect, endpoint
from bus.micro import EndpointStats, ServiceIdentity
from bus.schemas.common import Empty, Health
from bus.tasks import TaskSet
from bus.work import WorkConsumer

log = logging.getLogger("sophia.bus")

PENDING_MSGS_LIMIT = 65_536
ENDPOINT_CONCURRENCY = 256


class Agent:
    """Base class of every Sophia agent; see the module docstring for the lifecycle."""

    name: ClassVar[str]
    description: ClassVar[str] = ""
    _endpoints: ClassVar[dict[str, EndpointSpec]]
    _work: ClassVar[WorkSpec | None]

    def __init_subclass__(cls, name: str | None = None, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        if name is not None:
            cls.name = name
        if not getattr(cls, "name", None):
            raise TypeError(f"{cls.__name__}: declare it as `class X(Agent, name=...)`")
        cls.description = cls.description or (cls.__doc__ or "").strip().split("\n")[0]
        cls._endpoints, cls._work = collect(cls)

    def __init__(self, settings: Settings | None = None) -> None:
        self.settings = settings or load(Settings)
        self._identity = ServiceIdentity.of_this_process(
            self.name, self.description, self.settings.prefix
        )
        self.id = self._identity.id
        self.link = Link()
        self._bus: Bus | None = None
        self._stop = anyio.Event()
        self._started_at = time.monotonic()
        self._subs: list[Subscription] = []
        self._srv_subs: list[Subscription] = []
        self._consumer: WorkConsumer | None = None
        self._backlog: Backlog | None = None
        self._requests = TaskSet(ENDPOINT_CONCURRENCY)
        self._lost = False  # nats-py gave the connection up
        self.link.on_closed(self._connection_ended)

    # ---- hooks for subclasses -------------------------------------------------------------

    async def setup(self) -> None:
        """Open what the agent needs (stores, clients) before it takes requests."""

    async def teardown(self) -> None:
        """Close what :meth:`setup` opened; runs after in-flight work has finished."""

    async def health_details(self) -> dict[str, str]:
        """Extra ``details`` for the health reply (e.g. a backend's state)."""
        return {}

    async def work_dead_lettered(self, item: Any, error: str, code: int) -> None:
        """The ``@work`` item ``item`` went to the DLQ with ``error`` and ``code``: tell
        whoever waits on its outcome. Runs in a task of its own, bounded; what it raises is
        logged. Not called for an item that does not decode."""

    # ---- public API ------------------------------------------------------------------------

    @property
    def bus(self) -> Bus:
        if self._bus is None:
            raise UnavailableError(f"{self.name} agent is not running")
        return self._bus

    @property
    def nc(self) -> Client:
        return self.bus.nc

    def stop(self) -> None:
        """Ask :meth:`run` to shut down gracefully; safe to call from a signal handler task."""
        self._stop.set()

    @property
    def stopping(self) -> bool:
        """Whether :meth:`stop` was called (a second signal then cancels at once)."""
        return self._stop.is_set()

    def _connection_ended(self) -> None:
        self._lost = True
        self.stop()

    async def run(self, *, task_status: TaskStatus[Agent] = anyio.TASK_STATUS_IGNORED) -> None:
        """Serve until :meth:`stop`, then shut down gracefully; reports ``started()`` once ready.

        Raises UnavailableError when NATS cannot be reached at start.
        """
        tracing.configure(self.name, self.settings)
        metrics.configure(self.settings, self.name)
        nc = await connect(self.settings, f"sophia-{self.name}", self.link)
        self._bus = Bus(nc, self.settings, self.link)
        try:
            await topology.ensure_streams(self.bus.js, self.settings)
            await self.setup()
            async with anyio.create_task_group() as tg:
                await self._serve(tg)
                task_status.started(self)
                log.info("agent_started", extra={"agent": self.name, "id": self.id})
                await self._stop.wait()
                await self._drain_work()
                tg.cancel_scope.cancel()
        finally:
            with anyio.CancelScope(shield=True):
                await self._close(nc)
        if self._lost:
            raise UnavailableError("the bus connection ended and could not be re-established")

    # ---- serving ---------------------------------------------------------------------------

    async def _serve(self, tg: TaskGroup) -> None:
        subjects = self.bus.subjects
        for spec in self._endpoints.values():
            stats = EndpointStats(
                name=spec.name,
                subject=subjects.endpoint(self.name, spec.subject_tail),
                queue_group=self.name,
                metadata=spec.metadata(),
            )
            self._identity.endpoints.append(stats)
            handler = getattr(self, spec.method)
            sub = await self.nc.subscribe(
                stats.subject,
                queue=self.name,
                cb=self._dispatcher(spec, stats, handler),
                pending_msgs_limit=PENDING_MSGS_LIMIT,
            )
            self._subs.append(sub)
        if self._work is not None:
            await topology.ensure_consumer(self.bus.js, self.settings, self.name)
            self._consumer = WorkConsumer(
                self.bus,
                self.name,
                self._work.item_type,
                getattr(self, self._work.method),
                max_in_flight=self.settings.work_max_inflight,
                batch=self.settings.work_batch,
                max_deliver=self.settings.work_max_deliver,
                ack_wait_s=self.settings.work_ack_wait_s,
                deadline_s=self.settings.work_deadline_s,
                on_dead_letter=self.work_dead_lettered,
            )
            self.link.on_back(self._consumer.reset_pulls)
            tg.start_soon(self._consumer.run)
            self._backlog = Backlog(self.bus, self.name, self._consumer)
            tg.start_soon(self._backlog.run)
        self._srv_subs = await self._identity.answer(self.nc)
        try:
            await self.nc.flush()
        except nats.errors.Error:
            if not self._lost:
                raise
            # the connection ended while the agent started: run() stops and says so

    def _dispatcher(
        self, spec: EndpointSpec, stats: EndpointStats, handler: EndpointHandler
    ) -> Callable[[Msg], Awaitable[None]]:
        async def dispatch(msg: Msg) -> None:
            await self._requests.spawn(self._handle(spec, stats, handler, msg))

        return dispatch

    async def _handle(
        self, spec: EndpointSpec, stats: EndpointStats, handler: EndpointHandler, msg: Msg
    ) -> None:
        started = time.perf_counter_ns()
        failure = await self._respond(spec, handler, msg)
        stats.record(started, failure[1] if failure else None)
        code = str(failure[0]) if failure else "ok"
        labels = {"service": self.name, "endpoint": spec.name, "code": code}
        metrics.request_duration.record((time.perf_counter_ns() - started) / 1e9, labels)

    async def _respond(
        self, spec: EndpointSpec, handler: EndpointHandler, msg: Msg
    ) -> tuple[int, str] | None:
        """Run one request through ``handler`` and reply; returns the error code and text, if
        any."""
        msgpack = codec.is_msgpack(msg.headers)
        with tracing.message_span(
            msg.subject,
            msg.headers,
            kind=SpanKind.SERVER,
            operation="process",
            attributes={
                "messaging.consumer.group.name": self.name,
                "messaging.message.body.size": len(msg.data),
                "rpc.method": spec.name,
            },
        ) as span:
            headers = {codec.CONTENT_TYPE: codec.MSGPACK} if msgpack else None
            try:
                request = codec.decode(msg.data, spec.request_type, msgpack)
                with context.handling(msg.headers):
                    reply = await handler(request)
                payload = codec.encode(reply, msgpack)
                wire.check(self.nc, payload, headers, what="reply")
            except Exception as exc:
                code, text = describe(exc)
                if code == 500:
                    log.exception("endpoint_failed", extra={"endpoint": msg.subject})
            else:
                if msg.reply:
                    await self.nc.publish(msg.reply, payload, headers=headers)
                return None
            span.set_status(Status(StatusCode.ERROR, text))
            span.set_attribute("error.type", str(code))
            if msg.reply:
                body, error_headers = service_error(code, text)
                await self.nc.publish(msg.reply, body, headers=error_headers)
            return code, text

    # ---- shutdown --------------------------------------------------------------------------

    async def _drain_work(self) -> None:
        """Stop taking work, then wait (at most the grace period) for in-flight handlers."""
        for sub in self._srv_subs:
            await _quietly(sub.unsubscribe())
        self._srv_subs.clear()
        if self._consumer is not None:
            self._consumer.stop()
        for sub in self._subs:
            await _quietly(sub.drain())
        self._subs.clear()
        with anyio.move_on_after(self.settings.drain_grace_s):
            await self._requests.wait_idle()
            if self._consumer is not None:
                await self._consumer.wait_idle()
        if len(self._requests) or (self._consumer and self._consumer.in_flight):
            log.warning("agent_grace_expired", extra={"agent": self.name})
        await self._requests.cancel_all()
        if self._consumer is not None:
            await self._consumer.cancel_all()

    async def _close(self, nc: Client) -> None:
        with anyio.move_on_after(self.settings.drain_grace_s):
            await self.teardown()
        if self._backlog is not None:
            self._backlog.close()
        if self._consumer is not None:
            with anyio.move_on_after(2):
                await _quietly(self._consumer.close())
        await connection.close(nc, self.link, self.settings.drain_grace_s + 2)
        tracing.shutdown()
        log.info("agent_stopped", extra={"agent": self.name, "id": self.id})

    # ---- built-in endpoints ----------------------------------------------------------------

    @endpoint
    async def health(self, req: Empty) -> Health:
        """Report this instance's live state: NATS round trip, work in flight, lag, uptime."""
        rtt = await self.bus.rtt_ms()
        lag = ack_pending = None
        if self._consumer is not None:
            info = await self.bus.js.consumer_info(
                self.bus.subjects.work_stream, self.bus.subjects.consumer(self.name)
            )
            lag, ack_pending = info.num_pending, info.num_ack_pending
        requests = sum(e.num_requests for e in self._identity.endpoints)
        errors = sum(e.num_errors for e in self._identity.endpoints)
        return Health(
            service=self.name,
            id=self.id,
            version=self._identity.version,
            status="ok" if self.link.connected else "degraded",
            uptime_s=round(time.monotonic() - self._started_at, 3),
            nats_rtt_ms=round(rtt, 3),
            nats_connected=self.link.connected,
            work_in_flight=self._consumer.in_flight if self._consumer else 0,
            work_max_in_flight=self.settings.work_max_inflight if self._consumer else 0,
            consumer_lag=lag,
            consumer_ack_pending=ack_pending,
            requests=requests,
            errors=errors,
            details=await self.health_details(),
        )


async def _quietly(step: Awaitable[None]) -> None:
    """Run one shutdown step; a connection that is already gone has nothing left to undo."""
    try:
        await step
    except nats.errors.Error:
        pass
