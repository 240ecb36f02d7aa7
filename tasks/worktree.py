"""Git worktrees for tasks, through the ``git`` command line.

Guarantees:

* The user's working tree is never touched: on the repository itself Sophia only runs
  ``git worktree add`` / ``remove`` / ``prune``, ref updates (``update-ref``, ``branch -D``) and
  object reads. Files change only inside Sophia's own worktrees under ``home``; a branch
  checked out in a worktree outside ``home`` (the user's main tree included) is never moved,
  reset or deleted (:class:`~bus.errors.ConflictError`).
* No dependence on the user's setup: every command runs with the system and global config
  ignored (``GIT_CONFIG_NOSYSTEM=1``, ``GIT_CONFIG_GLOBAL=/dev/null``), every inherited
  ``GIT_*`` variable dropped, prompts off (``GIT_TERMINAL_PROMPT=0``), hooks off
  (``core.hooksPath=/dev/null``), no fsmonitor, no signing, and a fixed identity
  (``Sophia <sophia@localhost>``).
* Every command is bounded (``timeout_s``, the process is killed when it runs out) and fails
  with a :class:`GitError` whose text names the git subcommand and git's first line of
  complaint, bounded, never the environment.
* Refs and options cannot be confused: every ref, commit and branch a caller passes is
  refused when it starts with ``-``; branch names pass ``git check-ref-format --branch``.
* ``git worktree add`` and ``remove`` run under one file lock (``home/worktrees.lock``), so
  processes on one machine asking for the same branch at once get the same worktree.
"""

from __future__ import annotations

import fcntl
import hashlib
import os
import re
import shutil
import subprocess
import uuid
from collections.abc import AsyncIterator, Mapping
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import IO

import anyio

from bus.errors import (
    BadRequestError,
    ConflictError,
    InternalError,
    TimeoutError_,
    UnavailableError,
)

#: ``-c`` settings every command runs with: nothing of the user's runs, nothing waits on them
_CONFIG = (
    "core.hooksPath=/dev/null",
    "core.fsmonitor=false",
    "commit.gpgSign=false",
    "tag.gpgSign=false",
    "user.name=Sophia",
    "user.email=sophia@localhost",
    "advice.detachedHead=false",
)
#: a worktree checkout of a large repository takes longer than a ref read
ADD_TIMEOUT_S = 300.0
#: how long a caller waits for another process's ``git worktree add`` to finish
LOCK_TIMEOUT_S = 600.0
_LOCK_POLL_S = 0.05
_CLEANUP_TIMEOUT_S = 120.0
_STDERR_KEEP = 2000
_TRAILER_KEY = re.compile(r"[A-Za-z0-9][A-Za-z0-9-]*")
#: a hunk header's line ranges, and the function context git puts after them
_HUNK_CONTEXT = re.compile(r"^(@@ -\d+(?:,\d+)? \+\d+(?:,\d+)? @@).*$", re.MULTILINE)


class GitError(InternalError):
    """A git command failed; ``stderr`` keeps git's complaint (bounded) for logs."""

    default_description = "git failed"

    def __init__(
        self, description: str | None = None, *, returncode: int = -1, stderr: str = ""
    ) -> None:
        super().__init__(description)
        self.returncode = returncode
        self.stderr = stderr[:_STDERR_KEEP]


class NothingToCommit(GitError):
    """:meth:`Worktrees.commit` found no change to commit."""

    default_description = "nothing to commit"


def _env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("GIT_")}
    env.update(
        GIT_TERMINAL_PROMPT="0",
        GIT_CONFIG_NOSYSTEM="1",
        GIT_CONFIG_GLOBAL=os.devnull,
        GIT_OPTIONAL_LOCKS="0",
        GIT_EDITOR=":",
        GIT_PAGER="cat",
        LC_ALL="C",
    )
    return env


def _subcommand(args: tuple[str, ...]) -> str:
    words = [a for a in args[:2] if not a.startswith("-")]
    return " ".join(words[:1]) or "command"


async def git(
    cwd: Path,
    *args: str,
    timeout_s: float = 60,
    input: bytes | None = None,
    check: bool = True,
) -> str:
    """Run ``git args`` in ``cwd`` and return its stdout (UTF-8, undecodable bytes replaced).

    Raises :class:`GitError` when git exits non-zero and ``check`` is true,
    :class:`~bus.errors.TimeoutError_` when it runs past ``timeout_s`` (it is killed), and
    :class:`~bus.errors.UnavailableError` when there is no git to run.
    """
    result = await _run(cwd, args, timeout_s=timeout_s, input=input)
    if check and result.returncode != 0:
        raise _failure(args, result)
    return result.stdout.decode("utf-8", "replace")


