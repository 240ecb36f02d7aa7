"""Readiness as ``sophia up --detach`` checks it: every agent answers PING, the edge listens."""

from __future__ import annotations

import pytest

from bus import Settings
from ops.natsserver import free_port
from ops.session import wait_ready
from tests.bus.agents import EchoAgent

pytestmark = pytest.mark.anyio


async def test_wait_ready_returns_nothing_missing_once_every_agent_answers(
    echo: EchoAgent, settings: Settings
) -> None:
    assert await wait_ready(settings, {"echo"}, None, 10.0) == set()


async def test_wait_ready_names_the_agents_and_edge_that_never_answer(
    echo: EchoAgent, settings: Settings
) -> None:
    edge = ("127.0.0.1", free_port())
    missing = await wait_ready(settings, {"echo", "ghost"}, edge, 1.0)
    assert missing == {"ghost", "edge"}


async def test_wait_ready_ignores_an_agent_of_another_prefix(
    echo: EchoAgent, settings: Settings
) -> None:
    other = Settings(nats_url=settings.nats_url, prefix=f"{settings.prefix}x")
    assert await wait_ready(other, {"echo"}, None, 1.0) == {"echo"}
