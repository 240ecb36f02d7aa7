"""The retrieval evaluation sets stay answerable: every target exists in its corpus."""

from __future__ import annotations

import importlib
import json
from pathlib import Path

import pytest

from memory.chunking import chunk_file

DATA = Path(__file__).resolve().parents[1] / "data"
SETS = sorted(DATA.glob("*_retrieval.json"))


def test_there_are_at_least_three_sets() -> None:
    assert len(SETS) >= 3


@pytest.mark.parametrize("path", SETS, ids=lambda p: p.stem)
def test_every_question_has_a_chunked_target(path: Path) -> None:
    data = json.loads(path.read_text())
    root = Path(importlib.import_module(data["corpus"]["module"]).__file__ or "").parent
    symbols: dict[str, set[str]] = {}
    missing = []
    for q in data["questions"]:
        if q["path"] not in symbols:
            chunks = chunk_file(q["path"], (root / q["path"]).read_text())
            symbols[q["path"]] = {c.symbol for c in chunks}
        known = symbols[q["path"]]
        if not any(t in known or any(k.startswith(t + ".") for k in known) for t in q["symbols"]):
            missing.append(q["id"])
    assert len(data["questions"]) >= 40
    assert missing == []
    assert len({q["question"] for q in data["questions"]}) == len(data["questions"])
