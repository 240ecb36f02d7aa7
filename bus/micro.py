"""The NATS service API (``$SRV.PING|INFO|STATS``) for one agent instance.

Replies follow the ``io.nats.micro.v1.*`` schemas so ``nats micro ls|info|stats``
work. Metadata values are strings (the CLI decodes them as ``map[string]string``),
so endpoint JSON Schemas travel JSON-encoded inside them.
"""

from __future__ import annotations

import os
import socket
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime
from importlib.metadata import PackageNotFoundError
from importlib.metadata import version as package_version

import msgspec
from nats.aio.client import Client
from nats.aio.msg import Msg
from nats.aio.subscription import Subscription
from nats.nuid import NUID

from bus import codec, wire
from bus.subjects import srv

INFO_TYPE = "io.nats.micro.v1.info_response"
PING_TYPE = "io.nats.micro.v1.ping_response"
STATS_TYPE = "io.nats.micro.v1.stats_response"


class EndpointInfo(msgspec.Struct, kw_only=True):
    name: str
    subject: str
    queue_group: str
    metadata: dict[str, str]


class InfoResponse(msgspec.Struct, kw_only=True):
    type: str
    name: str
    id: str
    version: str
    description: str
    metadata: dict[str, str]
    endpoints: list[EndpointInfo]


class PingResponse(msgspec.Struct, kw_only=True):
    type: str
    name: str
    id: str
    version: str
    metadata: dict[str, str]


class EndpointStatsBody(msgspec.Struct, kw_only=True, omit_defaults=True):
    name: str
    subject: str
    queue_group: str
    num_requests: int
    num_errors: int
    last_error: str
    processing_time: int
    average_processing_time: int
    data: dict[str, int] | None = None


class StatsResponse(msgspec.Struct, kw_only=True):
    type: str
    name: str
    id: str
    version: str
    metadata: dict[str, str]
    started: str
    endpoints: list[EndpointStatsBody]


@dataclass(slots=True)
class EndpointStats:
    """Counters for one endpoint; updated by the endpoint wrapper, read by STATS."""

    name: str
    subject: str
    queue_group: str
    metadata: dict[str, str]
    num_requests: int = 0
    num_errors: int = 0
    last_error: str = ""
    processing_time_ns: int = 0

    def record(self, started_ns: int, error: str | None) -> None:
        self.num_requests += 1
        self.processing_time_ns += time.perf_counter_ns() - started_ns
        if error is not None:
            self.num_errors += 1
            self.last_error = error

    def body(self) -> EndpointStatsBody:
        avg = self.processing_time_ns // self.num_requests if self.num_requests else 0
        return EndpointStatsBody(
            name=self.name,
            subject=self.subject,
            queue_group=self.queue_group,
            num_requests=self.num_requests,
            num_errors=self.num_errors,
            last_error=self.last_error,
            processing_time=self.processing_time_ns,
            average_processing_time=avg,
        )


def sophia_version() -> str:
    try:
        return package_version("sophia")
    except PackageNotFoundError:
        return "0.0.0"


@dataclass(slots=True)
class ServiceIdentity:
    """What the service API says about one running instance (an agent, an edge replica)."""

    name: str
    id: str
    version: str
    description: str
    metadata: dict[str, str] = field(default_factory=dict)
    endpoints: list[EndpointStats] = field(default_factory=list)
    started: datetime = field(default_factory=lambda: datetime.now(UTC))

    @classmethod
    def of_this_process(cls, name: str, description: str, prefix: str) -> ServiceIdentity:
        """A new instance id, Sophia's version, and the install prefix, host and pid."""
        return cls(
            name=name,
            id=NUID().next().decode(),
            version=sophia_version(),
            description=description,
            metadata={"prefix": prefix, "host": socket.gethostname(), "pid": str(os.getpid())},
        )

    async def answer(self, nc: Client) -> list[Subscription]:
        """Answer ``$SRV.PING|INFO|STATS`` for this instance on ``nc``; the subscriptions."""
        subs = []
        for verb, subject in self.control_subjects():

            async def reply(msg: Msg, verb: str = verb) -> None:
                if msg.reply:
                    await wire.publish(nc, msg.reply, codec.encode(self.reply(verb)))

            subs.append(await nc.subscribe(subject, cb=reply))
        return subs

    def control_subjects(self) -> list[tuple[str, str]]:
        """(verb, subject) pairs this instance answers: all, by name, by name and id."""
        return [
            (verb, subject)
            for verb in ("PING", "INFO", "STATS")
            for subject in (srv(verb), srv(verb, self.name), srv(verb, self.name, self.id))
        ]

    def ping(self) -> PingResponse:
        return PingResponse(
            type=PING_TYPE, name=self.name, id=self.id, version=self.version, metadata=self.metadata
        )

    def info(self) -> InfoResponse:
        return InfoResponse(
            type=INFO_TYPE,
            name=self.name,
            id=self.id,
            version=self.version,
            description=self.description,
            metadata=self.metadata,
            endpoints=[
                EndpointInfo(
                    name=e.name, subject=e.subject, queue_group=e.queue_group, metadata=e.metadata
                )
                for e in self.endpoints
            ],
        )

    def stats(self) -> StatsResponse:
        started = self.started.strftime("%Y-%m-%dT%H:%M:%S.%fZ")
        return StatsResponse(
            type=STATS_TYPE,
            name=self.name,
            id=self.id,
            version=self.version,
            metadata=self.metadata,
            started=started,
            endpoints=[e.body() for e in self.endpoints],
        )

    def reply(self, verb: str) -> PingResponse | InfoResponse | StatsResponse:
        if verb == "PING":
            return self.ping()
        if verb == "INFO":
            return self.info()
        return self.stats()
