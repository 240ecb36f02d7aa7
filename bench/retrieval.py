"""Retrieval quality on a real codebase: recall@5 and MRR for vector, keyword and hybrid search.

Indexes the installed httpx package into a throw-away embedded memory, asks every question
of tests/data/httpx_retrieval.json in each mode, and prints one JSON object.
Run: python bench/retrieval.py [--threads N]
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

import anyio

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bus.schemas import memory as s
from memory.config import MemorySettings
from memory.engine import MemoryEngine

DATA = Path(__file__).resolve().parents[1] / "tests" / "data" / "httpx_retrieval.json"
MODES = ("vector", "keyword", "hybrid")


def relevant(hit: s.Hit, question: dict) -> bool:
    """Same path, and the chunk is the target symbol or one of its members."""
    symbol = str(hit.metadata.get("symbol", ""))
    if hit.metadata.get("path") != question["path"] or not symbol:
        return False
    return any(symbol == t or symbol.startswith(t + ".") for t in question["symbols"])


def first_rank(hits: list[s.Hit], question: dict) -> int | None:
    for rank, hit in enumerate(hits, start=1):
        if relevant(hit, question):
            return rank
    return None


async def evaluate(threads: int) -> dict:
    import httpx

    data = json.loads(DATA.read_text())
    root = Path(httpx.__file__).parent
    with tempfile.TemporaryDirectory() as home:
        settings = MemorySettings(home=home, embed_threads=threads)
        async with MemoryEngine(settings) as engine:
            indexed = await engine.index(s.IndexRequest(path=str(root), namespace="httpx"))
            report: dict = {
                "corpus": f"httpx {httpx.__version__}",
                "files": indexed.files,
                "chunks": indexed.chunks,
                "questions": len(data["questions"]),
                "model": engine.embedder.model_id,
                "index_seconds": indexed.seconds,
            }
            for mode in MODES:
                report[mode] = await _score(engine, data["questions"], mode)
    return report


async def _score(engine: MemoryEngine, questions: list[dict], mode: str) -> dict:
    found5 = 0
    reciprocal = 0.0
    started = time.perf_counter()
    for q in questions:
        req = s.SearchRequest(query=q["question"], namespace="httpx", k=10, mode=mode)
        rank = first_rank((await engine.search(req)).hits, q)
        found5 += rank is not None and rank <= 5
        reciprocal += 1.0 / rank if rank else 0.0
    n = len(questions)
    return {
        "recall_at_5": round(found5 / n, 4),
        "mrr_at_10": round(reciprocal / n, 4),
        "ms_per_query": round(1000 * (time.perf_counter() - started) / n, 2),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--threads", type=int, default=0, help="ONNX Runtime threads (0: auto)")
    args = parser.parse_args()
    print(json.dumps(anyio.run(evaluate, args.threads), indent=1))


if __name__ == "__main__":
    main()
