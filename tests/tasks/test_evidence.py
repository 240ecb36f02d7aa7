"""The review rules: evidence that checks out, coverage, and diffs split without loss."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from bus.schemas.tasks import Finding
from tasks.evidence import files_in_diff, split_diff, uncovered, verify_findings

SOURCE = """\
import subprocess


def run(cmd):
    # build the command

    subprocess.call(cmd, shell=True)
    return cmd
"""


@pytest.fixture
def root(tmp_path: Path) -> Path:
    repo = tmp_path / "repo"
    (repo / "pkg").mkdir(parents=True)
    (repo / "pkg" / "run.py").write_text(SOURCE, encoding="utf-8")
    (tmp_path / "outside.py").write_text(SOURCE, encoding="utf-8")
    (repo / "pkg" / "escape.py").symlink_to(tmp_path / "outside.py")
    return repo


def finding(evidence: str, *, file: str = "pkg/run.py", line: int = 7) -> Finding:
    return Finding(file=file, line=line, message="shell=True", evidence=evidence)


def kept(root: Path, *findings: Finding, ids: tuple[str, ...] = ("ruff-3", "bandit-1")) -> int:
    found, dropped = verify_findings(root, findings, ids)
    assert len(found) + dropped == len(findings)
    return len(found)


@pytest.mark.parametrize(
    "evidence",
    ["ruff-3", " bandit-1 ", "ruff-3: unused import", "bandit-1 (B602)", "ruff-3-x"],
)
def test_tool_ids_count(root: Path, evidence: str) -> None:
    assert kept(root, finding(evidence, file="nowhere.py", line=0)) == 1


@pytest.mark.parametrize("evidence", ["ruff-30", "ruff-3x", "ruff-4", "see ruff-3", "ruff", ""])
def test_other_ids_and_empty_evidence_do_not(root: Path, evidence: str) -> None:
    assert kept(root, finding(evidence, file="nowhere.py", line=0)) == 0


@pytest.mark.parametrize(
    ("evidence", "line"),
    [
        ("subprocess.call(cmd, shell=True)", 7),
        ("`subprocess.call(cmd, shell=True)`", 7),
        ('"shell=True"', 5),  # within two lines
        ("'shell=True'", 9),
        ("```python\nsubprocess.call(cmd, shell=True)\n```", 7),
        ("  subprocess.call(cmd, shell=True)\n    return cmd  ", 7),
        ("# build the command\n\nsubprocess.call(cmd, shell=True)", 5),  # blank line skipped
        ("def run(cmd):\n# build the command\nsubprocess.call(cmd,", 4),
    ],
)
def test_snippets_that_occur_count(root: Path, evidence: str, line: int) -> None:
    assert kept(root, finding(evidence, line=line)) == 1


@pytest.mark.parametrize(
    ("evidence", "line", "file"),
    [
        ("subprocess.call(cmd, shell=True)", 1, "pkg/run.py"),  # too far from the line
        ("subprocess.call(cmd, shell=True)", 0, "pkg/run.py"),  # no line
        ("os.system(cmd)", 7, "pkg/run.py"),  # not there
        ("cmd", 7, "pkg/run.py"),  # too short
        ("return cmd\nsubprocess.call", 7, "pkg/run.py"),  # wrong order
        ("subprocess.call(cmd, shell=True)", 7, "pkg/missing.py"),
        ("subprocess.call(cmd, shell=True)", 7, "pkg/escape.py"),  # symlink out of the tree
        ("subprocess.call(cmd, shell=True)", 7, "../outside.py"),
        ("subprocess.call(cmd, shell=True)", 7, "pkg"),  # a folder
        ("``", 7, "pkg/run.py"),
    ],
)
def test_snippets_that_do_not_occur_are_dropped(
    root: Path, evidence: str, line: int, file: str
) -> None:
    assert kept(root, finding(evidence, line=line, file=file)) == 0


def test_verify_keeps_order_and_counts_dropped(root: Path) -> None:
    findings = [
        finding("ruff-3"),
        finding("made up"),
        finding("subprocess.call(cmd, shell=True)"),
        finding(""),
    ]
    found, dropped = verify_findings(root, findings, ["ruff-3"])
    assert found == [findings[0], findings[2]] and dropped == 2


def test_uncovered_normalises_and_sorts() -> None:
    changed = ["b.py", "./a.py", "pkg/c.py", "pkg/c.py", "d.py"]
    assert uncovered(changed, ["a.py", "./pkg/c.py"]) == ["b.py", "d.py"]
    assert uncovered(["./x.py"], ["x.py"]) == []
    assert uncovered([], ["x.py"]) == []


# ---- diffs ------------------------------------------------------------------------------------


def git(repo: Path, *args: str) -> str:
    done = subprocess.run(
        ["git", "-C", str(repo), *args], capture_output=True, text=True, check=True, timeout=60
    )
    return done.stdout


@pytest.fixture
def diff(tmp_path: Path) -> str:
    """A real ``git diff`` with a big file of many hunks, small files, a deletion, a rename,
    a new file and a path with a space."""
    repo = tmp_path / "d"
    repo.mkdir()
    git(repo, "init", "-q")
    git(repo, "config", "user.email", "t@example.com")
    git(repo, "config", "user.name", "t")
    big = [f"line {i}\n" for i in range(400)]
    (repo / "big.py").write_text("".join(big))
    (repo / "small.py").write_text("a = 1\n")
    (repo / "gone.py").write_text("x = 1\n")
    (repo / "old name.py").write_text("".join(f"value = {i}\n" for i in range(20)))
    git(repo, "add", "-A")
    git(repo, "commit", "-qm", "base")
    for i in range(0, 400, 40):
        big[i] = f"changed {i}\n"
    (repo / "big.py").write_text("".join(big))
    (repo / "small.py").write_text("a = 2\n")
    (repo / "gone.py").unlink()
    (repo / "old name.py").rename(repo / "new name.py")
    (repo / "fresh.py").write_text("new = True\n")
    git(repo, "add", "-A")
    return git(repo, "diff", "--cached", "-M", "HEAD")


def hunks_of(text: str) -> list[str]:
    out, current = [], None
    for line in text.splitlines(keepends=True):
        if line.startswith("diff --git "):
            current = None
        elif line.startswith("@@"):
            current = [line]
            out.append(current)
        elif current is not None:
            current.append(line)
    return ["".join(h) for h in out]


def test_files_in_diff(diff: str) -> None:
    assert sorted(files_in_diff(diff)) == sorted(
        ["big.py", "fresh.py", "gone.py", "new name.py", "small.py"]
    )


def test_files_in_diff_handles_quoted_and_binary_paths() -> None:
    diff = (
        'diff --git "a/t\\303\\244st.py" "b/t\\303\\244st.py"\n'
        "index 1..2 100644\n"
        '--- "a/t\\303\\244st.py"\n'
        '+++ "b/t\\303\\244st.py"\n'
        "@@ -1 +1 @@\n-a\n+b\n"
        "diff --git a/img.png b/img.png\n"
        "index 1..2 100644\n"
        "Binary files a/img.png and b/img.png differ\n"
    )
    assert files_in_diff(diff) == ["täst.py", "img.png"]


def test_a_small_diff_is_one_part(diff: str) -> None:
    assert split_diff(diff, len(diff)) == [diff]
    assert split_diff("", 100) == []


def file_chunks(diff: str) -> dict[str, str]:
    """Each file's part of ``diff``, by its ``diff --git`` line."""
    chunks: dict[str, str] = {}
    header = ""
    for line in diff.splitlines(keepends=True):
        if line.startswith("diff --git "):
            header = line
        chunks[header] = chunks.get(header, "") + line
    return chunks


