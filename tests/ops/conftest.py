"""Fixtures for the ``sophia`` CLI tests: the CLI in-process on the test's prefix, agents,
throwaway agent packages."""

from __future__ import annotations

import sys
import textwrap
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

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


Package = Callable[[dict[str, str]], str]

AGENT = """
from bus import Agent

class {cls}(Agent, name="{name}"):
    \"\"\"A test agent.\"\"\"
"""


def agent_source(name: str, cls: str = "TestAgent") -> str:
    """The source of a module that defines one agent named ``name``."""
    return AGENT.format(name=name, cls=cls)


@pytest.fixture
def package(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Package]:
    """Write ``{module: source}`` as a new importable package (``PKG`` in a source stands for
    its name); returns the name."""
    made: list[str] = []

    def make(modules: dict[str, str]) -> str:
        name = f"agents_{uuid.uuid4().hex[:8]}"
        root = tmp_path / name
        root.mkdir()
        (root / "__init__.py").write_text('"""Test agents."""\n')
        for module, source in modules.items():
            (root / f"{module}.py").write_text(textwrap.dedent(source).replace("PKG", name))
        made.append(name)
        return name

    monkeypatch.syspath_prepend(str(tmp_path))
    yield make
    for name in [m for m in sys.modules if m.split(".")[0] in made]:
        del sys.modules[name]
