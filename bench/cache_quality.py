"""Answer quality of the model-call cache: paraphrases it serves, near-misses it must refuse.

Over tests/data/cache_pairs.json (prompt pairs in two halves, each split tune/holdout before
any result was seen), with the memory engine's own embedder, for tune and holdout apart:

- "embedding only": hit when the two prompts are at least t similar, at the threshold that
  is best for it on tune (the most paraphrase hits with no near-miss hit), and at the
  threshold that best trades one against the other;
- "embedding + check": similar enough AND :func:`memory.sameness.same_question`, at the
  configured default threshold (``MemorySettings.cache_threshold``);
- "cache": the same through the real cache: put one prompt, look up the other, in a scope
  of its own per pair;
- the sweep of t over both, and the threshold the choosing rule (:func:`choose`) picks
  from tune.

Prints one JSON object. Run: python bench/cache_quality.py [--threads N]
The lead's bench/gateway.py reads the same pairs with :func:`load_pairs`.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path
from typing import Any

import anyio
import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bus.schemas import memory as s
from memory.config import MemorySettings
from memory.engine import MemoryEngine
from memory.redact import redact
from memory.sameness import same_question

DATA = Path(__file__).resolve().parents[1] / "tests" / "data" / "cache_pairs.json"
HALVES = ("paraphrases", "near_misses")
SPLITS = ("tune", "holdout")
SWEEP = [round(0.5 + 0.01 * i, 2) for i in range(50)]  # 0.50 … 0.99
MARGIN = 0.05  # below the least similar paraphrase of tune that the check accepts


def load_pairs() -> dict[str, Any]:
    """The data set: ``{"paraphrases"|"near_misses": {"tune"|"holdout": [{"a", "b",
    "note"}]}}`` (plus an ``about`` text)."""
    return json.loads(DATA.read_text())


def rates(rows: list[dict[str, Any]], t: float, check: bool) -> float:
    """Share of ``rows`` that hit at threshold ``t`` (with the check, if ``check``)."""
    hits = [r["similarity"] >= t and (r["same"] or not check) for r in rows]
    return round(sum(hits) / len(hits), 3)


def figures(scored: dict[str, dict[str, list]], t: float, check: bool) -> dict[str, Any]:
    """Per split: paraphrase hit rate and near-miss false-hit rate at ``t``."""
    return {
        split: {
            "paraphrase_hit_rate": rates(scored["paraphrases"][split], t, check),
            "near_miss_false_hit_rate": rates(scored["near_misses"][split], t, check),
        }
        for split in SPLITS
    }


def best_for_embedding(scored: dict[str, dict[str, list]]) -> dict[str, float]:
    """Thresholds chosen on tune for embedding similarity alone: the lowest with no false
    hit (just above the most similar near-miss), and the one maximising hits minus false
    hits."""
    near = [r["similarity"] for r in scored["near_misses"]["tune"]]
    safe = round(float(np.nextafter(max(near), 2.0)), 6)

    def balance(t: float) -> float:
        return rates(scored["paraphrases"]["tune"], t, False) - rates(
            scored["near_misses"]["tune"], t, False
        )

    return {"zero_false_hits": safe, "balanced": max(SWEEP, key=balance)}


def choose(scored: dict[str, dict[str, list]]) -> float:
    """The choosing rule, on tune only: the lowest similarity among the tune paraphrases the
    check accepts, less MARGIN for paraphrases not seen, rounded down to the sweep's step.
    Below that point tune's figures do not change (the check refuses every near-miss at any
    threshold), so a lower value would only send more unrelated prompts to the check."""
    accepted = [r["similarity"] for r in scored["paraphrases"]["tune"] if r["same"]]
    return float(np.floor((min(accepted) - MARGIN) * 100) / 100)


async def score(engine: MemoryEngine, data: dict[str, Any]) -> dict[str, dict[str, list]]:
    """Every pair with its similarity and the check's verdict, as the cache sees them
    (redacted prompts, the engine's embedder)."""
    out: dict[str, dict[str, list]] = {}
    for half in HALVES:
        out[half] = {}
        for split in SPLITS:
            rows = []
            for pair in data[half][split]:
                a, b = redact(pair["a"])[0], redact(pair["b"])[0]
                va, vb = await engine.embedder.embed_one(a), await engine.embedder.embed_one(b)
                rows.append({**pair, "similarity": float(va @ vb), "same": same_question(a, b)})
            out[half][split] = rows
    return out


async def through_cache(engine: MemoryEngine, data: dict[str, Any]) -> dict[str, Any]:
    """Hit rates of the real cache at its default threshold: put ``a``, look up ``b``."""
    report: dict[str, Any] = {}
    n = 0
    for split in SPLITS:
        report[split] = {}
        for half in HALVES:
            hits = 0
            for pair in data[half][split]:
                n += 1
                scope = f"pair-{n}"
                put = s.CachePutRequest(model="m", prompt=pair["a"], response="r", scope=scope)
                await engine.cache_put(put)
                ask = s.CacheLookupRequest(model="m", prompt=pair["b"], scope=scope)
                hits += (await engine.cache_lookup(ask)).hit
            key = "paraphrase_hit_rate" if half == "paraphrases" else "near_miss_false_hit_rate"
            report[split][key] = round(hits / len(data[half][split]), 3)
    return report


def refused_paraphrases(scored: dict[str, dict[str, list]], t: float) -> dict[str, int]:
    return {
        split: sum(not (r["similarity"] >= t and r["same"]) for r in scored["paraphrases"][split])
        for split in SPLITS
    }


async def evaluate(threads: int) -> dict[str, Any]:
    data = load_pairs()
    with tempfile.TemporaryDirectory() as home:
        async with MemoryEngine(MemorySettings(home=home, embed_threads=threads)) as engine:
            scored = await score(engine, data)
            cache = await through_cache(engine, data)
            model = engine.embedder.model_id
    threshold = MemorySettings().cache_threshold
    embedding = best_for_embedding(scored)
    return {
        "pairs": {h: {sp: len(data[h][sp]) for sp in SPLITS} for h in HALVES},
        "model": model,
        "threshold": threshold,
        "threshold_by_rule_on_tune": choose(scored),
        "embedding_only": {
            name: {"threshold": t, **figures(scored, t, check=False)}
            for name, t in embedding.items()
        },
        "embedding_plus_check": figures(scored, threshold, check=True),
        "cache": cache,
        "paraphrases_missed_at_threshold": refused_paraphrases(scored, threshold),
        "sweep": [
            {
                "t": t,
                "embedding_only": figures(scored, t, check=False),
                "embedding_plus_check": figures(scored, t, check=True),
            }
            for t in SWEEP
        ],
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--threads", type=int, default=0, help="embedder threads (0: auto)")
    args = parser.parse_args()
    print(json.dumps(anyio.run(evaluate, args.threads), indent=1))


if __name__ == "__main__":
    main()
