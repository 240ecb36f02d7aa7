"""Index a repository: walk it (``.gitignore`` respected), chunk changed files, store them.

A pipeline of stages joined by bounded streams, so the embedder never waits for the rest:
worker threads read and hash files ahead of it and, for a changed file, redact its whole
text, chunk it and shape its records; whole files gather into batches of about
``batch_chunks`` chunks; a batch is embedded (one call, so the model runs full batches
across files) while the batch before it is written: its vectors in one L2 upsert, then
in one L3 transaction its files' old code records out, its records in and its files'
hashes recorded. The vector tier is optimized once, at the end.

Guarantees: a file's hash is recorded only with all its records, after their vectors (a
crash mid-index redoes that file); a re-index reads and hashes every file but embeds and
writes only files whose hash changed; files gone since the last run lose their chunks.
Progress goes to a callback once per file as its fate is settled (``done`` counts 1 to
``total``; a changed file counts once its batch is written).
"""

from __future__ import annotations

import hashlib
import inspect
import os
import time
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import anyio
import anyio.to_thread
import numpy as np
import pathspec
from anyio.streams.memory import MemoryObjectReceiveStream, MemoryObjectSendStream

from bus.schemas.memory import IndexProgress, IndexResult
from memory.chunking import chunk_file
from memory.redact import redact
from memory.router import Prepared, Router
from memory.tiers.base import FileBatch, FileHashStore

Progress = Callable[[IndexProgress], Awaitable[None] | None]
MAX_FILE_BYTES = 1_048_576
ALWAYS_SKIPPED = {".git", ".hg", ".svn", "__pycache__", ".venv", "node_modules", ".mypy_cache"}
BATCH_CHUNKS = 128  # chunks per embed call and per L3 transaction (whole files, so ~)
READ_GROUP = 16  # files per worker-thread hop while reading ahead
FILES_AHEAD = 64  # files read ahead of the batcher at most


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


def read_file(path: Path) -> tuple[str, str] | None:
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


@dataclass(slots=True)
class _File:
    """One file as read: its records when it changed, None when there is nothing to do."""

    path: str
    digest: str = ""
    items: list[Prepared] | None = None


@dataclass(slots=True)
class _Batch:
    files: list[_File] = field(default_factory=list)
    items: list[Prepared] = field(default_factory=list)

    def add(self, file: _File) -> None:
        self.files.append(file)
        self.items.extend(file.items or ())


_Embedded = tuple[_Batch, np.ndarray]


def _first(group: BaseExceptionGroup) -> BaseException:
    """The first error in ``group`` (nested groups opened)."""
    inner = group.exceptions[0]
    return _first(inner) if isinstance(inner, BaseExceptionGroup) else inner


@dataclass(slots=True)
class _Run:
    """Counters of one index run, and its progress callback (every stage runs on one loop)."""

    namespace: str
    total: int
    progress: Progress | None
    started: float = field(default_factory=time.perf_counter)
    done: int = 0
    changed: int = 0
    chunks: int = 0

    async def settled(self, path: str) -> None:
        self.done += 1
        if self.progress is None:
            return
        event = IndexProgress(
            namespace=self.namespace,
            done=self.done,
            total=self.total,
            path=path,
            chunks=self.chunks,
            seconds=round(time.perf_counter() - self.started, 3),
        )
        result = self.progress(event)
        if inspect.isawaitable(result):
            await result


