"""Latency of memory.context on a real codebase, against one memory.search in the same run.

Indexes the installed httpx package into a throw-away embedded memory, stores one decision
per module (metadata path), then asks for the context of functions spread over the package
(path + symbol, as an editor sends them, 2000 tokens) and, as the baseline, one hybrid search
for the same symbol. Each is timed cold (first ask: every search runs) and warm (asked again:
the searches answer from L1). Also reported: how often the symbol's own code and its module's
decision came back, and the pack sizes. Prints one JSON object.
Run: python bench/context.py [--requests N] [--threads N]
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from pathlib import Path

import anyio

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.corpus import load_corpus
from bus.schemas import memory as s
from memory.chunking import Chunk
from memory.config import MemorySettings
from memory.engine import MemoryEngine


def targets(chunks: list[Chunk], count: int) -> list[Chunk]:
    """``count`` function chunks spread evenly over the package, one per symbol."""
    functions = list({c.symbol: c for c in chunks if c.unit == "function"}.values())
    step = max(1, len(functions) // count)
    return functions[::step][:count]


def percentiles(ms: list[float]) -> dict[str, float]:
    ordered = sorted(ms)
    p95 = ordered[min(len(ordered) - 1, round(0.95 * (len(ordered) - 1)))]
    return {"p50_ms": round(statistics.median(ordered), 2), "p95_ms": round(p95, 2)}


async def timed(calls: list[Callable[[], Awaitable[object]]]) -> tuple[list[float], list[object]]:
    ms, results = [], []
    for call in calls:
        started = time.perf_counter()
        results.append(await call())
        ms.append(1000 * (time.perf_counter() - started))
    return ms, results


async def evaluate(requests: int, threads: int) -> dict:
    import httpx

    root = Path(httpx.__file__).parent
    chosen = targets(load_corpus(), requests)
    with tempfile.TemporaryDirectory() as home:
        settings = MemorySettings(home=home, embed_threads=threads)
        async with MemoryEngine(settings) as engine:
            indexed = await engine.index(s.IndexRequest(path=str(root), namespace="httpx"))
            decisions = {}
            for path in sorted({c.path for c in chosen}):
                text = f"Decision for {path}: keep its public behaviour stable across releases."
                req = s.StoreRequest(
                    text=text, kind="decision", namespace="httpx", metadata={"path": path}
                )
                decisions[path] = (await engine.store(req)).id
            # the tokenizer loads on the first call: not part of any measurement
            await engine.context(s.ContextRequest(symbol="warm_up_the_tokenizer"))
            contexts = [
                lambda c=c: engine.context(
                    s.ContextRequest(namespace="httpx", path=c.path, symbol=c.symbol)
                )
                for c in chosen
            ]
            searches = [
                lambda c=c: engine.search(s.SearchRequest(query=c.symbol, namespace="httpx"))
                for c in chosen
            ]
            search_cold, _ = await timed(searches)
            context_cold, packs = await timed(contexts)
            search_warm, _ = await timed(searches)
            context_warm, _ = await timed(contexts)
    found = [p for p in packs if isinstance(p, s.ContextPack)]
    own = sum(
        any(e.reason == "symbol" and e.symbol == c.symbol for e in p.entries)
        for c, p in zip(chosen, found, strict=True)
    )
    noted = sum(
        any(e.id == decisions[c.path] for e in p.entries)
        for c, p in zip(chosen, found, strict=True)
    )
    return {
        "corpus": f"httpx {httpx.__version__}",
        "files": indexed.files,
        "chunks": indexed.chunks,
        "requests": len(chosen),
        "budget_tokens": 2000,
        "context_cold": percentiles(context_cold),
        "search_cold": percentiles(search_cold),
        "context_warm": percentiles(context_warm),
        "search_warm": percentiles(search_warm),
        "symbol_found": round(own / len(chosen), 4),
        "module_decision_found": round(noted / len(chosen), 4),
        "entries_mean": round(statistics.mean(len(p.entries) for p in found), 2),
        "tokens_used_mean": round(statistics.mean(p.tokens_used for p in found), 1),
        "over_budget": sum(p.tokens_used > p.budget_tokens for p in found),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--requests", type=int, default=100, help="functions asked about")
    parser.add_argument("--threads", type=int, default=0, help="ONNX Runtime threads (0: auto)")
    args = parser.parse_args()
    print(json.dumps(anyio.run(evaluate, args.requests, args.threads), indent=1))


if __name__ == "__main__":
    main()
