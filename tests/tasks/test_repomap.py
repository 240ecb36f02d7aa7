"""tasks.repomap: the symbol map and the file reader, on trees in tmp_path."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from tasks.repomap import read_files, repo_map

MODULE = '''"""A module."""

import os

CONSTANT = 1


class Base:
    pass


class Store(Base, metaclass=type):
    """Keeps things."""

    def __init__(self, path: str, *, size: int = 10) -> None:
        self.path = path

    async def get(self, key, /, default=None, *rest, strict: bool = False, **extra) -> bytes:
        def inner():
            return 1
        return b""

    class Nested:
        def hidden(self):
            pass


def helper(a, b=2):
    return a + b


async def fetch(url: str) -> str:
    return url
'''


@pytest.fixture
def root(tmp_path: Path) -> Path:
    base = tmp_path / "repo"
    (base / "pkg").mkdir(parents=True)
    (base / "pkg" / "store.py").write_text(MODULE)
    (base / "pkg" / "__init__.py").write_text("")
    (base / "main.py").write_text("def main(argv):\n    pass\n")
    (base / "broken.py").write_text("def oops(:\n")
    (base / "web.js").write_text("function x() {}\n")
    (base / "logo.png").write_bytes(b"\x89PNG\x00\x00binary")
    for skipped in (".git", ".venv", "node_modules", "pkg/__pycache__", ".hidden", "myenv"):
        (base / skipped).mkdir(parents=True)
        (base / skipped / "skip.py").write_text("def skip(): pass\n")
    (base / "myenv" / "pyvenv.cfg").write_text("home = /usr\n")
    (base / "big.py").write_text("x = 1\n" * 200_000)  # over 1 MB
    return base


def test_map_lists_symbols_with_argument_names(root: Path) -> None:
    text = repo_map(root)
    lines = text.splitlines()
    assert "pkg/store.py" in lines
    at = lines.index("pkg/store.py")
    assert lines[at + 1 : at + 7] == [
        "  class Base",
        "  class Store",
        "    def __init__(self, path, *, size)",
        "    async def get(self, key, /, default, *rest, strict, **extra)",
        "  def helper(a, b)",
        "  async def fetch(url)",
    ]
    assert "inner" not in text and "Nested" not in text and "hidden" not in text
    assert "CONSTANT" not in text
    assert "main.py\n  def main(argv)\n" in text
    assert "broken.py\n" in text  # unparsable: the path alone
    assert "web.js\n" in text  # another language: the path alone
    for absent in ("logo.png", "skip.py", "big.py", "skip("):
        assert absent not in text
    assert "…" not in text


def test_map_is_sorted_and_deterministic(root: Path) -> None:
    text = repo_map(root)
    paths = [line for line in text.splitlines() if not line.startswith(" ")]
    assert paths == sorted(paths)
    assert repo_map(root) == text


def test_focus_first_with_full_signatures(root: Path) -> None:
    text = repo_map(root, focus=["pkg/store.py", "./main.py", "missing.py", "../outside.py"])
    lines = text.splitlines()
    assert lines[0] == "pkg/store.py"
    assert "  class Store(Base, metaclass=type)" in lines
    assert "    def __init__(self, path: str, *, size: int=10) -> None" in lines
    assert (
        "    async def get(self, key, /, default=None, *rest, strict: bool=False, **extra) -> bytes"
    ) in lines
    assert "  async def fetch(url: str) -> str" in lines
    assert lines.index("main.py") < lines.index("broken.py")
    assert text.count("pkg/store.py") == 1
    assert "missing.py" not in text and "outside" not in text


def test_files_list_replaces_the_walk(root: Path) -> None:
    text = repo_map(root, files=["main.py", "pkg/store.py", "logo.png", "gone.py", "../x.py"])
    paths = [line for line in text.splitlines() if not line.startswith(" ")]
    assert paths == ["main.py", "pkg/store.py"]


def test_map_cut_to_budget_at_line_ends(tmp_path: Path) -> None:
    for i in range(50):
        (tmp_path / f"m{i:02d}.py").write_text(f"def f{i}(a, b):\n    pass\n")
    full = repo_map(tmp_path, max_chars=100_000)
    assert "…" not in full
    cut = repo_map(tmp_path, max_chars=300)
    assert len(cut) <= 300
    lines = cut.splitlines()
    assert lines[-1].startswith("… ") and lines[-1].endswith(" more files")
    shown = [line for line in lines[:-1] if not line.startswith(" ")]
    assert int(lines[-1].split()[1]) == 50 - len(shown)
    assert set(lines[:-1]) <= set(full.splitlines())  # whole lines only
    for path in shown:  # a file shown is shown whole
        assert f"{path}\n  def " in cut


def test_map_cut_keeps_what_fits_of_a_big_focus_file(tmp_path: Path) -> None:
    (tmp_path / "big.py").write_text("".join(f"def fn{i}(x):\n    pass\n" for i in range(200)))
    (tmp_path / "small.py").write_text("def s():\n    pass\n")
    cut = repo_map(tmp_path, max_chars=500, focus=["big.py"])
    assert len(cut) <= 500
    assert cut.startswith("big.py\n  def fn0(x)\n")
    assert cut.endswith("… 1 more files\n")


def test_map_of_a_missing_root_is_empty(tmp_path: Path) -> None:
    assert repo_map(tmp_path / "nope") == ""


def test_read_files(root: Path, tmp_path: Path) -> None:
    (tmp_path / "secret.txt").write_text("outside\n")
    os.symlink(tmp_path / "secret.txt", root / "link.txt")
    text, included = read_files(
        root,
        ["main.py", "logo.png", "missing.py", "../secret.txt", "link.txt", "pkg/__init__.py"],
    )
    assert included == ["main.py", "pkg/__init__.py"]
    assert text.startswith("main.py\n```\ndef main(argv):\n    pass\n```\n")
    assert "pkg/__init__.py\n```\n\n```\n" in text
    assert "outside" not in text and "PNG" not in text


def test_read_files_fence_longer_than_content_backticks(tmp_path: Path) -> None:
    (tmp_path / "doc.md").write_text("text\n```py\ncode\n```\n")
    text, _ = read_files(tmp_path, ["doc.md"])
    assert text.startswith("doc.md\n````\n") and text.endswith("\n````\n")


def test_read_files_over_budget_cuts_with_notes(tmp_path: Path) -> None:
    (tmp_path / "a.py").write_text("a = 1\n" * 10)
    (tmp_path / "b.py").write_text("".join(f"b{i} = {i}\n" for i in range(500)))
    (tmp_path / "c.py").write_text("c = 3\n")
    (tmp_path / "d.py").write_text("d = 4\n")
    text, included = read_files(tmp_path, ["a.py", "b.py", "c.py", "d.py"], max_chars=1000)
    assert included == ["a.py", "b.py"]
    assert "a = 1\n" * 10 in text
    body, _, closing = text.rpartition("[2 more files left out, over the budget: ")
    assert closing == "c.py, d.py]\n"
    assert len(body) <= 1000
    assert "[b.py: cut here, " in body and " of 500 lines shown]" in body
    kept = body.split("b.py\n```\n", 1)[1].split("\n```\n", 1)[0].splitlines()
    assert kept == [f"b{i} = {i}" for i in range(len(kept))]  # cut at a line end
    assert 0 < len(kept) < 500


def test_read_files_too_little_room_names_the_file(tmp_path: Path) -> None:
    (tmp_path / "a.py").write_text("a" * 90 + "\n")
    (tmp_path / "b.py").write_text("b" * 500 + "\n")
    text, included = read_files(tmp_path, ["a.py", "b.py"], max_chars=150)
    assert included == ["a.py"]
    assert text.endswith("[1 more files left out, over the budget: b.py]\n")
