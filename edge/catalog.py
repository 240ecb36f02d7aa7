"""What the bus offers: public endpoints found through the NATS service API (``$SRV.INFO``).

Guarantee: :meth:`Catalog.run` polls every ``edge_discovery_s``, gathering INFO replies for
``edge_discovery_window_s``; an endpoint appears on the first poll that sees it. When a poll
misses a service, ``$SRV.PING.<service>`` settles it: no responders (no instance of that name
listens: the agent has stopped) drops its endpoints at once; a reply from an instance of this
install (a loaded agent, slow to send its INFO within the window) keeps them; anything else
(no reply in time, or only another install's) drops them after :data:`MISSES_TO_DROP` polls in
a row, so one slow reply does not flap a tool and a hung agent does not stay listed. An
endpoint its service stops offering while the service still answers goes after as many polls.
Only services of this install (their ``prefix`` metadata) count. Each change bumps
:attr:`Catalog.version` and wakes :meth:`Catalog.wait_changed`.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass, field
from functools import cached_property
from typing import Any, Literal

import anyio
import msgspec
import nats.errors
from nats.aio.client import Client
from nats.aio.msg import Msg

from bus.micro import InfoResponse, PingResponse
from bus.subjects import srv
from edge.schema import InputValidator, closed, object_schema

log = logging.getLogger("sophia.edge")

MISSES_TO_DROP = 3
CONFIRM_TIMEOUT_S = 1.0
#: a request field an endpoint declares to report progress: the edge fills it with an inbox
PROGRESS_FIELD = "progress_subject"
MAX_REPLIES = 10_000
_info_decoder = msgspec.json.Decoder(InfoResponse)
_ping_decoder = msgspec.json.Decoder(PingResponse)
#: who answered ``$SRV.PING.<service>`` (see :meth:`Catalog._ping`)
PingAnswer = Literal["ours", "none", "unknown"]


@dataclass(frozen=True)
class Endpoint:
    """One endpoint of one service, with its schemas ready for MCP and OpenAPI."""

    service: str
    name: str
    subject: str
    description: str
    raw_request_schema: dict[str, Any] = field(repr=False, compare=True)
    raw_response_schema: dict[str, Any] = field(repr=False, compare=True)
    public: bool
    access: str = ""  # "read" when the endpoint declares it changes nothing

    @property
    def tool_name(self) -> str:
        return f"{self.service}_{self.name}"

    @cached_property
    def request_schema(self) -> dict[str, Any]:
        return object_schema(self.raw_request_schema)

    @cached_property
    def progress_field(self) -> bool:
        """Whether the endpoint reports progress to an inbox named in its request."""
        return PROGRESS_FIELD in self.request_schema.get("properties", {})

    @cached_property
    def tool_schema(self) -> dict[str, Any]:
        """The request schema as a client of the edge sees it (MCP tools, the HTTP API): the
        edge's own fields left out, every declared object closed to unknown fields."""
        return closed(without_progress(self.request_schema))

    @cached_property
    def response_schema(self) -> dict[str, Any]:
        return object_schema(self.raw_response_schema)

    @cached_property
    def validator(self) -> InputValidator:
        """Checks what a client sends against :attr:`tool_schema`."""
        return InputValidator(self.tool_schema)


def without_progress(schema: dict[str, Any]) -> dict[str, Any]:
    """An object schema without the edge's :data:`PROGRESS_FIELD` (the edge names the inbox)."""
    if PROGRESS_FIELD not in schema.get("properties", {}):
        return schema
    result = dict(schema)
    result["properties"] = {k: v for k, v in schema["properties"].items() if k != PROGRESS_FIELD}
    if "required" in schema:
        result["required"] = [f for f in schema["required"] if f != PROGRESS_FIELD]
    return result


def _schema(metadata: dict[str, str], key: str) -> dict[str, Any]:
    try:
        value = json.loads(metadata.get(key) or "{}")
    except ValueError:
        return {}
    return value if isinstance(value, dict) else {}


def endpoints_of(info: InfoResponse, prefix: str) -> list[Endpoint]:
    """The endpoints one INFO reply announces, if the service belongs to ``prefix``."""
    if info.metadata.get("prefix") != prefix:
        return []
    found = []
    for e in info.endpoints:
        if not e.subject.startswith(f"{prefix}.{info.name}."):
            continue
        found.append(
            Endpoint(
                service=info.name,
                name=e.name,
                subject=e.subject,
                description=e.metadata.get("description", ""),
                raw_request_schema=_schema(e.metadata, "request_schema"),
                raw_response_schema=_schema(e.metadata, "response_schema"),
                public=e.metadata.get("public") == "true",
                access=e.metadata.get("access", ""),
            )
        )
    return found


