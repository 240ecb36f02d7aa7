"""The diffs a review sends to the model (and the model cache keeps) carry no line of the file
beyond the hunks: git's hunk-header "function context" is cut. The canary test found it there:
``@@ -17,5 +17,5 @@ <the last line of a private key>``, which no redactor can tell from
any other base64, reached the memory agent's cache of review prompts."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from memory.redact import redact
from tasks.worktree import Worktrees
from tests.security.canaries import CanarySet, leaks

pytestmark = pytest.mark.anyio


def _git(repo: Path, *args: str) -> str:
    command = ["git", "-C", str(repo), "-c", "user.name=t", "-c", "user.email=t@t", *args]
    return subprocess.run(command, check=True, capture_output=True, text=True).stdout


async def test_diff_hunk_headers_carry_no_line_of_the_file(tmp_path: Path) -> None:
    canaries = CanarySet.fresh()
    repo = tmp_path / "repo"
    repo.mkdir()
    before = f'KEY = """{canaries.private_key.value}"""\n\n\nrows = 1\nwidth = 2\nheight = 3\n'
    (repo / "settings.py").write_text(before)
    _git(repo, "init", "-q", "-b", "main")
    _git(repo, "add", "-A")
    _git(repo, "commit", "-qm", "first")
    base = _git(repo, "rev-parse", "HEAD").strip()
    (repo / "settings.py").write_text(before.replace("height = 3", "height = 4"))
    _git(repo, "commit", "-qam", "second")
    raw = _git(repo, "diff", "-M", base, "HEAD")
    assert leaks(redact(raw)[0], canaries.all) != []  # git puts a key line in the header

    diff = await Worktrees(tmp_path / "home").diff(repo, base, "HEAD")

    assert leaks(redact(diff)[0], canaries.all) == []
    assert "\n@@ -" in diff and "+height = 4" in diff and "-height = 3" in diff
    headers = [line for line in diff.splitlines() if line.startswith("@@")]
    assert headers and all(line.endswith("@@") for line in headers)
