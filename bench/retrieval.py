"""Retrieval quality on real codebases: recall@5 and MRR for vector, keyword, hybrid and a
plain baseline, per evaluation set.

Each set (``tests/data/*_retrieval.json``) names an installed package and questions a user
would ask about it, each with the one file and symbol that answers it. The package is
indexed into a throw-away embedded memory and every question is asked in each mode. The
baseline is computed in the same run over the same chunks, and is given what a strong
simple retriever has: BM25 (``rank_bm25``) over identifier-aware tokens (``read_timeout``
counts as itself and as ``read`` and ``timeout``) of each chunk's path, symbol and text,
plus the same MiniLM model embedding the same three, fused by reciprocal rank (k=60).
Prints one JSON object.
Run: python bench/retrieval.py [--sets httpx,starlette] [--threads N] [--home DIR]
"""

from __future__ import annotations

import argparse
import importlib
import json
import re
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from importlib.metadata import version
from pathlib import Path
from typing import Any

import anyio
import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bus.schemas import memory as s
from memory.chunking import Chunk, chunk_file
from memory.config import MemorySettings
from memory.engine import MemoryEngine
from memory.indexer import walk

DATA = Path(__file__).resolve().parents[1] / "tests" / "data"
MODES = ("vector", "keyword", "hybrid")
K = 10
RRF_K = 60
_IDENT = re.compile(r"[A-Za-z_][A-Za-z0-9_]*|[0-9]+")
_PARTS = re.compile(r"[A-Z]+(?=[A-Z][a-z])|[A-Z]?[a-z]+|[A-Z]+|[0-9]+")


def evaluation_sets() -> dict[str, dict[str, Any]]:
    """Every set in tests/data, by name (the file's stem without ``_retrieval``)."""
    return {
        p.name.removesuffix("_retrieval.json"): json.loads(p.read_text())
        for p in sorted(DATA.glob("*_retrieval.json"))
    }


def package_root(data: dict[str, Any]) -> Path:
    module = importlib.import_module(data["corpus"]["module"])
    return Path(module.__file__ or "").parent


def relevant(path: str, symbol: str, question: dict[str, Any]) -> bool:
    """Same path, and the chunk is the target symbol or one of its members."""
    if path != question["path"] or not symbol:
        return False
    return any(symbol == t or symbol.startswith(t + ".") for t in question["symbols"])


def first_rank(ranked: list[tuple[str, str]], question: dict[str, Any]) -> int | None:
    """1-based rank of the first relevant (path, symbol) in ``ranked``."""
    for rank, (path, symbol) in enumerate(ranked, start=1):
        if relevant(path, symbol, question):
            return rank
    return None


def scores(ranks: list[int | None], seconds: float) -> dict[str, float]:
    n = len(ranks)
    return {
        "recall_at_5": round(sum(r is not None and r <= 5 for r in ranks) / n, 4),
        "mrr_at_10": round(sum(1.0 / r for r in ranks if r) / n, 4),
        "ms_per_query": round(1000 * seconds / n, 2),
    }


# ---- the plain baseline ---------------------------------------------------------------------


def tokens(text: str) -> list[str]:
    """Identifier-aware tokens: each identifier whole and, when compound, its parts."""
    out: list[str] = []
    for match in _IDENT.finditer(text):
        name = match.group(0)
        parts = [p.lower() for piece in name.split("_") for p in _PARTS.findall(piece)]
        out.append(name.lower())
        if len(parts) > 1:
            out.extend(parts)
    return out


def rrf(*rankings: list[int]) -> list[int]:
    fused: dict[int, float] = {}
    for ranking in rankings:
        for rank, doc in enumerate(ranking):
            fused[doc] = fused.get(doc, 0.0) + 1.0 / (RRF_K + rank + 1)
    return sorted(fused, key=lambda d: -fused[d])


class Baseline:
    """BM25 + embeddings + RRF over a fixed list of chunks, in memory."""

    def __init__(self, chunks: list[Chunk], vectors: np.ndarray) -> None:
        from rank_bm25 import BM25Okapi

        self.chunks = chunks
        self.vectors = vectors
        self.bm25 = BM25Okapi([tokens(described(c)) or ["_"] for c in chunks])

    def rank(self, query: str, query_vector: np.ndarray, depth: int = 100) -> list[tuple[str, str]]:
        keyword = np.argsort(-self.bm25.get_scores(tokens(query)))[:depth]
        vector = np.argsort(-(self.vectors @ query_vector))[:depth]
        fused = rrf([int(i) for i in keyword], [int(i) for i in vector])[:K]
        return [(self.chunks[i].path, self.chunks[i].symbol) for i in fused]


def described(chunk: Chunk) -> str:
    """What the baseline indexes of a chunk, on both sides: where it is, its name, its text."""
    return f"{chunk.path} {chunk.symbol}\n{chunk.text}"


