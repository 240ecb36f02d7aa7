"""Index a repository: walk it (``.gitignore`` respected), chunk changed files, store them.

Re-indexing touches only files whose content hash changed; files gone since the last run
lose their chunks. Progress goes to a callback after each file.
"""

from __future__ import annotations

import hashlib
import inspect
import os
import time
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import anyio.to_thread
import pathspec

from bus.schemas.memory import IndexProgress, IndexResult
from memory.chunking import chunk_file
from memory.router import Prepared, Router
from memory.tiers.base import FileHashStore

Progress = Callable[[IndexProgress], Awaitable[None] | None]
MAX_FILE_BYTES = 1_048_576
ALWAYS_SKIPPED = {".git", ".hg", ".svn", "__pycache__", ".venv", "node_modules", ".mypy_cache"}


@dataclass(slots=True)
class _Ignore:
    base: str  # directory of the .gitignore, relative to the root ("" for the root)
    spec: pathspec.PathSpec

    def matches(self, rel: str, is_dir: bool) -> bool:
        if self.base and not rel.startswith(self.base + "/"):
            return False
        inner = rel[len(self.base) + 1 :] if self.base else rel
        return self.spec.match_file(inner + ("/" if is_dir else ""))


def walk(root: Path) -> Iterator[str]:
    """Relative POSIX paths of the files under ``root`` that git would not ignore."""
    rules: list[_Ignore] = []
    for current, dirs, files in os.walk(root):
        here = Path(current)
        rel_dir = "" if here == root else here.relative_to(root).as_posix()
        ignore_file = here / ".gitignore"
        if ignore_file.is_file():
            lines = ignore_file.read_text(errors="replace").splitlines()
            rules.append(_Ignore(rel_dir, pathspec.GitIgnoreSpec.from_lines(lines)))
        dirs[:] = sorted(
            d
            for d in dirs
            if d not in ALWAYS_SKIPPED
            and not any(r.matches(_join(rel_dir, d), True) for r in rules)
        )
        for name in sorted(files):
            rel = _join(rel_dir, name)
            if not any(r.matches(rel, False) for r in rules):
                yield rel


def _join(rel_dir: str, name: str) -> str:
    return f"{rel_dir}/{name}" if rel_dir else name


def _read(path: Path) -> tuple[str, str] | None:
    """(sha256, text) of a text file, or None for binaries and huge files."""
    try:
        if path.stat().st_size > MAX_FILE_BYTES or path.is_symlink():
            return None
        data = path.read_bytes()
    except OSError:
        return None
    if b"\0" in data[:8192]:
        return None
    try:
        return hashlib.sha256(data).hexdigest(), data.decode("utf-8")
    except UnicodeDecodeError:
        return None


class Indexer:
    """Keeps a namespace in step with a directory, one changed file at a time."""

    def __init__(self, router: Router, facts: FileHashStore, *, lines: int, overlap: int) -> None:
        self.router = router
        self.facts = facts
        self.lines = lines
        self.overlap = overlap

    async def index(
        self, root: Path, namespace: str, progress: Progress | None = None
    ) -> IndexResult:
        """Index ``root`` into ``namespace``; returns files seen, changed, removed, chunks."""
        started = time.perf_counter()
        paths = await anyio.to_thread.run_sync(lambda: list(walk(root)))
        known = await self.facts.file_hashes(namespace)
        changed = removed = chunks = 0
        for done, rel in enumerate(paths, start=1):
            read = await anyio.to_thread.run_sync(_read, root / rel)
            if read is not None and known.get(rel) != read[0]:
                chunks += await self._replace(namespace, rel, *read)
                changed += 1
            if progress is not None:
                await _report(
                    progress,
                    IndexProgress(namespace=namespace, done=done, total=len(paths), path=rel),
                )
        for rel in set(known) - set(paths):
            await self.router.forget(await self.facts.drop_file(namespace, rel), namespace)
            removed += 1
        if changed or removed:
            await self.router.vectors.optimize()
        seconds = round(time.perf_counter() - started, 3)
        return IndexResult(
            namespace=namespace,
            files=len(paths),
            changed=changed,
            removed=removed,
            chunks=chunks,
            seconds=seconds,
        )

    async def _replace(self, namespace: str, rel: str, digest: str, text: str) -> int:
        """Swap a file's old chunks for new ones; the file hash is recorded last."""
        stale = await self.facts.drop_file(namespace, rel)
        if stale:
            await self.router.forget(stale, namespace)
        pieces = chunk_file(rel, text, lines=self.lines, overlap=self.overlap)
        prepared: list[Prepared] = [
            self.router.prepare(c.text, namespace, "code", c.metadata) for c in pieces
        ]
        if prepared:
            await self.router.write(prepared)
        await self.facts.set_file(namespace, rel, digest)
        return len(prepared)


async def _report(progress: Progress, event: IndexProgress) -> None:
    result = progress(event)
    if inspect.isawaitable(result):
        await result
