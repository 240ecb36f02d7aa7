"""Fill an engine with N chunks fast: real httpx chunks embedded for real, plus synthetic ones.

A synthetic chunk is a real chunk's text marked as a variant under its own path, with a
vector drawn near the real chunk's vector (cosine about 0.6-0.9), so the store keeps the
clustered shape of real embeddings and real keyword statistics. Written through the same
tier calls as the router (L3 rows with keyword text, L2 points with payloads).
"""

from __future__ import annotations

import time

import numpy as np

from bench.corpus import load_corpus, queries
from memory import keywords
from memory.engine import MemoryEngine
from memory.router import payload
from memory.tiers.base import VectorPoint

BATCH = 2000


async def fill(engine: MemoryEngine, total: int, seed: int = 7) -> dict:
    """Store ``total`` chunks in namespace "bench"; return ids, vectors and queries."""
    started = time.perf_counter()
    corpus = load_corpus()
    router = engine.router
    real = [router.prepare(c.text, "bench", "code", c.metadata) for c in corpus]
    real_vectors = await engine.embedder.embed(
        [keywords.embed_input(p.record.text, p.record.metadata) for p in real]
    )
    rng = np.random.default_rng(seed)
    ids: list[str] = []
    blocks: list[np.ndarray] = []
    for start in range(0, total, BATCH):
        count = min(BATCH, total - start)
        prepared, vectors = _block(router, corpus, real, real_vectors, start, count, rng)
        await engine.tiers.facts.insert_many([p.record for p in prepared])
        points = [
            VectorPoint(p.record.id, v, payload(p.record))
            for p, v in zip(prepared, vectors, strict=True)
        ]
        await engine.vectors.upsert(points)
        ids.extend(p.record.id for p in prepared)
        blocks.append(vectors)
    await engine.vectors.optimize()
    return {
        "chunks": total,
        "synthetic": max(0, total - len(real)),
        "ids": ids,
        "matrix": np.vstack(blocks),
        "queries": queries(corpus),
        "seconds": round(time.perf_counter() - started, 1),
    }


def _block(router, corpus, real, real_vectors, start, count, rng):  # type: ignore[no-untyped-def]
    prepared = []
    vectors = np.empty((count, real_vectors.shape[1]), dtype=np.float32)
    for offset in range(count):
        n = start + offset
        base = n % len(real)
        if n < len(real):
            prepared.append(real[n])
            vectors[offset] = real_vectors[n]
            continue
        chunk = corpus[base]
        meta = {**chunk.metadata, "path": f"variants/v{n // len(real)}/{chunk.path}"}
        prepared.append(router.prepare(f"{chunk.text}\n# variant {n}", "bench", "code", meta))
        noise = rng.standard_normal(real_vectors.shape[1]).astype(np.float32)
        noise *= rng.uniform(0.5, 1.3) / np.linalg.norm(noise)
        vector = real_vectors[base] + noise
        vectors[offset] = vector / np.linalg.norm(vector)
    return prepared, vectors
