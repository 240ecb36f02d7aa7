"""Fixtures for the ``sophia`` CLI tests: the CLI in-process on the test's prefix, agents."""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass

import anyio
import msgspec
import pytest

from bus import Settings
from ops import cli
from tests.bus.agents import Worker
from tests.fixtures.nats_server import running


@dataclass(frozen=True)
class Run:
    """What one CLI invocation did."""

    status: int
    out: str
    err: str


Sophia = Callable[..., Awaitable[Run]]


@pytest.fixture
def sophia(cli_env: Settings, capsys: pytest.CaptureFixture[str]) -> Sophia:
    """Run ``sophia ARGS…`` in-process (in a worker thread: it runs its own event loop)."""

    async def run(*argv: str) -> Run:
        capsys.readouterr()
        status = await anyio.to_thread.run_sync(cli.main, list(argv))
        out, err = capsys.readouterr()
        return Run(status, out, err)

    return run


@pytest.fixture
async def worker(settings: Settings) -> AsyncIterator[Worker]:
    """The Worker test agent, dead-lettering on the second failed delivery."""
    async with running(Worker(msgspec.structs.replace(settings, work_max_deliver=2))) as agent:
        yield agent
