"""``sophia memory index|search|stats`` against a running memory agent, and with none."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import anyio
import pytest

from agents.memory import MemoryAgent
from bus import Settings
from bus.schemas import memory as s
from ops import cli
from ops.commands.memory import progress_line
from tests.fixtures.nats_server import running

pytestmark = pytest.mark.anyio


@pytest.fixture
async def agent(cli_env: Settings) -> AsyncIterator[MemoryAgent]:
    async with running(MemoryAgent(cli_env)) as agent:
        yield agent


async def sophia(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    capsys.readouterr()
    status = await anyio.to_thread.run_sync(cli.main, list(argv))
    out, err = capsys.readouterr()
    return status, out, err


async def test_cli_indexes_then_searches_and_shows_stats(
    agent: MemoryAgent, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    repo = tmp_path / "shop"
    repo.mkdir()
    (repo / "cart.py").write_text(
        "def cart_total(items):\n    return sum(i.price for i in items)\n"
    )
    (repo / "README.md").write_text("# Shop\n\nA tiny shop.\n")
    index = await sophia(capsys, "memory", "index", str(repo))
    search = await sophia(
        capsys, "memory", "search", "sum of prices in the cart", "--namespace", "shop"
    )
    stats = await sophia(capsys, "memory", "stats")
    elsewhere = await sophia(capsys, "memory", "search", "sum of prices in the cart")
    assert index[0] == 0
    assert "indexed shop: 2 files (2 changed, 0 removed), 2 chunks" in index[1]
    assert "2/2 files" in index[2]
    assert search[0] == 0
    assert "cart.py:1-2" in search[1].splitlines()[1]
    assert stats[0] == 0
    assert "2 items" in stats[1]
    # the default namespace holds nothing: the CLI says where the items are
    assert elsewhere[1].startswith("no hits in namespace 'default'; memory also holds: shop")


async def test_cli_says_so_when_no_memory_agent_answers(
    cli_env: Settings, capsys: pytest.CaptureFixture[str]
) -> None:
    status, _, err = await sophia(capsys, "memory", "stats")
    assert status == 3
    assert "memory agent does not answer" in err


def test_progress_line_draws_a_bar() -> None:
    line = progress_line(s.IndexProgress(namespace="n", done=5, total=10, path="a/b.py"), width=10)
    assert line.startswith("\r[#####-----]     5/10 files  a/b.py")
