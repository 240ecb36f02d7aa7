"""One vector space per embedding model: detect a model change, re-embed, reconcile.

The L2 collection name carries the model id, so a new model starts an empty space; the
items are re-embedded into it from L3 (the source of truth) before the engine serves, and
the old spaces are dropped only after — never a mixed vector space. A crash between the
L3 and L2 writes is repaired the same way: vectors missing from L2 are re-embedded,
vectors whose item is gone from L3 are deleted.
"""

from __future__ import annotations

import logging
import shutil

import anyio.to_thread

from memory import keys
from memory.batcher import BatchingEmbedder
from memory.router import payload
from memory.tiers.base import MetaStore, Record, RecordStore, VectorPoint, VectorTier
from memory.tiers.select import Tiers, space_name
from memory.views import item_vectors

log = logging.getLogger("sophia.memory.spaces")
PAGE = 256


async def ensure_space(
    tiers: Tiers, embedder: BatchingEmbedder, purpose: str
) -> tuple[VectorTier, int]:
    """Open the current model's space for ``purpose``; return it and how many were re-embedded."""
    model = embedder.model_id
    vectors = tiers.vectors(purpose, model, embedder.dim)
    await vectors.open()
    try:
        count = 0
        if purpose == "items":
            count = await _sync_items(tiers.facts, tiers.facts, vectors, embedder)
        await tiers.facts.meta_set(keys.space_model(purpose), model)
        await _drop_stale(tiers, purpose, space_name(purpose, model))
    except BaseException:
        await vectors.close()
        raise
    return vectors, count


async def _sync_items(
    records: RecordStore, meta: MetaStore, vectors: VectorTier, embedder: BatchingEmbedder
) -> int:
    stored = await meta.meta_get(keys.space_model("items"))
    counts = await records.counts("")
    expected = sum(n for (_, kind), n in counts.items() if kind != "session")
    if stored == embedder.model_id and expected == await vectors.count():
        return 0
    if stored is not None and stored != embedder.model_id:
        log.warning("memory_model_changed", extra={"old": stored, "new": embedder.model_id})
    present = await vectors.ids()
    seen: set[str] = set()
    done = 0
    after = ""
    while page := await records.scan(after, PAGE):
        after = page[-1].id
        todo = [r for r in page if r.model]
        seen.update(r.id for r in todo)
        missing = [r for r in todo if r.id not in present]
        done += await _embed_into(vectors, embedder, missing)
    orphans = list(present - seen)
    await vectors.delete(orphans)
    await records.relabel(embedder.model_id)
    if done or orphans:
        await vectors.optimize()
        log.info("memory_space_synced", extra={"embedded": done, "orphans": len(orphans)})
    return done


async def _embed_into(
    vectors: VectorTier, embedder: BatchingEmbedder, records: list[Record]
) -> int:
    if not records:
        return 0
    matrix = await item_vectors(embedder.embed, [(r.text, r.metadata) for r in records])
    for r in records:
        r.model = embedder.model_id
    await vectors.upsert(
        [VectorPoint(r.id, row, payload(r)) for r, row in zip(records, matrix, strict=True)]
    )
    return len(records)


async def _drop_stale(tiers: Tiers, purpose: str, keep: str) -> None:
    """Remove the spaces of earlier models for ``purpose``."""
    prefix = f"sophia_{purpose}_"
    cfg = tiers.settings
    if cfg.qdrant_url.startswith(":"):
        return  # qdrant-client's in-memory mode keeps nothing between runs
    if cfg.qdrant_url:
        from memory.tiers.vector_qdrant import list_collections  # only with a Qdrant server

        for name in await list_collections(cfg.qdrant_url, cfg.qdrant_api_key, prefix):
            if name != keep:
                stale = tiers.vectors_named(name)
                await stale.open()
                await stale.drop()
        return
    root = tiers.vector_root
    if root.is_dir():
        for path in root.iterdir():
            if path.name.startswith(prefix) and path.name != keep:
                await anyio.to_thread.run_sync(shutil.rmtree, path, True)
