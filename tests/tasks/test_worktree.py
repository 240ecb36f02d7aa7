"""tasks.worktree against real git repositories in tmp_path."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import anyio
import pytest

from bus.errors import BadRequestError, ConflictError, TimeoutError_
from tasks.worktree import (
    GitError,
    NothingToCommit,
    Worktrees,
    git,
    resolve_commit,
    resolve_repo,
)

pytestmark = pytest.mark.anyio

BRANCH = "sophia/task-1"
ROOT = Path(__file__).resolve().parents[2]  # the project, for `python -c`


def sh(cwd: Path, *args: str) -> str:
    env = {k: v for k, v in os.environ.items() if not k.startswith("GIT_")}
    env.update(GIT_CONFIG_NOSYSTEM="1", GIT_CONFIG_GLOBAL=os.devnull)
    base = ["git", "-c", "user.name=T", "-c", "user.email=t@t", "-c", "init.defaultBranch=main"]
    done = subprocess.run(
        [*base, *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=30, check=True
    )
    return done.stdout


@pytest.fixture
def repo(tmp_path: Path) -> Path:
    root = tmp_path / "user repo"
    root.mkdir()
    sh(root, "init", "-q")
    (root / "app.py").write_text("print('hi')\n")
    (root / "README.md").write_text("# readme\n")
    sh(root, "add", "-A")
    sh(root, "commit", "-q", "-m", "first")
    return root.resolve()


@pytest.fixture
def wt(tmp_path: Path) -> Worktrees:
    return Worktrees(tmp_path / "home")


def snapshot(repo: Path) -> tuple[str, str, str]:
    """What the user sees: HEAD, the checked-out branch and git status."""
    return (
        sh(repo, "rev-parse", "HEAD"),
        sh(repo, "symbolic-ref", "HEAD"),
        sh(repo, "status", "--porcelain", "--untracked-files=all"),
    )


async def test_resolve_repo_and_commit(repo: Path, tmp_path: Path) -> None:
    (repo / "sub").mkdir()
    assert await resolve_repo(str(repo / "sub")) == repo
    plain = tmp_path / "plain"
    plain.mkdir()
    with pytest.raises(BadRequestError, match="repo: not a git repository"):
        await resolve_repo(str(plain))
    with pytest.raises(BadRequestError, match="repo"):
        await resolve_repo(str(tmp_path / "missing"))
    head = sh(repo, "rev-parse", "HEAD").strip()
    assert await resolve_commit(repo, "HEAD") == head
    assert await resolve_commit(repo, head[:8]) == head
    for bad in ("nope", "--all", "", "HEAD~5"):
        with pytest.raises(BadRequestError, match="base"):
            await resolve_commit(repo, bad)


async def test_git_errors_are_bounded(repo: Path) -> None:
    with pytest.raises(GitError) as info:
        await git(repo, "rev-parse", "--verify", "no-such-ref")
    assert info.value.code == 500
    assert len(info.value.description) <= 200
    assert "rev-parse" in info.value.description
    assert await git(repo, "rev-parse", "--verify", "nope", check=False) == ""
    with pytest.raises(TimeoutError_, match="git log: timed out"):
        await git(repo, "log", timeout_s=1e-6)


async def test_callers_git_environment_is_ignored(
    repo: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("GIT_DIR", str(tmp_path / "elsewhere"))
    monkeypatch.setenv("GIT_WORK_TREE", str(tmp_path))
    monkeypatch.setenv("GIT_AUTHOR_NAME", "Someone Else")
    assert await resolve_repo(str(repo)) == repo
    wt = Worktrees(tmp_path / "home")
    tree = await wt.tree(repo, BRANCH, "HEAD")
    (tree / "app.py").write_text("print('env')\n")
    sha = await wt.commit(tree, "env", {})
    monkeypatch.delenv("GIT_DIR")
    monkeypatch.delenv("GIT_WORK_TREE")
    assert sh(repo, "log", "-1", "--format=%an", sha).strip() == "Sophia"


async def test_tree_creates_branch_outside_and_leaves_user_tree_alone(
    repo: Path, wt: Worktrees, tmp_path: Path
) -> None:
    (repo / "app.py").write_text("print('user edit')\n")  # the user's own uncommitted work
    before = snapshot(repo)
    head = before[0].strip()
    tree = await wt.tree(repo, BRANCH, head)
    assert tree == wt.path_for(repo, BRANCH)
    assert tree.is_relative_to(tmp_path / "home" / "worktrees")
    assert not tree.is_relative_to(repo)
    assert tree.name == "sophia__task-1"
    assert tree.parent.name.startswith("user_repo-")
    assert (tree / "app.py").read_text() == "print('hi')\n"
    assert sh(repo, "rev-parse", f"refs/heads/{BRANCH}").strip() == head
    assert sh(tree, "symbolic-ref", "HEAD").strip() == f"refs/heads/{BRANCH}"
    assert snapshot(repo) == before
    assert (repo / "app.py").read_text() == "print('user edit')\n"


async def test_tree_rejects_bad_names_and_branches_in_use(repo: Path, wt: Worktrees) -> None:
    for bad in ("-x", "a..b", "a b", "x~1", ""):
        with pytest.raises(BadRequestError, match="branch"):
            await wt.tree(repo, bad, "HEAD")
    with pytest.raises(BadRequestError, match="base"):
        await wt.tree(repo, "sophia/new", "no-such-commit")
    with pytest.raises(ConflictError):  # checked out in the user's tree
        await wt.tree(repo, "main", "HEAD")


async def test_tree_reused_after_death_until_clean(repo: Path, wt: Worktrees) -> None:
    tree = await wt.tree(repo, BRANCH, "HEAD")
    (tree / "app.py").write_text("half done\n")
    (tree / "new.py").write_text("x = 1\n")
    again = await wt.tree(repo, BRANCH, "HEAD")
    assert again == tree
    assert (tree / "app.py").read_text() == "half done\n"
    assert (tree / "new.py").exists()
    await wt.clean(tree)
    assert (tree / "app.py").read_text() == "print('hi')\n"
    assert not (tree / "new.py").exists()
    assert sh(tree, "status", "--porcelain") == ""


async def test_clean_refuses_the_user_tree(repo: Path, wt: Worktrees) -> None:
    (repo / "app.py").write_text("mine\n")
    with pytest.raises(BadRequestError):
        await wt.clean(repo)
    assert (repo / "app.py").read_text() == "mine\n"


async def test_commit_and_find_commit(repo: Path, wt: Worktrees) -> None:
    base = sh(repo, "rev-parse", "HEAD").strip()
    tree = await wt.tree(repo, BRANCH, base)
    with pytest.raises(NothingToCommit):
        await wt.commit(tree, "nothing", {"Sophia-Step": "t/s1#1"})
    (tree / "app.py").write_text("print('changed')\n")
    (tree / "lib.py").write_text("# comment line stays\n")
    message = "Change the greeting\n\n# a heading that is no comment\nmore text"
    sha = await wt.commit(tree, message, {"Sophia-Step": "task-123/s1#2", "Sophia-Task": "t1"})
    assert sha == await wt.head(tree)
    assert len(sha) == 40
    assert sh(repo, "rev-list", "--count", f"{base}..{sha}").strip() == "1"
    assert sh(repo, "rev-parse", f"refs/heads/{BRANCH}").strip() == sha
    body = sh(repo, "log", "-1", "--format=%B", sha)
    assert "# a heading that is no comment" in body
    assert body.rstrip().endswith("Sophia-Step: task-123/s1#2\nSophia-Task: t1")
    assert sh(repo, "log", "-1", "--format=%an <%ae>", sha).strip() == "Sophia <sophia@localhost>"
    assert sh(tree, "status", "--porcelain") == ""

    (tree / "other.py").write_text("y = 2\n")
    second = await wt.commit(tree, "second", {"Sophia-Step": "task-123/s2#1"})
    assert await wt.find_commit(tree, "Sophia-Step", "task-123/s1#2", since=base) == sha
    assert await wt.find_commit(tree, "sophia-step", "task-123/s2#1", since=base) == second
    assert await wt.find_commit(tree, "Sophia-Step", "task-123/s1#2", since=sha) is None
    assert await wt.find_commit(tree, "Sophia-Step", "task-123/s1", since=base) is None
    with pytest.raises(BadRequestError):
        await wt.commit(tree, "x", {"Bad Key": "v"})
    with pytest.raises(BadRequestError):
        await wt.commit(tree, "x", {"Key": "two\nlines"})


async def test_commit_does_not_run_the_users_hooks(repo: Path, wt: Worktrees) -> None:
    hooks = repo / ".git" / "hooks"
    marker = repo.parent / "hook-ran"
    for name in ("pre-commit", "commit-msg", "post-commit", "post-checkout"):
        hook = hooks / name
        hook.write_text(f"#!/bin/sh\ntouch '{marker}'\nexit 1\n")
        hook.chmod(0o755)
    tree = await wt.tree(repo, BRANCH, "HEAD")
    (tree / "app.py").write_text("print('x')\n")
    await wt.commit(tree, "with hooks", {})
    assert not marker.exists()


async def test_diff_stat_changed_files_show(repo: Path, wt: Worktrees) -> None:
    base = sh(repo, "rev-parse", "HEAD").strip()
    tree = await wt.tree(repo, BRANCH, base)
    (tree / "app.py").write_text("print('changed')\n")
    (tree / "README.md").unlink()
    (tree / "pkg").mkdir()
    (tree / "pkg" / "new file.py").write_text("z = 3\n")
    head = await wt.commit(tree, "work", {})
    diff = await wt.diff(repo, base, head)
    assert "--- a/app.py" in diff and "+++ b/app.py" in diff
    assert "+print('changed')" in diff
    assert "\x1b[" not in diff
    stat = await wt.diff_stat(tree, base, head)
    assert "app.py" in stat and "3 files changed" in stat
    assert sorted(await wt.changed_files(repo, base, head)) == ["app.py", "pkg/new file.py"]
    assert await wt.show(repo, head, "app.py") == "print('changed')\n"
    assert await wt.show(repo, base, "README.md") == "# readme\n"
    assert await wt.show(repo, head, "README.md") is None
    assert await wt.show(repo, head, "pkg") is None  # a directory
    assert await wt.show(repo, head, "../etc/passwd") is None
    assert "pkg/new file.py" in await wt.tracked_files(tree)


async def test_scratch_removed_after_block(repo: Path, wt: Worktrees) -> None:
    base = sh(repo, "rev-parse", "HEAD").strip()
    before = snapshot(repo)
    async with wt.scratch(repo, base) as path:
        assert path.is_relative_to(wt.home / "scratch")
        assert (path / "app.py").read_text() == "print('hi')\n"
        assert sh(path, "rev-parse", "HEAD").strip() == base
        (path / "junk.txt").write_text("left behind\n")
    assert not path.exists()
    assert str(path) not in sh(repo, "worktree", "list")
    assert snapshot(repo) == before


async def test_scratch_removed_after_error_and_cancellation(repo: Path, wt: Worktrees) -> None:
    seen: list[Path] = []
    with pytest.raises(RuntimeError):
        async with wt.scratch(repo, "HEAD") as path:
            seen.append(path)
            raise RuntimeError("boom")
    with anyio.move_on_after(0.5) as scope:
        async with wt.scratch(repo, "HEAD") as path:
            seen.append(path)
            await anyio.sleep(30)
    assert scope.cancelled_caught
    assert len(seen) == 2
    for path in seen:
        assert not path.exists()
    assert sh(repo, "worktree", "list", "--porcelain").count("worktree ") == 1


async def test_set_branch_moves_branch_and_its_worktree(repo: Path, wt: Worktrees) -> None:
    base = sh(repo, "rev-parse", "HEAD").strip()
    tree = await wt.tree(repo, BRANCH, base)
    (tree / "app.py").write_text("print('v2')\n")
    v2 = await wt.commit(tree, "v2", {})
    before = snapshot(repo)
    await wt.set_branch(repo, BRANCH, base)
    assert sh(repo, "rev-parse", f"refs/heads/{BRANCH}").strip() == base
    assert (tree / "app.py").read_text() == "print('hi')\n"
    assert sh(tree, "status", "--porcelain") == ""
    await wt.set_branch(repo, BRANCH, v2)
    assert (tree / "app.py").read_text() == "print('v2')\n"
    # a branch with no worktree is created or moved; nothing else changes
    await wt.set_branch(repo, "sophia/result", v2)
    assert sh(repo, "rev-parse", "refs/heads/sophia/result").strip() == v2
    await wt.set_branch(repo, "sophia/result", base)
    assert sh(repo, "rev-parse", "refs/heads/sophia/result").strip() == base
    assert snapshot(repo) == before
    with pytest.raises(ConflictError):  # the user's checked-out branch is never moved
        await wt.set_branch(repo, "main", v2)
    assert snapshot(repo) == before


async def test_stale_worktree_dir_is_recreated(repo: Path, wt: Worktrees) -> None:
    tree = await wt.tree(repo, BRANCH, "HEAD")
    (tree / "app.py").write_text("print('committed')\n")
    sha = await wt.commit(tree, "keep", {})
    shutil.rmtree(repo / ".git" / "worktrees" / tree.name)  # git forgets the worktree
    (tree / "leftover.txt").write_text("x\n")
    again = await wt.tree(repo, BRANCH, "HEAD")
    assert again == tree
    assert await wt.head(tree) == sha
    assert not (tree / "leftover.txt").exists()
    assert sh(tree, "status", "--porcelain") == ""


async def test_worktree_dir_deleted_is_recreated(repo: Path, wt: Worktrees) -> None:
    tree = await wt.tree(repo, BRANCH, "HEAD")
    shutil.rmtree(tree)  # git still lists it, its directory is gone
    again = await wt.tree(repo, BRANCH, "HEAD")
    assert again == tree
    assert (tree / "app.py").exists()


async def test_concurrent_tree_calls_for_one_branch(repo: Path, wt: Worktrees) -> None:
    results: list[Path] = []

    async def one(home: Path) -> None:
        results.append(await Worktrees(home).tree(repo, BRANCH, "HEAD"))

    async with anyio.create_task_group() as tg:
        for _ in range(4):
            tg.start_soon(one, wt.home)
    assert len(set(results)) == 1
    assert sh(repo, "worktree", "list", "--porcelain").count("worktree ") == 2


async def test_concurrent_tree_calls_across_processes(repo: Path, wt: Worktrees) -> None:
    script = (
        "import anyio, sys; from pathlib import Path; from tasks.worktree import Worktrees\n"
        "print(anyio.run(Worktrees(Path(sys.argv[1])).tree, Path(sys.argv[2]), sys.argv[3], "
        "'HEAD'))\n"
    )
    outputs: list[str] = []

    async def one() -> None:
        done = await anyio.run_process(
            [sys.executable, "-c", script, str(wt.home), str(repo), BRANCH], cwd=ROOT
        )
        outputs.append(done.stdout.decode().strip())

    with anyio.fail_after(60):
        async with anyio.create_task_group() as tg:
            for _ in range(3):
                tg.start_soon(one)
    assert len(set(outputs)) == 1
    assert Path(outputs[0]) == wt.path_for(repo, BRANCH)


async def test_remove(repo: Path, wt: Worktrees) -> None:
    tree = await wt.tree(repo, BRANCH, "HEAD")
    (tree / "dirty.txt").write_text("x\n")
    await wt.remove(repo, BRANCH)
    assert not tree.exists()
    assert sh(repo, "rev-parse", "--verify", f"refs/heads/{BRANCH}")  # the branch stays
    await wt.remove(repo, BRANCH, delete_branch=True)
    assert f"refs/heads/{BRANCH}" not in sh(repo, "show-ref")
    await wt.remove(repo, BRANCH, delete_branch=True)  # again: harmless
    with pytest.raises(ConflictError):
        await wt.remove(repo, "main", delete_branch=True)
    assert "refs/heads/main" in sh(repo, "show-ref")
