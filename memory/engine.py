"""The memory engine: one async facade over embedder, tiers, router, indexer and cache.

``async with MemoryEngine(settings) as engine:`` opens every tier, checks the vector
space against the embedding model (re-embedding from L3 when the model changed, so spaces
never mix) and closes everything on exit. Methods take and return the wire Structs of
``bus.schemas.memory``; bad input raises BadRequestError naming the field.
"""

from __future__ import annotations

import logging
import time
from contextlib import AsyncExitStack
from pathlib import Path
from types import TracebackType

import anyio.to_thread
import msgspec

from bus.errors import BadRequestError, NotFoundError
from bus.schemas import memory as s
from memory import validation as v
from memory.batcher import BatchingEmbedder
from memory.cache import SemanticCache
from memory.config import MemorySettings, load_settings
from memory.embedder import Embedder
from memory.indexer import Indexer, Progress
from memory.redact import redact, redact_value
from memory.router import Router
from memory.spaces import ensure_space
from memory.tiers.base import Query
from memory.tiers.select import Tiers, select

log = logging.getLogger("sophia.memory.engine")


class MemoryEngine:
    """Coding memory across four tiers (see DESIGN.md §4). Not usable before ``open``."""

    def __init__(self, settings: MemorySettings | None = None, *, embedder: Embedder | None = None):
        self.settings = settings or load_settings()
        self._embedder = embedder
        self._stack: AsyncExitStack | None = None
        self.reembedded = 0

    async def __aenter__(self) -> MemoryEngine:
        await self.open()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.close()

    async def open(self) -> None:
        """Open every tier and the embedder. Raises UnavailableError or ConfigError."""
        cfg = self.settings
        self._stack = stack = AsyncExitStack()
        try:
            if self._embedder is None:
                self._embedder = await anyio.to_thread.run_sync(self._make_embedder)
            self.embedder = BatchingEmbedder(
                self._embedder, max_batch=cfg.embed_max_batch, max_wait_ms=cfg.embed_max_wait_ms
            )
            self.tiers = tiers = select(cfg)
            for tier in (tiers.hot, tiers.facts, tiers.archive):
                await tier.open()
                stack.push_async_callback(tier.close)
            self.vectors, self.reembedded = await ensure_space(tiers, self.embedder, "items")
            stack.push_async_callback(self.vectors.close)
            cache_vectors, _ = await ensure_space(tiers, self.embedder, "cache")
            stack.push_async_callback(cache_vectors.close)
        except BaseException:
            await stack.aclose()
            raise
        self._wire(tiers, cache_vectors)
        log.info(
            "memory_open", extra={"model": self.embedder.model_id, "reembedded": self.reembedded}
        )

    def _make_embedder(self) -> Embedder:
        cfg = self.settings
        return Embedder(
            device=cfg.embed_device,
            threads=cfg.embed_threads,
            run_batch=cfg.embed_run_batch,
            quantize_dir=cfg.model_cache_path if cfg.embed_quantize else None,
            max_tokens=cfg.embed_max_tokens,
        )

    def _wire(self, tiers: Tiers, cache_vectors) -> None:  # type: ignore[no-untyped-def]
        cfg = self.settings
        self.router = Router(
            hot=tiers.hot,
            vectors=self.vectors,
            facts=tiers.facts,
            archive=tiers.archive,
            embedder=self.embedder,
            archive_bytes=cfg.archive_bytes,
            l1_ttl_s=cfg.l1_ttl_s,
        )
        self.indexer = Indexer(
            self.router, tiers.facts, lines=cfg.chunk_lines, overlap=cfg.chunk_overlap
        )
        self.cache = SemanticCache(
            hot=tiers.hot,
            vectors=cache_vectors,
            facts=tiers.facts,
            embedder=self.embedder,
            threshold=cfg.cache_threshold,
            ttl_s=cfg.cache_ttl_s,
        )

    async def close(self) -> None:
        """Flush and close every tier (idempotent)."""
        if self._stack is not None:
            stack, self._stack = self._stack, None
            with anyio.CancelScope(shield=True):
                await stack.aclose()

    # -- items ---------------------------------------------------------------

    async def store(self, req: s.StoreRequest) -> s.StoreResult:
        """Remember one item. Raises BadRequestError for bad input."""
        cfg = self.settings
        text = v.text(req.text, "text", cfg.max_text_bytes)
        prepared = self.router.prepare(
            text, v.namespace(req.namespace), v.kind(req.kind), v.mapping(req.metadata, "metadata")
        )
        if not prepared.record.text.strip():
            raise BadRequestError("text: nothing left after secret redaction")
        [created] = await self.router.write([prepared])
        record = prepared.record
        tiers = ["l3"] + (["l2"] if record.model else []) + (["l4"] if record.archived else [])
        return s.StoreResult(
            id=record.id, created=created, tiers=tiers, redactions=prepared.redactions
        )

    async def search(self, req: s.SearchRequest) -> s.SearchResult:
        """Hybrid search over one namespace. Raises BadRequestError for bad input."""
        v.text(req.query, "query", 8192)
        v.k(req.k)
        kinds = (
            [v.kind(kind, "kinds") for kind in req.kinds] if isinstance(req.kinds, list) else None
        )
        if kinds is None:
            raise BadRequestError("kinds: must be a list of kinds")
        if req.mode not in ("hybrid", "vector", "keyword"):
            raise BadRequestError("mode: must be one of hybrid, vector, keyword")
        f = req.filters if isinstance(req.filters, s.SearchFilters) else s.SearchFilters()
        query = Query(
            namespace=v.namespace(req.namespace),
            kinds=kinds,
            path=f.path,
            language=f.language,
            tags=list(f.tags),
            since=f.since,
            until=f.until,
        )
        return s.SearchResult(hits=await self.router.search(req, query))

    async def get(self, req: s.GetRequest) -> s.Item:
        """One item by id (its whole body). Raises NotFoundError."""
        item = await self.router.get(v.ident(req.id))
        if item is None:
            raise NotFoundError(f"id: no item {req.id}")
        return item

    async def delete(self, req: s.DeleteRequest) -> s.DeleteResult:
        """Forget one item in every tier; deleting a missing id is not an error."""
        ident = v.ident(req.id)
        return s.DeleteResult(id=ident, deleted=await self.router.delete(ident))

    async def index(self, req: s.IndexRequest, progress: Progress | None = None) -> s.IndexResult:
        """Index a directory on this machine. Raises BadRequestError when it is not one."""
        root = await anyio.to_thread.run_sync(_directory, v.text(req.path, "path", 4096))
        namespace = v.namespace(req.namespace or root.name)
        return await self.indexer.index(root, namespace, progress)

    async def stats(self, req: s.StatsRequest | None = None) -> s.Stats:
        """Counts per kind and tier, model and device, hit counters."""
        namespace = req.namespace if req else ""
        counts = await self.tiers.facts.counts(namespace)
        by_kind: dict[str, int] = {}
        for (_, kind), n in counts.items():
            by_kind[kind] = by_kind.get(kind, 0) + n
        t = self.tiers
        return s.Stats(
            model=self.embedder.model_id,
            device=self.embedder.embedder.device,
            dim=self.embedder.dim,
            items=sum(by_kind.values()),
            by_kind=by_kind,
            namespaces=sorted({ns for ns, _ in counts}),
            tiers=[
                s.TierStats(name="l1", backend=t.hot.name, items=await t.hot.count()),
                s.TierStats(name="l2", backend=self.vectors.name, items=await self.vectors.count()),
                s.TierStats(name="l3", backend=t.facts.name, items=sum(counts.values())),
                s.TierStats(name="l4", backend=t.archive.name, items=await t.archive.count()),
            ],
            cache_hits=self.cache.hits,
            cache_misses=self.cache.misses,
            l1_hits=self.router.l1_hits,
            l1_misses=self.router.l1_misses,
        )

    # -- sessions ------------------------------------------------------------

    async def session_save(self, req: s.SessionSaveRequest) -> s.SessionSaveResult:
        """Save a session's context (redacted); the version it replaces goes to L4."""
        cfg = self.settings
        sid, namespace = v.text(req.session_id, "session_id", 256), v.namespace(req.namespace)
        summary, n1 = redact(v.text(req.summary, "summary", cfg.max_text_bytes, allow_empty=True))
        context, n2 = redact_value(v.mapping(req.context, "context"))
        body = msgspec.json.encode({"summary": summary, "context": context}).decode()
        if len(body) > cfg.max_text_bytes:
            raise BadRequestError(f"context: longer than {cfg.max_text_bytes} bytes")
        facts = self.tiers.facts
        previous = await facts.session_get(namespace, sid)
        if previous is not None:
            key = f"sessions/{namespace}/{sid}/{previous[1]}"
            await self.tiers.archive.put(key, previous[0].encode())
        now = time.time()
        version = await facts.session_put(namespace, sid, body, now)
        cached = msgspec.json.encode([body, version, now])
        await self.tiers.hot.set(f"session:{namespace}:{sid}", cached, cfg.l1_ttl_s)
        return s.SessionSaveResult(session_id=sid, version=version, redactions=n1 + n2)

    async def session_load(self, req: s.SessionLoadRequest) -> s.Session:
        """The latest saved context of a session, or ``found=False``."""
        sid, namespace = v.text(req.session_id, "session_id", 256), v.namespace(req.namespace)
        key = f"session:{namespace}:{sid}"
        raw = await self.tiers.hot.get(key)
        row = (
            tuple(msgspec.json.decode(raw))
            if raw
            else await self.tiers.facts.session_get(namespace, sid)
        )
        if row is None:
            return s.Session(session_id=sid, namespace=namespace, found=False)
        body, version, saved_at = row
        data = msgspec.json.decode(body)
        if raw is None:
            await self.tiers.hot.set(
                key, msgspec.json.encode([body, version, saved_at]), self.settings.l1_ttl_s
            )
        return s.Session(
            session_id=sid,
            namespace=namespace,
            summary=data.get("summary", ""),
            context=data.get("context", {}),
            version=version,
            saved_at=saved_at,
        )

    # -- model-call cache ----------------------------------------------------

    async def cache_lookup(self, req: s.CacheLookupRequest) -> s.CacheLookupResult:
        """A cached response for this prompt, exact or by meaning."""
        if req.threshold is not None and not 0 < req.threshold <= 1:
            raise BadRequestError("threshold: must be greater than 0 and at most 1")
        model = v.text(req.model, "model", 256)
        prompt = v.text(req.prompt, "prompt", self.settings.max_text_bytes)
        return await self.cache.lookup(model, prompt, req.threshold)

    async def cache_put(self, req: s.CachePutRequest) -> s.CachePutResult:
        """Cache a model's response to a prompt."""
        if req.ttl_s is not None and not 0 < req.ttl_s <= 365 * 86400:
            raise BadRequestError("ttl_s: must be greater than 0 and at most a year")
        model = v.text(req.model, "model", 256)
        prompt = v.text(req.prompt, "prompt", self.settings.max_text_bytes)
        response = v.text(req.response, "response", self.settings.max_text_bytes, allow_empty=True)
        return await self.cache.put(model, prompt, response, req.ttl_s)


def _directory(path: str) -> Path:
    root = Path(path).expanduser().resolve()
    if not root.is_dir():
        raise BadRequestError("path: not a directory on the memory agent's machine")
    return root
