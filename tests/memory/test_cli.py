"""``sophia memory index|search|stats`` against a running memory agent, and with none."""

from __future__ import annotations

import io
from collections.abc import AsyncIterator
from pathlib import Path

import anyio
import pytest

from agents.memory import MemoryAgent
from bus import Settings
from bus.schemas import memory as s
from ops import cli
from ops.commands.memory import ProgressView, hits_table, progress_line
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
    elsewhere = await sophia(
        capsys, "memory", "search", "sum of prices in the cart", "--namespace", "default"
    )
    assert index[0] == 0
    assert "indexed shop: 2 files (2 changed, 0 removed), 2 chunks" in index[1]
    # stderr is no terminal here: plain lines, the last one saying where the run ended
    assert "\r" not in index[2]
    assert index[2].splitlines()[-1].startswith("indexing shop: 2/2 files, 2 chunks, ")
    assert search[0] == 0
    assert search[1].splitlines()[0].split() == ["RANK", "MATCH", "WHERE", "SYMBOL", "TEXT"]
    assert search[1].splitlines()[1].split()[:5] == [
        "1",
        "both",
        "cart.py:1-2",
        "cart_total",
        "def",
    ]
    assert stats[0] == 0
    assert "2 items" in stats[1]
    # the default namespace holds nothing: the CLI says where the items are
    assert elsewhere[1].startswith("no hits in namespace 'default'; memory also holds: shop")


async def test_cli_search_covers_every_namespace_unless_told(
    agent: MemoryAgent, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    methods = "".join(f"\n    def m{i}(self):\n        return {i}\n" for i in range(8))
    ledger = f"class Ledger:\n    def cart_total(self):\n        return 0\n{methods}"
    shop = "def cart_total(items):\n    return sum(items)\n"
    for name, body in [("shop", shop), ("bank", ledger)]:  # a long class: one chunk a method
        (tmp_path / name).mkdir()
        (tmp_path / name / "money.py").write_text(body)
        assert (await sophia(capsys, "memory", "index", str(tmp_path / name)))[0] == 0
    every = await sophia(capsys, "memory", "search", "cart total")
    one = await sophia(capsys, "memory", "search", "cart total", "--namespace", "bank")
    header, *rows = every[1].splitlines()
    assert header.split() == ["RANK", "MATCH", "NAMESPACE", "WHERE", "SYMBOL", "TEXT"]
    assert {r.split()[2] for r in rows} == {"bank", "shop"}
    assert {"cart_total", "Ledger.cart_total"} <= {r.split()[4] for r in rows}
    assert "NAMESPACE" not in one[1]
    assert "Ledger.cart_total" in [r.split()[3] for r in one[1].splitlines()[1:]]


async def test_cli_index_of_no_directory_is_one_line_and_exit_2(
    agent: MemoryAgent, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    status, out, err = await sophia(capsys, "memory", "index", str(tmp_path / "does-not-exist"))
    assert status == 2
    assert out == ""
    assert err == "sophia: path: not a directory on the memory agent's machine\n"


@pytest.mark.parametrize("path", ["", "  "], ids=["empty", "blank"])
async def test_cli_index_refuses_an_empty_path(
    cli_env: Settings, capsys: pytest.CaptureFixture[str], path: str
) -> None:
    status, out, err = await sophia(capsys, "memory", "index", path)
    assert status == 2
    assert out == ""
    assert len(err.splitlines()) == 1
    assert "argument path: must not be empty" in err


async def test_cli_says_so_when_no_memory_agent_answers(
    cli_env: Settings, capsys: pytest.CaptureFixture[str]
) -> None:
    status, _, err = await sophia(capsys, "memory", "stats")
    assert status == 3
    assert "memory agent does not answer" in err


def _event(done: int, total: int = 10, **kw: object) -> s.IndexProgress:
    return s.IndexProgress(namespace="n", done=done, total=total, **kw)  # type: ignore[arg-type]


def test_progress_line_draws_a_bar_as_wide_as_the_terminal() -> None:
    event = _event(5, path="pkg/deep/module.py", chunks=120, seconds=10.0)
    line = progress_line(event, columns=80, width=10)
    short = progress_line(event, columns=60, width=10)
    assert line.startswith(
        "\r[#####-----]     5/10 files    120 chunks   12.0/s  pkg/deep/module.py"
    )
    assert len(line) == 80  # "\r" and 79 columns: a redraw covers the line before
    assert short.endswith("…ule.py") and len(short) == 60


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def test_progress_view_on_a_terminal_redraws_one_line() -> None:
    out, clock = io.StringIO(), Clock()
    view = ProgressView(out, tty=True, clock=clock)
    for done in range(1, 11):
        clock.now += 1.0
        view.show(_event(done))
    view.finish()
    frames = out.getvalue().split("\r")[1:]
    assert len(frames) == 10
    assert len({len(f.rstrip("\n")) for f in frames}) == 1  # each covers the one before
    assert "\n" not in "".join(frames[:-1])
    assert "10/10 files" in frames[-1] and frames[-1].endswith("\n")


def test_progress_view_elsewhere_writes_a_line_every_few_seconds() -> None:
    out, clock = io.StringIO(), Clock()
    view = ProgressView(out, tty=False, every_s=3.0, clock=clock)
    for done in range(1, 11):  # one event a second
        view.show(_event(done, chunks=done * 4, seconds=float(done)))
        clock.now += 1.0
    view.show(_event(10, chunks=40, seconds=10.5))  # the end again (from the reply): once
    view.finish()
    assert "\r" not in out.getvalue()
    assert out.getvalue().splitlines() == [
        "indexing n: 1/10 files, 4 chunks, 4.0 chunks/s, 1 s",
        "indexing n: 4/10 files, 16 chunks, 4.0 chunks/s, 4 s",
        "indexing n: 7/10 files, 28 chunks, 4.0 chunks/s, 7 s",
        "indexing n: 10/10 files, 40 chunks, 4.0 chunks/s, 10 s",
    ]


def _hit(tier: str, namespace: str, **meta: object) -> s.Hit:
    return s.Hit(id="i", text="\n  def f(self):\n", score=0.03, tier=tier, kind="code",
                 namespace=namespace, metadata=meta)  # fmt: skip


def test_hits_table_shows_rank_who_matched_and_the_symbol() -> None:
    hits = [
        _hit("hybrid", "a", path="c.py", start_line=3, end_line=9, symbol="BaseClient._get"),
        _hit("l2", "a", path="c.py", start_line=1, end_line=2),
        _hit("l3", "a"),
    ]
    rows = [line.split() for line in hits_table(hits).splitlines()]
    assert rows == [
        ["RANK", "MATCH", "WHERE", "SYMBOL", "TEXT"],
        ["1", "both", "c.py:3-9", "BaseClient._get", "def", "f(self):"],
        ["2", "vector", "c.py:1-2", "-", "def", "f(self):"],
        ["3", "keyword", "code", "-", "def", "f(self):"],
    ]


def test_hits_table_names_the_namespace_when_hits_come_from_several() -> None:
    rows = [line.split() for line in hits_table([_hit("l2", "a"), _hit("l3", "b")]).splitlines()]
    assert [row[:3] for row in rows] == [["RANK", "MATCH", "NAMESPACE"], ["1", "vector", "a"],
                                         ["2", "keyword", "b"]]  # fmt: skip
