"""Code indexing: .gitignore respected, Python chunked by syntax, only changed files redone."""

from __future__ import annotations

from pathlib import Path

import pytest

from bus.schemas import memory as s
from memory.chunking import chunk_file
from memory.engine import MemoryEngine
from memory.indexer import walk

pytestmark = pytest.mark.anyio

MODULE = '''"""Payment helpers."""

import math

RATE = 0.2


def gross(net):
    """Net plus tax."""
    return net * (1 + RATE)


class Ledger:
    """A list of entries."""

    def __init__(self):
        self.entries = []

    def add(self, amount):
        self.entries.append(amount)
        return len(self.entries)

    def total(self):
        return math.fsum(self.entries)

    def mean(self):
        return self.total() / max(1, len(self.entries))

    def clear(self):
        self.entries.clear()
        return None

    def last(self):
        return self.entries[-1]

    def first(self):
        return self.entries[0]

    def size(self):
        return len(self.entries)
'''


def test_chunk_file_keeps_a_small_class_whole() -> None:
    chunks = chunk_file("p.py", "class P:\n    def a(self):\n        return 1\n")
    assert [(c.symbol, c.unit, c.start_line, c.end_line) for c in chunks] == [("P", "class", 1, 3)]


def test_chunk_file_splits_python_into_docstring_code_functions_and_methods() -> None:
    chunks = chunk_file("pay.py", MODULE)
    spans = [(c.symbol, c.unit, c.start_line, c.end_line) for c in chunks]
    assert spans == [
        ("", "module-doc", 1, 1),
        ("", "lines", 3, 5),
        ("gross", "function", 8, 10),
        ("Ledger", "class", 13, 15),
        ("Ledger.__init__", "function", 16, 17),
        ("Ledger.add", "function", 19, 21),
        ("Ledger.total", "function", 23, 24),
        ("Ledger.mean", "function", 26, 27),
        ("Ledger.clear", "function", 29, 31),
        ("Ledger.last", "function", 33, 34),
        ("Ledger.first", "function", 36, 37),
        ("Ledger.size", "function", 39, 40),
    ]
    assert chunks[2].text.splitlines()[0] == "def gross(net):"


def test_chunk_file_splits_other_text_by_lines_with_overlap() -> None:
    text = "\n".join(f"line {i}" for i in range(1, 131))
    chunks = chunk_file("notes.txt", text, lines=60, overlap=10)
    assert [(c.start_line, c.end_line) for c in chunks] == [(1, 60), (51, 110), (101, 130)]
    assert {c.language for c in chunks} == {"text"}


def test_chunk_file_falls_back_to_lines_for_python_that_does_not_parse() -> None:
    chunks = chunk_file("broken.py", "def f(:\n    pass\n")
    assert [(c.unit, c.start_line, c.end_line) for c in chunks] == [("lines", 1, 2)]


def _repo(root: Path) -> Path:
    (root / "pkg" / "build").mkdir(parents=True)
    (root / ".git").mkdir()
    (root / ".git" / "config").write_text("[core]\n")
    (root / ".gitignore").write_text("*.log\nbuild/\n")
    (root / "pkg" / ".gitignore").write_text("secret_*.py\n")
    (root / "pkg" / "pay.py").write_text(MODULE)
    (root / "pkg" / "secret_keys.py").write_text("x = 1\n")
    (root / "pkg" / "build" / "out.py").write_text("y = 2\n")
    (root / "run.log").write_text("noise\n")
    (root / "README.md").write_text("# Payments\n\nHow the ledger works.\n")
    (root / "blob.bin").write_bytes(b"\0\1\2" * 10)
    return root


def test_walk_respects_gitignore_files_at_every_level(tmp_path: Path) -> None:
    assert sorted(walk(_repo(tmp_path))) == [
        ".gitignore",
        "README.md",
        "blob.bin",
        "pkg/.gitignore",
        "pkg/pay.py",
    ]


@pytest.mark.parametrize("backend", ["embedded", "servers"], indirect=True)
async def test_reindex_touches_only_changed_files(engine: MemoryEngine, tmp_path: Path) -> None:
    root = _repo(tmp_path / "repo")
    first = await engine.index(s.IndexRequest(path=str(root)))
    pay_ids = await _ids(engine, "pkg/pay.py")
    (root / "README.md").write_text("# Payments\n\nHow the ledger and refunds work.\n")
    (root / "pkg" / "refund.py").write_text("def refund(entry):\n    return -entry\n")
    (root / ".gitignore").unlink()
    (root / "run.log").unlink()
    second = await engine.index(s.IndexRequest(path=str(root)))
    third = await engine.index(s.IndexRequest(path=str(root)))
    assert first.namespace == "repo"
    assert (first.files, first.changed, first.removed) == (5, 4, 0)
    # README changed, refund.py new, build/out.py no longer ignored; .gitignore gone
    assert (second.changed, second.removed) == (3, 1)
    assert (third.changed, third.removed, third.chunks) == (0, 0, 0)
    assert await _ids(engine, "pkg/pay.py") == pay_ids
    readme = await engine.search(
        s.SearchRequest(
            query="refunds", namespace="repo", filters=s.SearchFilters(path="README.md")
        )
    )
    assert [h.text for h in readme.hits] == ["# Payments\n\nHow the ledger and refunds work."]


async def _ids(engine: MemoryEngine, path: str) -> set[str]:
    req = s.SearchRequest(
        query="ledger entries total", namespace="repo", k=100, filters=s.SearchFilters(path=path)
    )
    return {h.id for h in (await engine.search(req)).hits}


@pytest.mark.parametrize("backend", ["embedded"], indirect=True)
async def test_index_reports_progress_for_every_file(engine: MemoryEngine, tmp_path: Path) -> None:
    root = _repo(tmp_path / "repo")
    events: list[tuple[int, int]] = []

    async def progress(event: s.IndexProgress) -> None:
        events.append((event.done, event.total))

    result = await engine.index(s.IndexRequest(path=str(root), namespace="r"), progress)
    assert events == [(i, result.files) for i in range(1, result.files + 1)]
    assert result.chunks > 0
