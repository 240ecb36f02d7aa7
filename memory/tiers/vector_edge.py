"""L2 embedded: Qdrant Edge, the in-process Qdrant engine, one shard directory per space."""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

import anyio
import anyio.to_thread
import numpy as np
import qdrant_edge as qe

from memory.tiers.base import Query, VectorPoint

_KEYWORD_FIELDS = ("ns", "kind", "path", "dirs", "language", "tags", "model")
#: writes between two flushes. A flush persists the segments, so the write-ahead log can drop
#: its closed 32 MiB files; Qdrant Edge flushes on no timer, and without one the log grows
#: for as long as the process runs (about 4 KiB a write, on disk and in mapped pages).
FLUSH_EVERY_WRITES = 500


def build_filter(query: Query) -> qe.Filter:
    """The Qdrant Edge filter for ``query`` (each condition when set)."""
    must: list[Any] = []
    if query.namespace is not None:
        must.append(qe.FieldCondition(key="ns", match=qe.MatchValue(query.namespace)))
    if query.kinds:
        must.append(qe.FieldCondition(key="kind", match=qe.MatchAny(list(query.kinds))))
    if query.path:
        key = "dirs" if query.path.endswith("/") else "path"
        must.append(qe.FieldCondition(key=key, match=qe.MatchValue(query.path)))
    if query.language:
        must.append(qe.FieldCondition(key="language", match=qe.MatchValue(query.language)))
    if query.tags:
        must.append(qe.FieldCondition(key="tags", match=qe.MatchAny(list(query.tags))))
    if query.since is not None or query.until is not None:
        must.append(
            qe.FieldCondition(
                key="created_at", range=qe.RangeFloat(gte=query.since, lt=query.until)
            )
        )
    return qe.Filter(must=must)


class EdgeVectorTier:
    """One Edge shard under ``root``; calls run in worker threads, writes one at a time.

    Guarantee: an upsert that returned is in the shard's write-ahead log (survives kill -9);
    the log holds at most about :data:`FLUSH_EVERY_WRITES` writes beyond its open files.
    """

    name = "qdrant-edge"

    def __init__(self, root: Path, dim: int, *, search_threads: int | None = None) -> None:
        self.root = root
        self.dim = dim
        self._search_threads = search_threads
        self._shard: qe.EdgeShard | None = None
        self._writes = anyio.CapacityLimiter(1)
        self._unflushed = 0  # writes since the last flush; changed only under ``_writes``

    @property
    def _s(self) -> qe.EdgeShard:
        if self._shard is None:
            raise RuntimeError("l2: shard is not open")
        return self._shard

    async def open(self) -> None:
        await anyio.to_thread.run_sync(self._open)

    def _open(self) -> None:
        config = qe.EdgeConfig(
            vectors={"": qe.EdgeVectorParams(size=self.dim, distance=qe.Distance.Cosine)},
            max_search_threads=self._search_threads,
        )
        if self.root.exists() and any(self.root.iterdir()):
            self._shard = qe.EdgeShard.load(str(self.root), config)
            return
        self.root.mkdir(parents=True, exist_ok=True)
        self._shard = qe.EdgeShard.create(str(self.root), config)
        for field in _KEYWORD_FIELDS:
            self._shard.update(
                qe.UpdateOperation.create_field_index(field, qe.PayloadSchemaType.Keyword)
            )
        self._shard.update(
            qe.UpdateOperation.create_field_index("created_at", qe.PayloadSchemaType.Float)
        )

    async def close(self) -> None:
        if self._shard is not None:
            shard, self._shard = self._shard, None
            await anyio.to_thread.run_sync(_flush_close, shard, limiter=self._writes)

    async def upsert(self, points: list[VectorPoint]) -> None:
        if not points:
            return
        batch = [
            qe.Point(id=p.id, vector=p.vector.astype(np.float32).tolist(), payload=p.payload)
            for p in points
        ]
        await self._write(qe.UpdateOperation.upsert_points(batch))

    async def delete(self, ids: list[str]) -> None:
        if ids:
            await self._write(qe.UpdateOperation.delete_points(list(ids)))

    async def _write(self, op: qe.UpdateOperation) -> None:
        await anyio.to_thread.run_sync(self._apply, op, limiter=self._writes)

    def _apply(self, op: qe.UpdateOperation) -> None:
        shard = self._s
        shard.update(op)
        self._unflushed += 1
        if self._unflushed >= FLUSH_EVERY_WRITES:
            shard.flush()
            self._unflushed = 0

    async def search(self, vector: np.ndarray, query: Query, k: int) -> list[tuple[str, float]]:
        request = qe.QueryRequest(
            limit=k,
            query=qe.Query.Nearest(vector.astype(np.float32).tolist()),
            filter=build_filter(query),
            with_payload=False,
            params=qe.SearchParams(hnsw_ef=max(64, 2 * k)),
        )
        points = await anyio.to_thread.run_sync(self._s.query, request)
        return [(str(p.id), float(p.score)) for p in points]

    async def count(self) -> int:
        return await anyio.to_thread.run_sync(lambda: self._s.info().points_count)

    async def ids(self) -> set[str]:
        return {str(r.id) for r in await anyio.to_thread.run_sync(self._scroll_all, False)}

    async def payloads(self) -> list[dict[str, Any]]:
        """Every stored payload (for audits: which model, what metadata)."""
        records = await anyio.to_thread.run_sync(self._scroll_all, True)
        return [dict(r.payload or {}) for r in records]

    def _scroll_all(self, with_payload: Any) -> list[Any]:
        out: list[Any] = []
        offset = None
        while True:
            page, offset = self._s.scroll(
                qe.ScrollRequest(offset=offset, limit=1000, with_payload=with_payload)
            )
            out.extend(page)
            if offset is None or not page:
                return out

    async def drop(self) -> None:
        await self.close()
        await anyio.to_thread.run_sync(shutil.rmtree, self.root, True)

    async def optimize(self) -> None:
        """Build the HNSW index for what was written since (blocking work, off the loop)."""
        await anyio.to_thread.run_sync(self._s.optimize, limiter=self._writes)


def _flush_close(shard: qe.EdgeShard) -> None:
    shard.flush()
    shard.close()