def test_split_keeps_whole_files_and_loses_nothing(diff: str) -> None:
    chunks = file_chunks(diff)
    big = next(h for h in chunks if h.startswith("diff --git a/big.py"))
    others = [h for h in chunks if h != big]
    max_chars = max(len(chunks[h]) for h in others) * 2
    assert len(chunks[big]) > 2 * max_chars
    parts = split_diff(diff, max_chars)
    assert all(part.startswith("diff --git ") for part in parts)
    # every hunk exactly once, in order
    assert [h for part in parts for h in hunks_of(part)] == hunks_of(diff)
    # a file that fits is in one part, whole; the big one is cut, its header on every part
    for header in others:
        holding = [part for part in parts if header in part]
        assert len(holding) == 1 and chunks[header] in holding[0]
    big_parts = [part for part in parts if part.startswith(big)]
    assert len(big_parts) > 2
    assert all(not any(h in part for h in others) for part in big_parts)
    for part in parts:
        assert len(part) <= max_chars or len(hunks_of(part)) == 1


def test_split_with_tiny_parts_still_never_truncates(diff: str) -> None:
    parts = split_diff(diff, 10)
    assert [h for part in parts for h in hunks_of(part)] == hunks_of(diff)
    without_repeats = "".join(parts)
    for line in diff.splitlines():
        assert line in without_repeats


def test_split_rejects_a_useless_size() -> None:
    with pytest.raises(ValueError):
        split_diff("diff --git a/x b/x\n", 0)