class Indexer:
    """Keeps a namespace in step with a directory (see the module docstring)."""

    def __init__(
        self,
        router: Router,
        facts: FileHashStore,
        *,
        lines: int,
        overlap: int,
        batch_chunks: int = BATCH_CHUNKS,
    ) -> None:
        self.router = router
        self.facts = facts
        self.lines = lines
        self.overlap = overlap
        self.batch_chunks = batch_chunks

    async def index(
        self, root: Path, namespace: str, progress: Progress | None = None
    ) -> IndexResult:
        """Index ``root`` into ``namespace``; returns files seen, changed, removed, chunks."""
        paths = await anyio.to_thread.run_sync(lambda: list(walk(root)))
        known = await self.facts.file_hashes(namespace)
        run = _Run(namespace, len(paths), progress)
        read_send, read_recv = anyio.create_memory_object_stream[_File](FILES_AHEAD)
        embed_send, embed_recv = anyio.create_memory_object_stream[_Batch](0)
        write_send, write_recv = anyio.create_memory_object_stream[_Embedded](0)
        try:
            async with anyio.create_task_group() as tg:
                tg.start_soon(self._read_ahead, root, paths, known, namespace, read_send)
                tg.start_soon(self._gather, read_recv, embed_send, run)
                tg.start_soon(self._embed, embed_recv, write_send)
                tg.start_soon(self._write, write_recv, run)
        except BaseExceptionGroup as group:  # one stage failed, the others were cancelled
            raise _first(group) from None
        gone = sorted(set(known) - set(paths))
        if gone:
            dropped = await self.facts.replace_files(FileBatch(namespace, drop=gone))
            await self.router.forget(dropped, namespace)
        if run.changed or gone:
            await self.router.vectors.optimize()
        return IndexResult(
            namespace=namespace,
            files=len(paths),
            changed=run.changed,
            removed=len(gone),
            chunks=run.chunks,
            seconds=round(time.perf_counter() - run.started, 3),
        )

    async def _read_ahead(
        self,
        root: Path,
        paths: list[str],
        known: dict[str, str],
        namespace: str,
        out: MemoryObjectSendStream[_File],
    ) -> None:
        """Read files in worker threads, a group per hop, at most FILES_AHEAD ahead."""
        async with out:
            for start in range(0, len(paths), READ_GROUP):
                group = paths[start : start + READ_GROUP]
                files = await anyio.to_thread.run_sync(self._load, root, group, known, namespace)
                for file in files:
                    await out.send(file)

    def _load(
        self, root: Path, paths: list[str], known: dict[str, str], namespace: str
    ) -> list[_File]:
        """Hash each file; chunk and shape the records of those that changed (no I/O but
        reading). The whole text is redacted first, so a secret cut by chunking is caught."""
        files: list[_File] = []
        for rel in paths:
            read = read_file(root / rel)
            if read is None or known.get(rel) == read[0]:
                files.append(_File(rel))
                continue
            clean, _ = redact(read[1])
            pieces = chunk_file(rel, clean, lines=self.lines, overlap=self.overlap)
            items = [self.router.prepare(c.text, namespace, "code", c.metadata) for c in pieces]
            files.append(_File(rel, read[0], items))
        return files

    async def _gather(
        self,
        files: MemoryObjectReceiveStream[_File],
        out: MemoryObjectSendStream[_Batch],
        run: _Run,
    ) -> None:
        """Settle unchanged files; gather changed ones, whole, into batches."""
        batch = _Batch()
        async with files, out:
            async for file in files:
                if file.items is None:
                    await run.settled(file.path)
                    continue
                batch.add(file)
                if len(batch.items) >= self.batch_chunks:
                    await out.send(batch)
                    batch = _Batch()
            if batch.files:
                await out.send(batch)

    async def _embed(
        self,
        batches: MemoryObjectReceiveStream[_Batch],
        out: MemoryObjectSendStream[_Embedded],
    ) -> None:
        """Embed one batch while the writer stores the one before."""
        async with batches, out:
            async for batch in batches:
                await out.send((batch, await self.router.embed(batch.items)))

    async def _write(self, batches: MemoryObjectReceiveStream[_Embedded], run: _Run) -> None:
        """Vectors first, then records and hashes in one transaction, then stale vectors out."""
        async with batches:
            async for batch, vectors in batches:
                await self.router.stage(batch.items, vectors)
                records = [p.record for p in batch.items]
                dropped = await self.facts.replace_files(
                    FileBatch(
                        run.namespace,
                        drop=[f.path for f in batch.files],
                        records=records,
                        hashes={f.path: f.digest for f in batch.files},
                    )
                )
                await self.router.forget(dropped, run.namespace, frozenset(r.id for r in records))
                for file in batch.files:
                    run.changed += 1
                    run.chunks += len(file.items or ())
                    await run.settled(file.path)
