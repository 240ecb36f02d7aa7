"""SEARCH/REPLACE edits on an evaluation set: how many apply right, how many are refused right.

Runs every case of tests/data/edits/cases.json in a throw-away directory (its files, then its
symlinks), parses the answer and applies the blocks for real, and compares the tree with the
expected one. A case is wrongly applied when its blocks were applied but the tree differs from
the expected result, or when they were applied at all where the case expects a refusal. File
contents in the set are text; lone surrogates stand for undecodable bytes (surrogateescape).
Prints one JSON object. Run: python bench/edits.py [--cases PATH]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from tasks import edits

DATA = Path(__file__).resolve().parents[1] / "tests" / "data" / "edits" / "cases.json"


def load_cases(cases_path: Path | str = DATA) -> list[dict[str, Any]]:
    return json.loads(Path(cases_path).read_text(encoding="utf-8"))


def encode(text: str) -> bytes:
    return text.encode("utf-8", "surrogateescape")


def materialise(case: dict[str, Any], root: Path) -> None:
    """Write the case's files and symlinks under ``root``."""
    for rel, content in case["files"].items():
        path = root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(encode(content))
    for rel, target in case.get("symlinks", {}).items():
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        os.symlink(target, root / rel)


def snapshot(root: Path) -> dict[str, bytes]:
    """Every regular file under ``root`` (symlinks neither followed nor listed)."""
    found: dict[str, bytes] = {}
    for folder, dirs, names in os.walk(root, followlinks=False):
        for name in names:
            path = Path(folder, name)
            if not path.is_symlink():
                found[path.relative_to(root).as_posix()] = path.read_bytes()
        dirs[:] = [d for d in dirs if not Path(folder, d).is_symlink()]
    return found


def run_case(case: dict[str, Any]) -> dict[str, Any]:
    """One case in a fresh directory: whether it applied, was judged right or wrong, its codes."""
    with tempfile.TemporaryDirectory(prefix="sophia-edits-") as tmp:
        root = Path(tmp)
        materialise(case, root)
        before = snapshot(root)
        started = time.perf_counter()
        blocks, problems = edits.parse_blocks(case["answer"])
        outcome = edits.apply_blocks(root, blocks, dry_run=bool(problems))
        ms = 1000 * (time.perf_counter() - started)
        after = snapshot(root)
    applied = outcome.ok and not problems
    codes = sorted({f.refusal for f in outcome.failures} | ({"parse_error"} if problems else set()))
    if case["expect"] == "apply":
        expected = before | {rel: encode(text) for rel, text in case["result"].items()}
        right = applied and after == expected
        wrong = applied and after != expected
    else:
        right = not applied and case["refusal"] in codes and after == before
        wrong = applied
    return {
        "name": case["name"],
        "applied": applied,
        "right": right,
        "wrong": wrong,
        "codes": codes,
        "drift": outcome.drift,
        "ms": ms,
        "report": edits.failure_report(outcome.failures, problems) if not applied else "",
    }


def measure(cases_path: Path | str = DATA) -> dict[str, Any]:
    """The evaluation set's rates, its wrongly applied count and the median parse+apply time."""
    results = [(case, run_case(case)) for case in load_cases(cases_path)]
    to_apply = [r for c, r in results if c["expect"] == "apply"]
    to_refuse = [r for c, r in results if c["expect"] == "refuse"]
    return {
        "cases": len(results),
        "edits_applied_rate": round(sum(r["right"] for r in to_apply) / max(len(to_apply), 1), 4),
        "edits_wrongly_applied": sum(r["wrong"] for _, r in results),
        "edits_refused_correctly_rate": round(
            sum(r["right"] for r in to_refuse) / max(len(to_refuse), 1), 4
        ),
        "drift_blocks": sum(r["drift"] for _, r in results),
        "apply_ms_p50": round(statistics.median(r["ms"] for _, r in results), 3),
        "misses": [r["name"] for _, r in results if not r["right"]],
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--cases", default=str(DATA), help="the evaluation set (JSON)")
    args = parser.parse_args()
    print(json.dumps(measure(args.cases), indent=1))


if __name__ == "__main__":
    main()
