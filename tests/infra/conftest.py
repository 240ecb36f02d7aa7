"""The ``infra`` fixture: the infra agent on the test's NATS with a replaying Pulumi CLI."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from agents.infra import InfraAgent
from bus import Bus, Settings
from infra.config import InfraSettings
from infra.workspace import Workspaces
from tests.fixtures.nats_server import running
from tests.fixtures.pulumi_command import FakeStack, ReplayingPulumiCommand
from tests.infra.harness import CANARY, Infra, make_programs


@pytest.fixture
async def infra(settings: Settings, bus: Bus, tmp_path: Path) -> AsyncIterator[Infra]:
    stacks_dir = make_programs(tmp_path / "stacks")
    cli = ReplayingPulumiCommand()
    cli.stacks["scratch/dev"] = FakeStack(
        config={
            "scratch:apiToken": (CANARY, True),
            "scratch:namespace": ("sophia", False),
        },
        outputs={"endpoint": ("http://edge.sophia:8420", False), "token": (CANARY, True)},
    )
    config = InfraSettings(infra_stacks_dir=str(stacks_dir), infra_lock_ttl_s=30)
    workspaces = Workspaces(settings, config, command=lambda: cli, environ={})
    async with running(InfraAgent(settings, config, workspaces)) as agent:
        yield Infra(agent, cli, bus, stacks_dir)
