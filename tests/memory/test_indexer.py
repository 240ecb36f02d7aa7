"""Code indexing: .gitignore respected, Python chunked by syntax, only changed files redone."""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any

import pytest

from bus.schemas import memory as s
from memory.chunking import chunk_file
from memory.engine import MemoryEngine
from memory.indexer import walk
from tests.memory.conftest import BACKENDS

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
    events: list[s.IndexProgress] = []

    async def progress(event: s.IndexProgress) -> None:
        events.append(event)

    result = await engine.index(s.IndexRequest(path=str(root), namespace="r"), progress)
    assert [(e.done, e.total) for e in events] == [(i, result.files) for i in range(1, 6)]
    assert [e.chunks for e in events] == sorted(e.chunks for e in events)
    assert events[-1].chunks == result.chunks > 0
    assert sorted(e.path for e in events) == sorted(walk(root))


class Spy:
    """Counts the calls of one async method of an object, passing them on."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch, owner: object, name: str) -> None:
        self.calls = 0
        self._method = getattr(owner, name)
        monkeypatch.setattr(owner, name, self)

    async def __call__(self, *args: Any) -> Any:
        self.calls += 1
        return await self._method(*args)


def _files(root: Path, n: int) -> Path:
    root.mkdir(parents=True)
    for i in range(n):
        (root / f"m{i:02d}.py").write_text(f"def f{i}(x):\n    return x + {i}\n")
    return root


@pytest.mark.parametrize("backend", BACKENDS, indirect=True)
@pytest.mark.parametrize(("batch_chunks", "batches"), [(128, 1), (3, 4)], ids=["one", "four"])
async def test_index_embeds_and_writes_many_files_per_batch(
    engine: MemoryEngine,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    batch_chunks: int,
    batches: int,
) -> None:
    root = _files(tmp_path / "repo", 10)
    engine.indexer.batch_chunks = batch_chunks
    writes = Spy(monkeypatch, engine.tiers.facts, "replace_files")
    upserts = Spy(monkeypatch, engine.vectors, "upsert")
    calls = engine.embedder.calls
    result = await engine.index(s.IndexRequest(path=str(root)))
    records = await engine.tiers.facts.scan("", 100)
    assert (result.changed, result.chunks) == (10, 10)
    assert engine.embedder.calls - calls == batches
    assert (writes.calls, upserts.calls) == (batches, batches)
    assert len(records) == await engine.vectors.count() == 10
    assert await engine.tiers.facts.file_hashes("repo") == {
        f"m{i:02d}.py": hashlib.sha256(f"def f{i}(x):\n    return x + {i}\n".encode()).hexdigest()
        for i in range(10)
    }


@pytest.mark.parametrize("backend", ["embedded"], indirect=True)
async def test_reindex_of_an_unchanged_tree_embeds_and_writes_nothing(
    engine: MemoryEngine, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    root = _repo(tmp_path / "repo")
    await engine.index(s.IndexRequest(path=str(root)))
    writes = Spy(monkeypatch, engine.tiers.facts, "replace_files")
    upserts = Spy(monkeypatch, engine.vectors, "upsert")
    optimized = Spy(monkeypatch, engine.vectors, "optimize")
    calls = engine.embedder.calls
    again = await engine.index(s.IndexRequest(path=str(root)))
    assert (again.changed, again.removed, again.chunks) == (0, 0, 0)
    assert engine.embedder.calls == calls
    assert (writes.calls, upserts.calls, optimized.calls) == (0, 0, 0)


@pytest.mark.parametrize("backend", ["embedded", "servers"], indirect=True)
async def test_index_that_fails_midway_redoes_only_the_files_it_did_not_finish(
    engine: MemoryEngine, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    root = _files(tmp_path / "repo", 4)
    engine.indexer.batch_chunks = 1  # a batch per file
    stage = engine.router.stage
    staged = 0

    async def full_disk(*args: Any) -> None:
        nonlocal staged
        staged += 1
        if staged == 2:
            raise OSError("no space left on device")
        await stage(*args)

    monkeypatch.setattr(engine.router, "stage", full_disk)
    with pytest.raises(OSError, match="no space left"):  # the error itself, not a group
        await engine.index(s.IndexRequest(path=str(root)))
    hashed = await engine.tiers.facts.file_hashes("repo")
    monkeypatch.setattr(engine.router, "stage", stage)
    again = await engine.index(s.IndexRequest(path=str(root)))
    records = await engine.tiers.facts.scan("", 100)
    assert list(hashed) == ["m00.py"]
    assert (again.changed, again.chunks) == (3, 3)
    assert sorted(r.metadata["path"] for r in records) == [f"m{i:02d}.py" for i in range(4)]
    assert await engine.vectors.count() == 4


@pytest.mark.parametrize("backend", ["embedded", "servers"], indirect=True)
async def test_reindex_of_a_changed_file_keeps_the_vectors_of_its_unchanged_chunks(
    engine: MemoryEngine, tmp_path: Path
) -> None:
    root = _repo(tmp_path / "repo")
    await engine.index(s.IndexRequest(path=str(root)))
    pay = root / "pkg" / "pay.py"
    pay.write_text(pay.read_text().replace("return net * (1 + RATE)", "return net * 1.2"))
    again = await engine.index(s.IndexRequest(path=str(root)))
    records = await engine.tiers.facts.scan("", 100)
    gross = [r for r in records if r.metadata.get("symbol") == "gross"]
    hits = await engine.search(
        s.SearchRequest(query="list of entries", namespace="repo", k=100, mode="vector")
    )
    assert again.changed == 1
    assert await engine.vectors.count() == len(records)
    assert [r.text.splitlines()[-1].strip() for r in gross] == ["return net * 1.2"]
    assert {h.id for h in hits.hits} == {r.id for r in records}


@pytest.mark.parametrize("backend", ["embedded"], indirect=True)
async def test_index_redacts_a_secret_that_chunking_cuts_in_pieces(
    engine: MemoryEngine, tmp_path: Path
) -> None:
    root = tmp_path / "repo"
    root.mkdir()
    key = [f"Qk{i:03d}" + "Ab1x" * 9 for i in range(150)]  # 150 lines: three chunks of text
    lines = [
        "Deploy notes.",
        "-----BEGIN RSA PRIVATE KEY-----",
        *key,
        "-----END RSA PRIVATE KEY-----",
    ]
    (root / "notes.txt").write_text("\n".join([*lines, "The end."]) + "\n")
    result = await engine.index(s.IndexRequest(path=str(root)))
    texts = [r.text for r in await engine.tiers.facts.scan("", 100)]
    assert result.chunks == len(texts) > 1  # redaction keeps the lines, so they chunk alike
    assert not any("Ab1x" in text for text in texts)
    assert any("[REDACTED:private-key]" in text for text in texts)
