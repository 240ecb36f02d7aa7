"""The retrieval evaluation set stays answerable: every target exists in the corpus."""

from __future__ import annotations

import json
from pathlib import Path

import httpx

from memory.chunking import chunk_file

DATA = Path(__file__).resolve().parents[1] / "data" / "httpx_retrieval.json"


def test_retrieval_set_has_fifty_questions_each_with_a_chunked_target() -> None:
    data = json.loads(DATA.read_text())
    root = Path(httpx.__file__).parent
    symbols: dict[str, set[str]] = {}
    missing = []
    for q in data["questions"]:
        if q["path"] not in symbols:
            chunks = chunk_file(q["path"], (root / q["path"]).read_text())
            symbols[q["path"]] = {c.symbol for c in chunks}
        known = symbols[q["path"]]
        if not any(t in known or any(k.startswith(t + ".") for k in known) for t in q["symbols"]):
            missing.append(q["id"])
    assert len(data["questions"]) >= 50
    assert missing == []
    assert len({q["question"] for q in data["questions"]}) == len(data["questions"])