async def _run(
    cwd: Path, args: tuple[str, ...], *, timeout_s: float, input: bytes | None = None
) -> subprocess.CompletedProcess[bytes]:
    command = ["git"]
    for setting in _CONFIG:
        command += ["-c", setting]
    command += args
    stdin: int | IO[bytes] | None = None if input else subprocess.DEVNULL
    try:
        with anyio.fail_after(timeout_s):
            return await anyio.run_process(
                command,
                input=input or None,
                stdin=stdin,
                cwd=cwd,
                env=_env(),
                check=False,
            )
    except TimeoutError:
        raise TimeoutError_(f"git {_subcommand(args)}: timed out after {timeout_s:g} s") from None
    except FileNotFoundError:
        if not _is_dir(cwd):
            raise BadRequestError("repo: no such directory") from None
        raise UnavailableError("git: not installed") from None
    except NotADirectoryError:
        raise BadRequestError("repo: not a directory") from None


def _failure(args: tuple[str, ...], result: subprocess.CompletedProcess[bytes]) -> GitError:
    stderr = result.stderr.decode("utf-8", "replace")
    lines = [line for line in stderr.splitlines() if line.strip()]
    first = next((line for line in lines if line.startswith(("fatal:", "error:"))), None)
    reason = first or (lines[0] if lines else f"exit status {result.returncode}")
    return GitError(
        f"git {_subcommand(args)}: {reason}", returncode=result.returncode, stderr=stderr
    )


def _no_option(name: str, value: str) -> str:
    if not value or value.startswith("-") or "\x00" in value or "\n" in value:
        raise BadRequestError(f"{name}: not a valid ref")
    return value


async def resolve_repo(path: str) -> Path:
    """The top level of the git working tree holding ``path``.

    Raises :class:`~bus.errors.BadRequestError` naming ``repo`` when ``path`` is empty, is no
    directory, or is not in a git working tree (a bare repository included).
    """
    if not path or "\x00" in path:
        raise BadRequestError("repo: no path given")
    where = _local_dir(path)
    if where is None:
        raise BadRequestError("repo: no such directory")
    try:
        top = await git(where, "rev-parse", "--show-toplevel", timeout_s=30)
    except GitError:
        raise BadRequestError("repo: not a git repository") from None
    top = top.strip()
    if not top:
        raise BadRequestError("repo: not a git repository (no working tree)")
    return _resolved(Path(top))


async def resolve_commit(repo: Path, ref: str) -> str:
    """The full sha of the commit ``ref`` names in ``repo``.

    Raises :class:`~bus.errors.BadRequestError` naming ``base`` when ``ref`` names no commit.
    """
    if not ref or ref.startswith("-") or "\x00" in ref or "\n" in ref:
        raise BadRequestError("base: not a valid ref")
    out = await git(
        repo, "rev-parse", "--verify", "--quiet", f"{ref}^{{commit}}", check=False, timeout_s=30
    )
    sha = out.strip()
    if not re.fullmatch(r"[0-9a-f]{40}|[0-9a-f]{64}", sha):
        raise BadRequestError("base: no such commit in the repository")
    return sha


async def _valid_branch(repo: Path, branch: str) -> str:
    if not branch or branch.startswith("-") or "\x00" in branch or "\n" in branch:
        raise BadRequestError("branch: not a valid branch name")
    out = await git(repo, "check-ref-format", "--branch", branch, check=False, timeout_s=30)
    if out.strip() != branch:
        raise BadRequestError("branch: not a valid branch name")
    return branch


@dataclass(frozen=True)
class _Entry:
    """One block of ``git worktree list --porcelain``."""

    path: Path
    branch: str | None  # the short name; None when detached or bare
    prunable: bool


async def _worktrees(repo: Path) -> list[_Entry]:
    out = await git(repo, "worktree", "list", "--porcelain", timeout_s=30)
    entries: list[_Entry] = []
    for block in out.split("\n\n"):
        path: Path | None = None
        branch: str | None = None
        prunable = False
        for line in block.splitlines():
            key, _, value = line.partition(" ")
            if key == "worktree":
                path = Path(value)
            elif key == "branch":
                branch = value.removeprefix("refs/heads/")
            elif key == "prunable":
                prunable = True
        if path is not None:
            entries.append(_Entry(_resolved(path), branch, prunable))
    return entries


def _resolved(path: Path) -> Path:
    try:
        return path.resolve()
    except OSError:
        return path


