"""Indexing speed: a first index of a real repository, an unchanged re-index, and the
embedder alone on the same chunks, in one run (so a loaded machine slows both alike).

The repository is an installed package (anyio by default: 47 files, about 1,200 chunks).
The baseline embeds exactly what the index embeds — every chunk's text and, for a Python
definition, its summary view (:func:`memory.views.item_vectors`) — through the same
embedder (same thread count), once before the index and once after; ``ratio`` is the index's
chunks/s over the baseline's mean, 1.0 meaning indexing runs at the speed of the embedder.
Prints one JSON object.

Run: python bench/indexing.py [--package anyio] [--threads 2] [--backend embedded|production]
``production``: PostgreSQL 15 and redis-server started as the tests start them
(:mod:`bench.servers`), qdrant-client in its local mode.
"""

from __future__ import annotations

import argparse
import importlib
import importlib.metadata
import json
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from pathlib import Path
from typing import Any

import anyio

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bus.schemas import memory as s
from memory.chunking import chunk_file
from memory.config import MemorySettings
from memory.embedder import Embedder
from memory.engine import MemoryEngine
from memory.indexer import read_file, walk
from memory.redact import redact
from memory.router import Prepared, Router
from memory.views import summary


def package_root(name: str) -> Path:
    return Path(importlib.import_module(name).__file__ or "").parent


@contextmanager
def backend_settings(backend: str, home: str, threads: int) -> Iterator[MemorySettings]:
    """Settings for the embedded tiers, or for servers started here and stopped after."""
    base: dict[str, Any] = {"home": home, "embed_threads": threads}
    with ExitStack() as stack:
        if backend == "production":
            from bench.servers import postgres, redis

            base.update(
                postgres_dsn=stack.enter_context(postgres()),
                redis_url=stack.enter_context(redis()),
                qdrant_url=":memory:",
            )
        yield MemorySettings(**base)


def prepared(router: Router, root: Path, namespace: str) -> list[Prepared]:
    """The records the indexer writes for ``root`` (same walk, redaction, chunker)."""
    items: list[Prepared] = []
    for rel in walk(root):
        read = read_file(root / rel)
        if read is None:
            continue
        for c in chunk_file(rel, redact(read[1])[0]):
            items.append(router.prepare(c.text, namespace, "code", c.metadata))
    return items


async def embedder_alone(engine: MemoryEngine, items: list[Prepared]) -> dict[str, float]:
    """Chunks/s of the embedder on what the index embeds for ``items``, nothing written."""
    started = time.perf_counter()
    await engine.router.embed(items)
    seconds = time.perf_counter() - started
    return {"seconds": round(seconds, 2), "chunks_per_s": round(len(items) / seconds, 2)}


async def run(package: str, threads: int, backend: str) -> dict[str, Any]:
    root = package_root(package)
    settings = MemorySettings()
    embedder = Embedder(threads=threads, quantize_dir=settings.model_cache_path)
    with tempfile.TemporaryDirectory() as home, backend_settings(backend, home, threads) as cfg:
        async with MemoryEngine(cfg, embedder=embedder) as engine:
            items = prepared(engine.router, root, "bench")
            views = sum(summary(p.record.text, p.record.metadata) is not None for p in items)
            before = await embedder_alone(engine, items)
            req = s.IndexRequest(path=str(root), namespace="bench")
            started = time.perf_counter()
            first = await engine.index(req)
            first_s = time.perf_counter() - started
            started = time.perf_counter()
            again = await engine.index(req)
            again_s = time.perf_counter() - started
            after = await embedder_alone(engine, items)
    baseline = (before["chunks_per_s"] + after["chunks_per_s"]) / 2
    rate = first.chunks / first_s
    return {
        "corpus": f"{package} {importlib.metadata.version(package)}",
        "backend": backend,
        "model": embedder.model_id,
        "threads": threads,
        "files": first.files,
        "chunks": first.chunks,
        "model_inputs": len(items) + views,  # chunk texts plus definitions' summary views
        "first_index": {"seconds": round(first_s, 2), "chunks_per_s": round(rate, 2)},
        "unchanged_reindex": {"seconds": round(again_s, 3), "changed": again.changed},
        "embedder_alone": {"before": before, "after": after, "chunks_per_s": round(baseline, 2)},
        "ratio": round(rate / baseline, 3),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--package", default="anyio", help="installed package to index")
    parser.add_argument("--threads", type=int, default=2, help="ONNX Runtime threads")
    parser.add_argument("--backend", choices=("embedded", "production"), default="embedded")
    args = parser.parse_args()
    print(json.dumps(anyio.run(run, args.package, args.threads, args.backend), indent=2))


if __name__ == "__main__":
    main()