def corpus_chunks(root: Path) -> list[Chunk]:
    """The chunks the indexer stores for ``root`` (same walk, same chunker)."""
    chunks: list[Chunk] = []
    for rel in walk(root):
        try:
            text = (root / rel).read_text()
        except (UnicodeDecodeError, OSError):
            continue
        chunks.extend(chunk_file(rel, text))
    return chunks


# ---- one set --------------------------------------------------------------------------------


async def evaluate_set(engine: MemoryEngine, name: str, data: dict[str, Any]) -> dict[str, Any]:
    root = package_root(data)
    questions = data["questions"]
    started = time.perf_counter()
    indexed = await engine.index(s.IndexRequest(path=str(root), namespace=name))
    report: dict[str, Any] = {
        "corpus": f"{data['corpus']['package']} {version(data['corpus']['package'])}",
        "written_for": data["corpus"]["version"],
        "files": indexed.files,
        "chunks": indexed.chunks,
        "questions": len(questions),
        "index_seconds": round(time.perf_counter() - started, 2),
    }
    for mode in MODES:

        async def ours(q: dict[str, Any], mode: str = mode) -> list[tuple[str, str]]:
            req = s.SearchRequest(query=q["question"], namespace=name, k=K, mode=mode)
            hits = (await engine.search(req)).hits
            return [(str(h.metadata.get("path")), str(h.metadata.get("symbol", ""))) for h in hits]

        report[mode] = await _score(questions, ours)
    chunks = corpus_chunks(root)
    vectors = await engine.embedder.embed([described(c) for c in chunks])
    baseline = Baseline(chunks, vectors)

    async def plain(q: dict[str, Any]) -> list[tuple[str, str]]:
        return baseline.rank(q["question"], await engine.embedder.embed_one(q["question"]))

    report["baseline"] = await _score(questions, plain)
    report["misses"] = await _misses(questions, engine, name)
    return report


async def _score(questions: list[dict[str, Any]], ranker: Callable[..., Any]) -> dict[str, float]:
    ranks: list[int | None] = []
    started = time.perf_counter()
    for q in questions:
        ranks.append(first_rank(await ranker(q), q))
    return scores(ranks, time.perf_counter() - started)


async def _misses(
    questions: list[dict[str, Any]], engine: MemoryEngine, name: str
) -> list[dict[str, Any]]:
    """The questions hybrid does not rank first, with what it ranked above the answer."""
    out = []
    for q in questions:
        req = s.SearchRequest(query=q["question"], namespace=name, k=K)
        hits = (await engine.search(req)).hits
        ranked = [(str(h.metadata.get("path")), str(h.metadata.get("symbol", ""))) for h in hits]
        rank = first_rank(ranked, q)
        if rank != 1:
            above = ranked[: (rank or 4) - 1][:3]
            out.append({"id": q["id"], "rank": rank, "above": [f"{p}:{sym}" for p, sym in above]})
    return out


@contextmanager
def _home(keep: str) -> Iterator[str]:
    if keep:
        Path(keep).mkdir(parents=True, exist_ok=True)
        yield keep
        return
    with tempfile.TemporaryDirectory() as home:
        yield home


async def evaluate(names: list[str], threads: int, keep: str, misses: bool) -> dict[str, Any]:
    sets = evaluation_sets()
    unknown = sorted(set(names) - set(sets))
    if unknown:
        raise SystemExit(f"--sets: no such set {', '.join(unknown)} (have {', '.join(sets)})")
    with _home(keep) as home:
        settings = MemorySettings(home=home, embed_threads=threads)
        async with MemoryEngine(settings) as engine:
            report: dict[str, Any] = {"model": engine.embedder.model_id, "sets": {}}
            for name in names or list(sets):
                one = await evaluate_set(engine, name, sets[name])
                if not misses:
                    one.pop("misses")
                report["sets"][name] = one
    report["mean"] = _means(report["sets"])
    return report


def _means(per_set: dict[str, dict[str, Any]]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for mode in (*MODES, "baseline"):
        out[mode] = {
            metric: round(float(np.mean([r[mode][metric] for r in per_set.values()])), 4)
            for metric in ("recall_at_5", "mrr_at_10")
        }
    out["hybrid_mrr_over_baseline"] = round(
        out["hybrid"]["mrr_at_10"] - out["baseline"]["mrr_at_10"], 4
    )
    out["hybrid_recall_at_least_baseline_on_every_set"] = all(
        r["hybrid"]["recall_at_5"] >= r["baseline"]["recall_at_5"] for r in per_set.values()
    )
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--sets", default="", help="comma-separated set names (default: all)")
    parser.add_argument("--threads", type=int, default=0, help="ONNX Runtime threads (0: auto)")
    parser.add_argument("--home", default="", help="keep the indexed memory here (reused)")
    parser.add_argument("--misses", action="store_true", help="list what hybrid ranks wrong")
    args = parser.parse_args()
    names = [n for n in args.sets.split(",") if n]
    print(json.dumps(anyio.run(evaluate, names, args.threads, args.home, args.misses), indent=1))


if __name__ == "__main__":
    main()