class Catalog:
    """The live set of endpoints, refreshed from ``$SRV.INFO``."""

    def __init__(self, nc: Client, prefix: str, interval_s: float, window_s: float) -> None:
        self._nc = nc
        self._prefix = prefix
        self._interval_s = interval_s
        self._window_s = window_s
        self._by_key: dict[tuple[str, str], Endpoint] = {}
        self._misses: dict[tuple[str, str], int] = {}
        self._changed = anyio.Event()
        self._poke = anyio.Event()
        self.version = 0
        self.polls = 0

    # ---- reading ---------------------------------------------------------------------------

    def get(self, service: str, name: str) -> Endpoint | None:
        return self._by_key.get((service, name))

    def endpoints(self, *, public_only: bool = True) -> list[Endpoint]:
        items = sorted(self._by_key.values(), key=lambda e: (e.service, e.name))
        return [e for e in items if e.public or not public_only]

    @property
    def services(self) -> set[str]:
        return {service for service, _ in self._by_key}

    async def wait_changed(self, after_version: int) -> int:
        """Wait until :attr:`version` differs from ``after_version``; return the new version."""
        while self.version == after_version:
            await self._changed.wait()
        return self.version

    def refresh_soon(self) -> None:
        """Ask for a poll now instead of at the next interval (e.g. after a 503)."""
        self._poke.set()

    # ---- polling ---------------------------------------------------------------------------

    async def run(
        self, *, task_status: anyio.abc.TaskStatus[None] = anyio.TASK_STATUS_IGNORED
    ) -> None:
        """Poll until cancelled; reports ``started()`` after the first poll."""
        await self.poll()
        task_status.started()
        while True:
            with anyio.move_on_after(self._interval_s - self._window_s):
                await self._poke.wait()
            self._poke = anyio.Event()
            try:
                await self.poll()
            except Exception:  # a failed poll must not end discovery; the next one retries
                log.warning("discovery_failed", exc_info=True)

    async def poll(self) -> None:
        """Gather INFO replies once and apply what they say."""
        replies = await self._gather()
        seen: dict[tuple[str, str], Endpoint] = {}
        for msg in replies:
            try:
                info = _info_decoder.decode(msg.data)
            except (msgspec.DecodeError, msgspec.ValidationError):
                continue
            for endpoint in endpoints_of(info, self._prefix):
                seen[(endpoint.service, endpoint.name)] = endpoint
        self.polls += 1
        missed = {svc for svc, _ in self._by_key} - {svc for svc, _ in seen}
        answers = {svc: await self._ping(svc) for svc in missed}
        self._apply(
            seen,
            stopped={svc for svc, said in answers.items() if said == "none"},
            alive={svc for svc, said in answers.items() if said == "ours"},
        )

    async def _ping(self, service: str) -> PingAnswer:
        """Who answers ``$SRV.PING.<service>``: ``"ours"`` (an instance of this install),
        ``"none"`` (nothing listens: NATS's no-responders), or ``"unknown"`` (no reply in time,
        a disconnected bus, or the first reply from another install)."""
        try:
            msg = await self._nc.request(srv("PING", service), b"", timeout=CONFIRM_TIMEOUT_S)
        except nats.errors.NoRespondersError:
            return "none"
        except nats.errors.Error:
            return "unknown"  # slow or disconnected: not proof that it has gone
        try:
            ping = _ping_decoder.decode(msg.data)
        except (msgspec.DecodeError, msgspec.ValidationError):
            return "unknown"
        return "ours" if ping.metadata.get("prefix") == self._prefix else "unknown"

    async def _gather(self) -> list[Msg]:
        if not self._nc.is_connected:
            return []
        replies: list[Msg] = []

        async def collect(msg: Msg) -> None:
            if len(replies) < MAX_REPLIES:
                replies.append(msg)

        inbox = self._nc.new_inbox()
        sub = await self._nc.subscribe(inbox, cb=collect)
        try:
            await self._nc.publish(srv("INFO"), b"", reply=inbox)
            await anyio.sleep(self._window_s)
        finally:
            await sub.unsubscribe()
        return replies

    def _apply(
        self, seen: dict[tuple[str, str], Endpoint], *, stopped: set[str], alive: set[str]
    ) -> None:
        changed = False
        for key, endpoint in seen.items():
            self._misses.pop(key, None)
            if self._by_key.get(key) != endpoint:
                self._by_key[key] = endpoint
                changed = True
        for key in [k for k in self._by_key if k not in seen and k[0] not in alive]:
            self._misses[key] = self._misses.get(key, 0) + 1
            if self._misses[key] >= MISSES_TO_DROP or key[0] in stopped:
                del self._by_key[key]
                del self._misses[key]
                changed = True
        if changed:
            self.version += 1
            self._changed.set()
            self._changed = anyio.Event()
            log.info("catalog_changed", extra={"endpoints": len(self._by_key)})
