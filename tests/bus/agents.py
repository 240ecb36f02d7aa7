"""Small agents the bus tests run: their behaviour is what the tests specify."""

from __future__ import annotations

from typing import Literal

import anyio
import msgspec

from bus import (
    Agent,
    BadRequestError,
    NotFoundError,
    RetryableError,
    endpoint,
    message_headers,
    work,
)


class EchoRequest(msgspec.Struct, kw_only=True):
    text: str
    times: int = 1


class EchoReply(msgspec.Struct, kw_only=True):
    text: str


class PickRequest(msgspec.Struct, kw_only=True):
    colour: Literal["red", "green"]


class HeaderRequest(msgspec.Struct, kw_only=True):
    name: str
    wait_s: float = 0.0  # let other requests run meanwhile


class HeaderReply(msgspec.Struct, kw_only=True):
    value: str


class Job(msgspec.Struct, kw_only=True):
    id: str
    fail_times: int = 0  # raise a retryable error on the first N deliveries
    sleep_s: float = 0.0
    bad: bool = False  # raise BadRequestError


class EchoAgent(Agent, name="echo"):
    """Echoes text back; fails on purpose when asked."""

    @endpoint(public=True)
    async def say(self, req: EchoRequest) -> EchoReply:
        """Return the text repeated ``times`` times."""
        if req.times < 0:
            raise BadRequestError("times: must be 0 or more")
        return EchoReply(text=req.text * req.times)

    @endpoint(subject="lookup.one")
    async def lookup(self, req: EchoRequest) -> EchoReply:
        """Raise NotFoundError for any text."""
        raise NotFoundError(f"no item named {req.text!r}")

    @endpoint(access="read")
    async def header(self, req: HeaderRequest) -> HeaderReply:
        """The value of one header of this very request ('' when it has none)."""
        await anyio.sleep(req.wait_s)
        return HeaderReply(value=message_headers().get(req.name, ""))

    @endpoint
    async def pick(self, req: PickRequest) -> EchoReply:
        """Echo a colour (one of a fixed set)."""
        return EchoReply(text=req.colour)

    @endpoint
    async def crash(self, req: EchoRequest) -> EchoReply:
        """Fail with an unexpected exception that carries a secret in its text."""
        raise RuntimeError("db password is hunter2")


class Worker(Agent, name="worker"):
    """Handles Job work items and records what happened to each."""

    def __init__(self, *args: object, **kwargs: object) -> None:
        super().__init__(*args, **kwargs)  # type: ignore[arg-type]
        self.done: list[str] = []
        self.attempts: dict[str, int] = {}
        self.max_seen_in_flight = 0
        self.msg_ids: dict[str, str] = {}  # job id -> the Nats-Msg-Id header it came with

    def dead_lettered_count(self) -> int:
        return self._consumer.dead_lettered if self._consumer is not None else 0

    @work
    async def handle(self, job: Job) -> None:
        self.attempts[job.id] = self.attempts.get(job.id, 0) + 1
        self.msg_ids[job.id] = message_headers().get("Nats-Msg-Id", "")
        assert self._consumer is not None
        self.max_seen_in_flight = max(self.max_seen_in_flight, self._consumer.in_flight)
        if job.sleep_s:
            await anyio.sleep(job.sleep_s)
        if job.bad:
            raise BadRequestError("id: refused on purpose")
        if self.attempts[job.id] <= job.fail_times:
            raise RetryableError("flaky backend")
        self.done.append(job.id)
