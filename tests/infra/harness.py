"""The infra agent under test: real NATS, real ``pulumi.automation``, a replaying CLI.

Two programs live in a temporary stacks directory: ``sophia_k8s`` (protected, as by
default) and ``scratch``. Their ``dev`` stacks exist with a secret config value,
:data:`CANARY`, which must never leave the agent.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import msgspec
import nats.errors

from bus import Bus
from bus.schemas.edge import CallProgress
from bus.schemas.infra import InfraEvent
from tests.fixtures.pulumi_command import ReplayingPulumiCommand

if TYPE_CHECKING:
    from agents.infra import InfraAgent

CANARY = "canary-5ecr3t-planted-in-config"
PROGRAMS = ("sophia_k8s", "scratch")


@dataclass
class Infra:
    agent: InfraAgent
    cli: ReplayingPulumiCommand
    bus: Bus
    stacks_dir: Path


def make_programs(root: Path) -> Path:
    for name in PROGRAMS:
        (root / name).mkdir(parents=True)
        (root / name / "Pulumi.yaml").write_text(f"name: {name}\nruntime: python\n")
    return root


async def audit_trail(bus: Bus, stack: str) -> list[InfraEvent]:
    """Every audit event of ``stack`` so far, oldest first (read until none comes for 0.3 s)."""
    sub = await bus.js.subscribe(bus.subjects.event("infra", stack), ordered_consumer=True)
    events: list[InfraEvent] = []
    try:
        while True:
            try:
                msg = await sub.next_msg(timeout=0.3)
            except nats.errors.TimeoutError:
                return events
            events.append(msgspec.json.decode(msg.data, type=InfraEvent))
    finally:
        await sub.unsubscribe()


def decode_progress(data: bytes) -> CallProgress:
    return msgspec.json.decode(data, type=CallProgress)
