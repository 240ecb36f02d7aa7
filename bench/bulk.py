"""Fill engines with N chunks fast: real httpx chunks embedded for real, plus synthetic ones.

A synthetic chunk is a real chunk's text marked as a variant under its own path, with a
vector drawn near the real chunk's vector (cosine about 0.6-0.9), so the store keeps the
clustered shape of real embeddings and real keyword statistics. :func:`build` prepares the
chunks once (redaction and keyword text cost milliseconds each); :func:`load` writes them
through the same tier calls as the router (L3 rows with keyword text, L2 points with
payloads), in batches, so every backend set gets the same data.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import numpy as np

from bench.corpus import load_corpus, queries
from memory import keywords
from memory.batcher import BatchingEmbedder
from memory.chunking import Chunk
from memory.engine import MemoryEngine
from memory.router import Prepared, Router, payload
from memory.tiers.base import Record, VectorPoint

BATCH = 2000


@dataclass(slots=True)
class Store:
    """Prepared records in write batches with their vectors, and the evaluation queries."""

    blocks: list[tuple[list[Record], np.ndarray]]
    queries: list[str]
    synthetic: int
    seconds: float

    @property
    def ids(self) -> list[str]:
        return [r.id for records, _ in self.blocks for r in records]

    @property
    def matrix(self) -> np.ndarray:
        return np.vstack([vectors for _, vectors in self.blocks])

    @property
    def chunks(self) -> int:
        return sum(len(records) for records, _ in self.blocks)


async def build(router: Router, embedder: BatchingEmbedder, total: int, seed: int = 7) -> Store:
    """``total`` chunks for namespace "bench", prepared by ``router`` (no tier is written)."""
    started = time.perf_counter()
    corpus = load_corpus()
    real = [router.prepare(c.text, "bench", "code", c.metadata) for c in corpus]
    real_vectors = await embedder.embed(
        [keywords.embed_input(p.record.text, p.record.metadata) for p in real]
    )
    rng = np.random.default_rng(seed)
    blocks = []
    for start in range(0, total, BATCH):
        count = min(BATCH, total - start)
        prepared, vectors = _block(router, corpus, real, real_vectors, start, count, rng)
        blocks.append(([p.record for p in prepared], vectors))
    seconds = round(time.perf_counter() - started, 1)
    return Store(blocks, queries(corpus, 1000), max(0, total - len(real)), seconds)


async def load(engine: MemoryEngine, store: Store) -> float:
    """Write ``store`` into ``engine``'s L3 and L2 in batches; returns the seconds it took."""
    started = time.perf_counter()
    for records, vectors in store.blocks:
        await engine.tiers.facts.insert_many(records)
        points = [VectorPoint(r.id, v, payload(r)) for r, v in zip(records, vectors, strict=True)]
        await engine.vectors.upsert(points)
    await engine.vectors.optimize()
    return round(time.perf_counter() - started, 1)


def _block(
    router: Router,
    corpus: list[Chunk],
    real: list[Prepared],
    real_vectors: np.ndarray,
    start: int,
    count: int,
    rng: np.random.Generator,
) -> tuple[list[Prepared], np.ndarray]:
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
