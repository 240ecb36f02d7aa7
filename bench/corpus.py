"""Real text for the benchmarks: the chunks of the installed httpx package, and queries."""

from __future__ import annotations

import json
from pathlib import Path

from memory.chunking import Chunk, chunk_file
from memory.indexer import walk

DATA = Path(__file__).resolve().parents[1] / "tests" / "data" / "httpx_retrieval.json"


def load_corpus() -> list[Chunk]:
    """Every chunk of httpx's source, in a stable order."""
    import httpx

    root = Path(httpx.__file__).parent
    chunks: list[Chunk] = []
    for rel in walk(root):
        if rel.endswith(".py"):
            chunks.extend(chunk_file(rel, (root / rel).read_text()))
    return chunks


def sentences(chunks: list[Chunk], count: int = 256) -> list[str]:
    """Sentence-sized texts (the first 200 characters of chunks) for throughput runs."""
    return [c.text[:200] for c in chunks[:count]]


def queries(chunks: list[Chunk], count: int = 200) -> list[str]:
    """The evaluation questions, then first docstring lines, as distinct search queries."""
    out = [q["question"] for q in json.loads(DATA.read_text())["questions"]]
    for chunk in chunks:
        for line in chunk.text.splitlines():
            line = line.strip().strip('"').strip()
            if len(line.split()) >= 4 and not line.startswith(("def ", "class ", "#", "@")):
                if line not in out:
                    out.append(line)
                break
        if len(out) >= count:
            break
    return out[:count]
