"""L2 production: a Qdrant server through qdrant-client (its local mode serves the tests)."""

from __future__ import annotations

from typing import Any

import numpy as np
from qdrant_client import AsyncQdrantClient
from qdrant_client import models as qm

from bus.errors import UnavailableError
from memory.tiers.base import Query, VectorPoint

_KEYWORD_FIELDS = ("ns", "kind", "path", "dirs", "language", "tags", "model")


def build_filter(query: Query) -> qm.Filter:
    """The qdrant-client filter for ``query`` (each condition when set)."""
    must: list[Any] = []
    if query.namespace is not None:
        must.append(qm.FieldCondition(key="ns", match=qm.MatchValue(value=query.namespace)))
    if query.kinds:
        must.append(qm.FieldCondition(key="kind", match=qm.MatchAny(any=list(query.kinds))))
    if query.path:
        key = "dirs" if query.path.endswith("/") else "path"
        must.append(qm.FieldCondition(key=key, match=qm.MatchValue(value=query.path)))
    if query.language:
        must.append(qm.FieldCondition(key="language", match=qm.MatchValue(value=query.language)))
    if query.tags:
        must.append(qm.FieldCondition(key="tags", match=qm.MatchAny(any=list(query.tags))))
    if query.since is not None or query.until is not None:
        must.append(
            qm.FieldCondition(key="created_at", range=qm.Range(gte=query.since, lt=query.until))
        )
    return qm.Filter(must=must)


class QdrantVectorTier:
    """One collection on a Qdrant server (``url``) or in qdrant-client's local mode.

    Raises UnavailableError when the server cannot be reached at open.
    """

    name = "qdrant"

    def __init__(
        self,
        collection: str,
        dim: int,
        *,
        url: str | None = None,
        api_key: str | None = None,
        location: str | None = None,
        path: str | None = None,
        timeout_s: float = 10.0,
    ) -> None:
        self.collection = collection
        self.dim = dim
        self._args: dict[str, Any] = {"timeout": int(max(1, timeout_s))}
        self._local = not url  # local mode: exact search, payload indexes have no effect
        if url:
            self._args.update(url=url, api_key=api_key or None)
        elif path:
            self._args["path"] = path
        else:
            self._args["location"] = location or ":memory:"
        self._client: AsyncQdrantClient | None = None

    @property
    def _c(self) -> AsyncQdrantClient:
        if self._client is None:
            raise RuntimeError("l2: qdrant client is not open")
        return self._client

    async def open(self) -> None:
        self._client = AsyncQdrantClient(**self._args)
        try:
            exists = await self._client.collection_exists(self.collection)
        except Exception:  # any transport failure means the same to the caller
            await self._client.close()
            self._client = None
            raise UnavailableError("l2: qdrant does not answer") from None
        if not exists:
            await self._create()

    async def _create(self) -> None:
        await self._c.create_collection(
            self.collection,
            vectors_config=qm.VectorParams(size=self.dim, distance=qm.Distance.COSINE),
        )
        if self._local:
            return
        for field in _KEYWORD_FIELDS:
            await self._c.create_payload_index(self.collection, field, qm.PayloadSchemaType.KEYWORD)
        await self._c.create_payload_index(
            self.collection, "created_at", qm.PayloadSchemaType.FLOAT
        )

    async def close(self) -> None:
        if self._client is not None:
            await self._client.close()
            self._client = None

    async def upsert(self, points: list[VectorPoint]) -> None:
        if not points:
            return
        batch = [
            qm.PointStruct(id=p.id, vector=p.vector.astype(np.float32).tolist(), payload=p.payload)
            for p in points
        ]
        await self._c.upsert(self.collection, batch, wait=True)

    async def delete(self, ids: list[str]) -> None:
        if ids:
            selector = qm.PointIdsList(points=list(ids))
            await self._c.delete(self.collection, selector, wait=True)

    async def search(self, vector: np.ndarray, query: Query, k: int) -> list[tuple[str, float]]:
        conditions = build_filter(query)
        reply = await self._c.query_points(
            self.collection,
            query=vector.astype(np.float32).tolist(),
            # no filter rather than an empty one: local mode tests every point against a
            # filter in Python, even one without conditions (~0.8 s at 100k points)
            query_filter=conditions if conditions.must else None,
            limit=k,
            with_payload=False,
            search_params=None if self._local else qm.SearchParams(hnsw_ef=max(64, 2 * k)),
        )
        return [(str(p.id), float(p.score)) for p in reply.points]

    async def count(self) -> int:
        return (await self._c.count(self.collection, exact=True)).count

    async def ids(self) -> set[str]:
        return {str(r.id) for r in await self._scroll_all(False)}

    async def payloads(self) -> list[dict[str, Any]]:
        """Every stored payload (for audits: which model, what metadata)."""
        return [dict(r.payload or {}) for r in await self._scroll_all(True)]

    async def _scroll_all(self, with_payload: Any) -> list[Any]:
        out: list[Any] = []
        offset = None
        while True:
            page, offset = await self._c.scroll(
                self.collection, offset=offset, limit=1000, with_payload=with_payload
            )
            out.extend(page)
            if offset is None or not page:
                return out

    async def drop(self) -> None:
        await self._c.delete_collection(self.collection)
        await self.close()

    async def optimize(self) -> None:
        """The server indexes on its own; nothing to do."""
        return None


async def list_collections(url: str, api_key: str, prefix: str) -> list[str]:
    """Names of the collections on the server at ``url`` that start with ``prefix``."""
    client = AsyncQdrantClient(url=url, api_key=api_key or None, timeout=10)
    try:
        reply = await client.get_collections()
    finally:
        await client.close()
    return [c.name for c in reply.collections if c.name.startswith(prefix)]
