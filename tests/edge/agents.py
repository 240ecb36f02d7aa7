"""Small agents the edge tests call through MCP and HTTP: their behaviour is the specification."""

from __future__ import annotations

from typing import Any

import anyio
import msgspec
from nats.aio.msg import Msg
from opentelemetry import trace

from bus import Agent, BadRequestError, NotFoundError, SophiaError, endpoint, message_headers
from bus.schemas.edge import CALL_ID_HEADER, CallCancelled, CallProgress


class SayRequest(msgspec.Struct, kw_only=True):
    text: str
    times: int = 1


class SayReply(msgspec.Struct, kw_only=True):
    text: str


class Filters(msgspec.Struct, kw_only=True):
    tags: list[str] = msgspec.field(default_factory=list)


class FindRequest(msgspec.Struct, kw_only=True):
    """A query with a nested struct, so its schema has ``$defs`` to inline."""

    query: str
    filters: Filters = msgspec.field(default_factory=Filters)


class FindReply(msgspec.Struct, kw_only=True):
    hits: list[str]


class TraceReply(msgspec.Struct, kw_only=True):
    trace_id: str


class SlowRequest(msgspec.Struct, kw_only=True):
    steps: int = 3
    wait_s: float = 0.0  # after the steps: how long to keep the caller waiting
    timeout_s: float = 0.0  # how long the caller is willing to wait (0: the edge's own bound)
    progress_subject: str = ""  # where progress goes (the edge names an inbox)


class SlowReply(msgspec.Struct, kw_only=True):
    steps: int


class Empty(msgspec.Struct, kw_only=True):
    pass


class EchoAgent(Agent, name="echo"):
    """Echoes text; fails on purpose when asked."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.calls = 0
        self.running: dict[str, anyio.CancelScope] = {}
        self.cancelled: list[str] = []

    async def setup(self) -> None:
        """Stop a slow call when the edge says its client cancelled it."""

        async def on_cancel(msg: Msg) -> None:
            event = msgspec.json.decode(msg.data, type=CallCancelled)
            scope = self.running.get(event.call_id)
            if scope is not None:
                self.cancelled.append(event.call_id)
                scope.cancel()

        await self.nc.subscribe(self.bus.subjects.event("edge", "cancel"), cb=on_cancel)

    @endpoint(public=True)
    async def say(self, req: SayRequest) -> SayReply:
        """Return the text repeated ``times`` times.

        Raises BadRequestError when ``times`` is negative.
        """
        self.calls += 1
        if req.times < 0:
            raise BadRequestError("times: must be 0 or more")
        return SayReply(text=req.text * req.times)

    @endpoint(public=True)
    async def find(self, req: FindRequest) -> FindReply:
        """Find nothing: raises NotFoundError naming the query."""
        raise NotFoundError(f"nothing matches {req.query!r}")

    @endpoint(public=True)
    async def crash(self, req: SayRequest) -> SayReply:
        """Fail with an unexpected error whose text holds a secret."""
        raise RuntimeError("db password is hunter2")

    @endpoint(public=True)
    async def traced(self, req: Empty) -> TraceReply:
        """Return the trace id this handler runs in."""
        ctx = trace.get_current_span().get_span_context()
        return TraceReply(trace_id=format(ctx.trace_id, "032x") if ctx.is_valid else "")

    @endpoint(public=True)
    async def slow(self, req: SlowRequest) -> SlowReply:
        """Report progress for ``steps`` steps, then wait ``wait_s`` before answering."""
        for step in range(1, req.steps + 1):
            if req.progress_subject:
                update = CallProgress(progress=step, total=req.steps, message=f"step {step}")
                await self.nc.publish(req.progress_subject, msgspec.json.encode(update))
        call_id = message_headers().get(CALL_ID_HEADER, "")
        with anyio.CancelScope() as scope:
            self.running[call_id] = scope
            await anyio.sleep(req.wait_s)
        del self.running[call_id]
        if scope.cancelled_caught:
            raise SophiaError("cancelled by the client")
        return SlowReply(steps=req.steps)

    @endpoint
    async def hidden(self, req: Empty) -> SayReply:
        """Not public: never a tool, never on the HTTP API."""
        return SayReply(text="hidden")


class ExtraAgent(Agent, name="extra"):
    """Comes and goes during a test."""

    @endpoint(public=True)
    async def ping(self, req: Empty) -> SayReply:
        """Answer pong."""
        return SayReply(text="pong")
