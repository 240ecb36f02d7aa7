"""Secret redaction: how much of the shape set it catches, what it keeps, and how fast it runs.

- ``caught_rate``: share of the secrets in tests/data/secret_shapes.json of which no value
  survives :func:`memory.redact.redact`; ``kept_rate``: share of its look-alikes left
  exactly as they were.
- ``mb_per_s``: redaction speed over a corpus of real files (this repository's sources and
  docs, and the installed httpx and anyio packages), one file at a time as the indexer does,
  best of ``--repeat`` runs.
- ``baseline_mb_per_s``: one plain ``re`` pass over the same files with one trivial
  pattern (``baseline_pattern``, the AWS key id regex), for scale: redaction is many passes,
  and this says what one costs on this machine.
- ``hostile_mb_per_s``: the slowest of a few inputs built to make regexes backtrack.

Prints one JSON object. Run: python bench/redaction.py [--repeat N]
"""

from __future__ import annotations

import argparse
import json
import re
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import anyio
import httpx

from memory.redact import redact

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT / "tests" / "data" / "secret_shapes.json"
SOURCES = ["memory", "bus", "agents", "edge", "ops", "tasks", "adapters", "infra", "scripts"]
SOURCES += ["bench", "tests"]
SUFFIXES = {".py", ".md", ".toml", ".json", ".yml", ".yaml", ".txt", ".cfg", ".lock", ".sh"}
BASELINE = re.compile(r"\bAKIA[A-Z0-9]{16}\b")
HOSTILE = [
    "password=" * 20_000,
    "%3A%2F%2F" * 20_000,
    "-----BEGIN RSA PRIVATE KEY-----\n" + "A" * 200_000,
    ("Ab1" * 21 + "C\n") * 3_000,
    "token: " * 30_000,
]


def rates(shapes: dict[str, Any]) -> dict[str, Any]:
    """Counts and rates over the shape set."""
    secrets, lookalikes = shapes["secrets"], shapes["lookalikes"]
    caught = sum(not any(v in redact(s["text"])[0] for v in s["secrets"]) for s in secrets)
    kept = sum(redact(s["text"])[0] == s["text"] for s in lookalikes)
    return {
        "secrets": len(secrets),
        "caught_rate": round(caught / len(secrets), 4),
        "lookalikes": len(lookalikes),
        "kept_rate": round(kept / len(lookalikes), 4),
    }


def corpus() -> list[str]:
    """The text files the speed is measured over, in a stable order."""
    roots = [ROOT / d for d in SOURCES] + [Path(httpx.__file__).parent, Path(anyio.__file__).parent]
    texts = []
    for root in roots:
        for path in sorted(root.rglob("*")):
            if path.is_file() and path.suffix in SUFFIXES:
                try:
                    texts.append(path.read_text())
                except (OSError, UnicodeDecodeError):
                    continue
    return texts


def mb_per_s(texts: list[str], run: Callable[[str], object], repeat: int) -> float:
    """Best speed of ``run`` over ``texts``, one text at a time, in MB (10^6 bytes) per second."""
    size = sum(len(t.encode()) for t in texts)
    best = float("inf")
    for _ in range(repeat):
        started = time.perf_counter()
        for text in texts:
            run(text)
        best = min(best, time.perf_counter() - started)
    return round(size / 1e6 / best, 2)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()
    texts = corpus()
    report = rates(json.loads(DATA.read_text()))
    report |= {
        "mb_per_s": mb_per_s(texts, redact, args.repeat),
        "baseline_mb_per_s": mb_per_s(texts, lambda t: BASELINE.sub("x", t), args.repeat),
        "baseline_pattern": BASELINE.pattern,
        "hostile_mb_per_s": min(mb_per_s([t], redact, 1) for t in HOSTILE),
        "corpus_files": len(texts),
        "corpus_mb": round(sum(len(t.encode()) for t in texts) / 1e6, 2),
    }
    print(json.dumps(report))


if __name__ == "__main__":
    main()