async def _branch_sha(repo: Path, branch: str) -> str | None:
    out = await git(
        repo, "rev-parse", "--verify", "--quiet", f"refs/heads/{branch}", check=False, timeout_s=30
    )
    return out.strip() or None


def _is_worktree(path: Path) -> bool:
    return (path / ".git").is_file()


def _exists(path: Path) -> bool:
    return path.exists() or path.is_symlink()


def _is_dir(path: Path) -> bool:
    return Path(path).is_dir()


def _local_dir(path: str) -> Path | None:
    where = Path(path).expanduser()
    return where if where.is_dir() else None


def _mkdir(path: Path) -> None:
    path.mkdir(parents=True, exist_ok=True)


def _remove_path(path: Path) -> None:
    if path.is_symlink() or path.is_file():
        path.unlink(missing_ok=True)
    else:
        shutil.rmtree(path, ignore_errors=True)


async def _rmtree(path: Path) -> None:
    await anyio.to_thread.run_sync(_remove_path, path)


class _FileLock:
    """``fcntl.flock`` on a lock file, polled so a waiting task stays cancellable."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._file: IO[bytes] | None = None

    async def __aenter__(self) -> None:
        _mkdir(self.path.parent)
        handle = await anyio.to_thread.run_sync(lambda: open(self.path, "ab"))
        try:
            with anyio.fail_after(LOCK_TIMEOUT_S):
                while True:
                    try:
                        fcntl.flock(handle.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
                        break
                    except BlockingIOError:
                        await anyio.sleep(_LOCK_POLL_S)
        except TimeoutError:
            handle.close()
            raise UnavailableError("worktrees: the lock stayed busy") from None
        except BaseException:
            handle.close()
            raise
        self._file = handle

    async def __aexit__(self, *exc: object) -> None:
        handle, self._file = self._file, None
        if handle is not None:
            fcntl.flock(handle.fileno(), fcntl.LOCK_UN)
            handle.close()


class Worktrees:
    """Sophia's worktrees of the user's repositories, under ``home / "worktrees"``."""

    def __init__(self, home: Path) -> None:
        self.home = Path(home)
        self.root = self.home / "worktrees"
        self.scratch_root = self.home / "scratch"
        self._lock_path = self.home / "worktrees.lock"

    def path_for(self, repo: Path, branch: str) -> Path:
        """Where the worktree of ``branch`` of ``repo`` lives (whether or not it exists)."""
        repo = _resolved(Path(repo))
        digest = hashlib.sha256(str(repo).encode()).hexdigest()[:10]
        name = re.sub(r"[^A-Za-z0-9._-]", "_", repo.name) or "repo"
        return self.root / f"{name}-{digest}" / branch.replace("/", "__")

    def _lock(self) -> _FileLock:
        return _FileLock(self._lock_path)

    def _ours(self, path: Path) -> bool:
        return _resolved(path).is_relative_to(_resolved(self.home))

    async def tree(self, repo: Path, branch: str, start: str) -> Path:
        """The worktree of ``branch``, created from commit ``start`` when the branch is new.

        An existing worktree of the branch at its path is reused as it is (uncommitted files
        included); an existing branch without a worktree gets one at its tip (``start`` is then
        not used). A directory at the path that git no longer knows, or a worktree git lists
        whose directory is gone, is pruned and made again. Raises
        :class:`~bus.errors.ConflictError` when the branch is checked out elsewhere (the
        user's own tree, say) or the path holds another branch's worktree.
        """
        repo = _resolved(Path(repo))
        await _valid_branch(repo, branch)
        path = self.path_for(repo, branch)
        async with self._lock():
            entries = await _worktrees(repo)
            here = next((e for e in entries if e.path == _resolved(path)), None)
            if here is not None and not here.prunable and _is_worktree(path):
                if here.branch != branch:
                    raise ConflictError("worktree: its path holds another branch's worktree")
                return path
            elsewhere = next(
                (e for e in entries if e.branch == branch and e.path != _resolved(path)), None
            )
            if elsewhere is not None and not elsewhere.prunable and _exists(elsewhere.path):
                raise ConflictError("branch: checked out in another worktree")
            if _exists(path):
                await _rmtree(path)
            if here is not None or any(e.prunable for e in entries):
                await git(repo, "worktree", "prune", timeout_s=60)
            _mkdir(path.parent)
            if await _branch_sha(repo, branch) is not None:
                await git(repo, "worktree", "add", str(path), branch, timeout_s=ADD_TIMEOUT_S)
            else:
                sha = await resolve_commit(repo, start)
                await git(
                    repo, "worktree", "add", "-b", branch, str(path), sha, timeout_s=ADD_TIMEOUT_S
                )
        return path

    async def clean(self, tree: Path) -> None:
        """Drop uncommitted changes in ``tree``: tracked files back to HEAD, untracked removed.

        Ignored files (a virtual environment, build outputs) stay.
        """
        self._check_ours(tree)
        await git(tree, "reset", "--hard", "--quiet", "HEAD", timeout_s=120)
        await git(tree, "clean", "-fd", "--quiet", timeout_s=120)

    def _check_ours(self, tree: Path) -> None:
        if not self._ours(tree):
            raise BadRequestError("tree: not one of Sophia's worktrees")

    async def find_commit(self, tree: Path, trailer: str, value: str, *, since: str) -> str | None:
        """The newest commit in ``since..HEAD`` with the trailer ``trailer: value``, or None."""
        if not _TRAILER_KEY.fullmatch(trailer):
            raise BadRequestError("trailer: not a valid trailer name")
        _no_option("since", since)
        out = await git(
            tree,
            "log",
            f"--format=%H%x00%(trailers:key={trailer},valueonly,unfold)%x1e",
            f"{since}..HEAD",
            "--",
            timeout_s=60,
        )
        wanted = value.strip()
        for record in out.split("\x1e"):
            sha, _, values = record.strip("\n").partition("\x00")
            if sha and any(v.strip() == wanted for v in values.splitlines()):
                return sha.strip()
        return None

    async def commit(self, tree: Path, message: str, trailers: Mapping[str, str]) -> str:
        """Stage everything (``git add -A``) and commit it with ``message`` and ``trailers``.

        The trailers form the message's last paragraph (``Key: value`` lines). Returns the new
        commit's sha; raises :class:`NothingToCommit` when nothing changed, and
        :class:`~bus.errors.BadRequestError` for a trailer name or value git could not keep.
        """
        self._check_ours(tree)
        lines = []
        for key, val in trailers.items():
            if not _TRAILER_KEY.fullmatch(key):
                raise BadRequestError("trailer: not a valid trailer name")
            if "\n" in val or "\r" in val or not val.strip():
                raise BadRequestError("trailer: a value must be one non-empty line")
            lines.append(f"{key}: {val.strip()}")
        body = message.strip() or "Sophia: changes"
        text = body + ("\n\n" + "\n".join(lines) if lines else "") + "\n"
        await git(tree, "add", "-A", timeout_s=120)
        staged = await _run(tree, ("diff", "--cached", "--quiet", "--no-ext-diff"), timeout_s=120)
        if staged.returncode == 0:
            raise NothingToCommit()
        if staged.returncode != 1:
            raise _failure(("diff",), staged)
        await git(
            tree,
            "commit",
            "--quiet",
            "--no-verify",
            "--no-gpg-sign",
            "--cleanup=whitespace",
            "-F",
            "-",
            input=text.encode("utf-8"),
            timeout_s=120,
        )
        return await self.head(tree)

    async def head(self, tree: Path) -> str:
        """The sha of ``HEAD`` in ``tree``."""
        return (await git(tree, "rev-parse", "--verify", "HEAD", timeout_s=30)).strip()

    async def diff(self, repo_or_tree: Path, base: str, head: str) -> str:
        """The unified diff from ``base`` to ``head`` (no colour, renames found, a/ b/ prefixes).

        Hunk headers carry their line ranges only: the "function context" git appends to them
        is whatever earlier line of the file looks like a heading to it — a line of a private
        key, say — and this diff goes to models and, in the review prompt, into the model cache.
        """
        diff = await git(
            repo_or_tree,
            "diff",
            "--no-color",
            "--no-ext-diff",
            "-M",
            "--src-prefix=a/",
            "--dst-prefix=b/",
            _no_option("base", base),
            _no_option("head", head),
            "--",
            timeout_s=120,
        )
        return _HUNK_CONTEXT.sub(r"\1", diff)

    async def diff_stat(self, repo_or_tree: Path, base: str, head: str) -> str:
        """``git diff --stat`` from ``base`` to ``head``."""
        return await git(
            repo_or_tree,
            "diff",
            "--stat",
            "--no-color",
            "-M",
            _no_option("base", base),
            _no_option("head", head),
            "--",
            timeout_s=120,
        )

    async def changed_files(self, repo_or_tree: Path, base: str, head: str) -> list[str]:
        """Paths added, changed or renamed (new name) from ``base`` to ``head``; not deleted."""
        out = await git(
            repo_or_tree,
            "diff",
            "--name-only",
            "-z",
            "-M",
            "--diff-filter=d",
            _no_option("base", base),
            _no_option("head", head),
            "--",
            timeout_s=120,
        )
        return [p for p in out.split("\x00") if p]

    async def tracked_files(self, tree: Path) -> list[str]:
        """The paths git tracks in ``tree`` (``git ls-files``), for :func:`tasks.repomap`."""
        out = await git(tree, "ls-files", "-z", timeout_s=60)
        return [p for p in out.split("\x00") if p]

    async def show(self, repo: Path, commit: str, path: str) -> str | None:
        """The content of file ``path`` at ``commit``; None when no such file is there."""
        clean = path.strip().replace("\\", "/").removeprefix("./")
        if not clean or clean.startswith("/") or ".." in clean.split("/") or "\x00" in clean:
            return None
        spec = f"{_no_option('commit', commit)}:{clean}"
        found = await _run(repo, ("cat-file", "blob", spec), timeout_s=60)
        if found.returncode != 0:  # no such path there, or a directory
            return None
        return found.stdout.decode("utf-8", errors="replace")

    @asynccontextmanager
    async def scratch(self, repo: Path, commit: str) -> AsyncIterator[Path]:
        """A detached worktree at ``commit`` in a fresh directory under ``home/scratch``.

        It is removed when the block ends, however it ends (cancellation included: the
        cleanup is shielded and bounded).
        """
        repo = _resolved(Path(repo))
        sha = await resolve_commit(repo, commit)
        path = self.scratch_root / uuid.uuid4().hex[:16]
        _mkdir(self.scratch_root)
        try:
            async with self._lock():
                await git(
                    repo, "worktree", "add", "--detach", str(path), sha, timeout_s=ADD_TIMEOUT_S
                )
            yield path
        finally:
            with anyio.CancelScope(shield=True), anyio.move_on_after(_CLEANUP_TIMEOUT_S):
                await self._drop(repo, path)

    async def _drop(self, repo: Path, path: Path) -> None:
        async with self._lock():
            removed = False
            if _is_worktree(path):
                done = await _run(repo, ("worktree", "remove", "--force", str(path)), timeout_s=120)
                removed = done.returncode == 0
            if _exists(path):
                await _rmtree(path)
            if not removed:  # git may still list it: forget what has no directory
                await _run(repo, ("worktree", "prune"), timeout_s=60)

    async def set_branch(self, repo: Path, branch: str, commit: str) -> None:
        """Point ``branch`` at ``commit``, and bring its worktree's files there if it has one.

        The ref moves with ``git update-ref`` checked against its old value (or its absence),
        so a concurrent move fails instead of being lost. Raises
        :class:`~bus.errors.ConflictError` when the branch is checked out in a worktree that
        is not Sophia's (the user's tree is never reset).
        """
        repo = _resolved(Path(repo))
        await _valid_branch(repo, branch)
        sha = await resolve_commit(repo, commit)
        holder = next(
            (
                e
                for e in await _worktrees(repo)
                if e.branch == branch and not e.prunable and _exists(e.path)
            ),
            None,
        )
        if holder is not None and not self._ours(holder.path):
            raise ConflictError("branch: checked out in a worktree that is not Sophia's")
        old = await _branch_sha(repo, branch)
        ref = f"refs/heads/{branch}"
        try:
            await git(
                repo, "update-ref", "-m", "sophia: set branch", ref, sha, old or "", timeout_s=30
            )
        except GitError:
            raise ConflictError("branch: moved while it was being set") from None
        if holder is not None:
            await git(holder.path, "reset", "--hard", "--quiet", sha, timeout_s=120)

    async def remove(self, repo: Path, branch: str, *, delete_branch: bool = False) -> None:
        """Remove the worktree of ``branch`` (uncommitted work is lost) and, if asked, the branch.

        Doing it again is harmless. Raises :class:`~bus.errors.ConflictError` when
        ``delete_branch`` is asked for a branch checked out in a worktree that is not Sophia's.
        """
        repo = _resolved(Path(repo))
        await _valid_branch(repo, branch)
        path = self.path_for(repo, branch)
        async with self._lock():
            for entry in await _worktrees(repo):
                if entry.branch != branch:
                    continue
                if not self._ours(entry.path):
                    if delete_branch and _exists(entry.path) and not entry.prunable:
                        raise ConflictError(
                            "branch: checked out in a worktree that is not Sophia's"
                        )
                    continue
                if _is_worktree(entry.path):
                    await git(repo, "worktree", "remove", "--force", str(entry.path), timeout_s=120)
            if _exists(path):
                await _rmtree(path)
            await git(repo, "worktree", "prune", timeout_s=60)
            if delete_branch and await _branch_sha(repo, branch) is not None:
                await git(repo, "branch", "-D", "--quiet", branch, timeout_s=30)
