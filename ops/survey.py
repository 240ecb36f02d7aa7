"""What ``sophia status`` reports: services, streams, consumer lag, dead letters, the stack.

Guarantee: one survey takes at most the discovery window plus a few bounded
JetStream requests; a stream that does not exist is reported as missing, never
as an error.
"""

from __future__ import annotations

from datetime import UTC, datetime

import anyio
import msgspec
import nats.js.errors
from nats.js import JetStreamContext

from bus.client import Bus
from bus.config import redact_url
from bus.micro import InfoResponse, PingResponse, StatsResponse
from bus.subjects import Subjects, srv
from ops.session import discover
from ops.stack import Layout, StackState, read_pid, read_state

JS_TIMEOUT_S = 3.0


class EndpointStatus(msgspec.Struct, kw_only=True):
    name: str
    subject: str
    requests: int = 0
    errors: int = 0
    last_error: str = ""
    average_ms: float = 0.0


class ServiceStatus(msgspec.Struct, kw_only=True):
    """One running agent instance, as ``nats micro info`` and ``stats`` show it."""

    name: str
    id: str
    version: str
    description: str = ""
    started: str | None = None
    uptime_s: float | None = None
    pid: int | None = None
    host: str | None = None
    requests: int = 0
    errors: int = 0
    endpoints: list[EndpointStatus] = msgspec.field(default_factory=list)


class StreamStatus(msgspec.Struct, kw_only=True):
    name: str
    exists: bool
    messages: int = 0
    bytes: int = 0
    first_seq: int = 0
    last_seq: int = 0
    consumers: int = 0


class ConsumerStatus(msgspec.Struct, kw_only=True):
    stream: str
    name: str
    num_pending: int
    ack_pending: int
    redelivered: int
    waiting: int


class DlqStatus(msgspec.Struct, kw_only=True):
    stream: str
    messages: int
    by_service: dict[str, int]


class NatsStatus(msgspec.Struct, kw_only=True):
    url: str
    server_version: str
    rtt_ms: float


class Report(msgspec.Struct, kw_only=True):
    """Everything ``sophia status --json`` prints."""

    prefix: str
    nats: NatsStatus
    services: list[ServiceStatus]
    streams: list[StreamStatus]
    consumers: list[ConsumerStatus]
    dlq: DlqStatus
    stack: StackState | None = None


async def survey(bus: Bus, layout: Layout, window: float) -> Report:
    """Gather one report over ``bus``. Raises UnavailableError when NATS stops answering."""
    settings, subjects = bus.settings, bus.subjects
    js = bus.nc.jetstream(timeout=JS_TIMEOUT_S)
    found: dict[str, list[msgspec.Struct]] = {}

    async def gather(verb: str, reply_type: type[msgspec.Struct]) -> None:
        found[verb] = await discover(bus.nc, srv(verb), reply_type, window)

    async with anyio.create_task_group() as tg:
        tg.start_soon(gather, "PING", PingResponse)
        tg.start_soon(gather, "INFO", InfoResponse)
        tg.start_soon(gather, "STATS", StatsResponse)
    services = _services(found, settings.prefix)
    streams = [await _stream(js, name) for name in _stream_names(subjects)]
    consumers = [c for s in streams if s.exists for c in await _consumers(js, s.name)]
    return Report(
        prefix=settings.prefix,
        nats=NatsStatus(
            url=redact_url(settings.nats_url),
            server_version=_server_version(bus),
            rtt_ms=round(await bus.rtt_ms(), 3),
        ),
        services=services,
        streams=streams,
        consumers=consumers,
        dlq=await _dlq(js, subjects),
        stack=read_state(layout) if read_pid(layout) is not None else None,
    )


def _server_version(bus: Bus) -> str:
    version = bus.nc.connected_server_version
    try:
        return f"{version.major}.{version.minor}.{version.patch}"
    except ValueError:
        return "unknown"


def _stream_names(subjects: Subjects) -> list[str]:
    return [subjects.work_stream, subjects.events_stream, subjects.dlq_stream]


def _services(found: dict[str, list[msgspec.Struct]], prefix: str) -> list[ServiceStatus]:
    """One entry per instance answering PING, filled in from its INFO and STATS replies."""
    infos = {r.id: r for r in found["INFO"] if isinstance(r, InfoResponse)}
    stats = {r.id: r for r in found["STATS"] if isinstance(r, StatsResponse)}
    services = []
    for ping in found["PING"]:
        if not isinstance(ping, PingResponse) or ping.metadata.get("prefix") != prefix:
            continue
        service = ServiceStatus(name=ping.name, id=ping.id, version=ping.version)
        meta = ping.metadata
        service.host = meta.get("host")
        service.pid = int(meta["pid"]) if meta.get("pid", "").isdigit() else None
        if ping.id in infos:
            service.description = infos[ping.id].description
        if ping.id in stats:
            _add_stats(service, stats[ping.id])
        services.append(service)
    return sorted(services, key=lambda s: (s.name, s.id))


def _add_stats(service: ServiceStatus, stats: StatsResponse) -> None:
    service.started = stats.started
    try:
        started = datetime.fromisoformat(stats.started.replace("Z", "+00:00"))
    except ValueError:
        started = None
    if started is not None:
        if started.tzinfo is None:  # another implementation's service may leave it out
            started = started.replace(tzinfo=UTC)
        service.uptime_s = round((datetime.now(UTC) - started).total_seconds(), 1)
    for e in stats.endpoints:
        service.endpoints.append(
            EndpointStatus(
                name=e.name,
                subject=e.subject,
                requests=e.num_requests,
                errors=e.num_errors,
                last_error=e.last_error,
                average_ms=round(e.average_processing_time / 1e6, 3),
            )
        )
    service.requests = sum(e.requests for e in service.endpoints)
    service.errors = sum(e.errors for e in service.endpoints)


async def _stream(js: JetStreamContext, name: str) -> StreamStatus:
    try:
        info = await js.stream_info(name)
    except nats.js.errors.NotFoundError:
        return StreamStatus(name=name, exists=False)
    state = info.state
    return StreamStatus(
        name=name,
        exists=True,
        messages=state.messages,
        bytes=state.bytes,
        first_seq=state.first_seq,
        last_seq=state.last_seq,
        consumers=state.consumer_count,
    )


async def _consumers(js: JetStreamContext, stream: str) -> list[ConsumerStatus]:
    return sorted(
        (
            ConsumerStatus(
                stream=stream,
                name=c.name,
                num_pending=c.num_pending or 0,
                ack_pending=c.num_ack_pending or 0,
                redelivered=c.num_redelivered or 0,
                waiting=c.num_waiting or 0,
            )
            for c in await js.consumers_info(stream)
        ),
        key=lambda c: c.name,
    )


async def _dlq(js: JetStreamContext, subjects: Subjects) -> DlqStatus:
    """DLQ depth in total and per service (from the stream's per-subject counts)."""
    try:
        info = await js.stream_info(subjects.dlq_stream, subjects_filter=subjects.dlq_all)
    except nats.js.errors.NotFoundError:
        return DlqStatus(stream=subjects.dlq_stream, messages=0, by_service={})
    head = subjects.dlq_all[:-1]  # "sophia.dlq."
    by_service = {
        subject.removeprefix(head): count
        for subject, count in sorted((info.state.subjects or {}).items())
    }
    return DlqStatus(
        stream=subjects.dlq_stream, messages=info.state.messages, by_service=by_service
    )
