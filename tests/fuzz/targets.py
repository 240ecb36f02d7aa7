"""The endpoints to fuzz: declared by the agents' classes, their schemas as the bus publishes them.

Test ids come from the agents' routing tables (:func:`bus.handlers.collect`), known when
pytest collects; the request schema a test fuzzes is the one the running endpoint publishes
in its ``$SRV.INFO`` metadata (what the edge and every other client see), never the class's.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

import anyio
import msgspec
from nats.aio.client import Client
from nats.aio.msg import Msg

from agents.coder import CoderAgent
from agents.infra import InfraAgent
from agents.llm import LlmAgent
from agents.memory import MemoryAgent
from agents.planner import PlannerAgent
from agents.reviewer import ReviewerAgent
from bus.handlers import collect
from bus.micro import InfoResponse
from bus.subjects import srv

AGENTS = (MemoryAgent, LlmAgent, PlannerAgent, CoderAgent, ReviewerAgent, InfraAgent)


@dataclass(frozen=True)
class Declared:
    """One endpoint as its agent's class declares it (enough to name a test)."""

    service: str
    name: str  # the service-API endpoint name: ``session_save``
    tail: str  # after ``<prefix>.<service>.``: ``session.save``
    public: bool

    @property
    def id(self) -> str:
        return f"{self.service}.{self.tail}"


@dataclass(frozen=True)
class Target:
    """One running endpoint and the request schema it publishes."""

    declared: Declared
    subject: str
    schema: dict[str, Any]

    @property
    def service(self) -> str:
        return self.declared.service

    @property
    def tool(self) -> str:
        return f"{self.declared.service}_{self.declared.name}"

    @property
    def path(self) -> str:
        return f"/v1/{self.declared.service}/{self.declared.name}"


def declared(public_only: bool = False) -> list[Declared]:
    """Every endpoint of every agent (only the public ones with ``public_only``)."""
    found = []
    for cls in AGENTS:
        endpoints, _ = collect(cls)
        for spec in endpoints.values():
            if spec.public or not public_only:
                found.append(Declared(cls.name, spec.name, spec.subject_tail, spec.public))
    return sorted(found, key=lambda d: d.id)


async def published(nc: Client, prefix: str, limit_s: float = 10.0) -> dict[str, Target]:
    """``{declared id: Target}`` for every declared endpoint the services of ``prefix``
    publish: one ``$SRV.INFO`` to all, answered as soon as every declared service has replied
    (or what replied within ``limit_s``)."""
    by_name = {(d.service, d.name): d for d in declared()}
    services = {d.service for d in by_name.values()}
    infos: dict[str, InfoResponse] = {}
    enough = anyio.Event()
    inbox = nc.new_inbox()

    async def on_reply(msg: Msg) -> None:
        info = msgspec.json.decode(msg.data, type=InfoResponse)
        if info.metadata.get("prefix") == prefix and info.name in services:
            infos[info.name] = info
        if services <= set(infos):
            enough.set()

    sub = await nc.subscribe(inbox, cb=on_reply)
    try:
        await nc.publish(srv("INFO"), b"", reply=inbox)
        with anyio.move_on_after(limit_s):
            await enough.wait()
    finally:
        await sub.unsubscribe()
    found: dict[str, Target] = {}
    for service, info in infos.items():
        for endpoint in info.endpoints:
            decl = by_name.get((service, endpoint.name))
            if decl is not None:
                schema = json.loads(endpoint.metadata["request_schema"])
                found[decl.id] = Target(decl, endpoint.subject, schema)
    return found


async def ping_counts(
    nc: Client, prefix: str, expected: dict[str, int], limit_s: float = 10.0
) -> dict[str, int]:
    """How many instances of each service of ``prefix`` answer ``$SRV.PING``: as soon as
    ``expected`` have, or what answered within ``limit_s``."""
    counts: dict[str, int] = {}
    enough = anyio.Event()
    inbox = nc.new_inbox()

    async def on_reply(msg: Msg) -> None:
        body = json.loads(msg.data)
        if body.get("metadata", {}).get("prefix") == prefix:
            counts[body["name"]] = counts.get(body["name"], 0) + 1
        if all(counts.get(name, 0) >= n for name, n in expected.items()):
            enough.set()

    sub = await nc.subscribe(inbox, cb=on_reply)
    try:
        await nc.publish(srv("PING"), b"", reply=inbox)
        with anyio.move_on_after(limit_s):
            await enough.wait()
    finally:
        await sub.unsubscribe()
    return counts
