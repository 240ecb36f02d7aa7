"""The one figure line each chaos scenario prints (run pytest with ``-s`` to see it)."""

from __future__ import annotations

import json
from collections.abc import Iterable
from typing import Any


def counted(sent: Iterable[str], processed: Iterable[str]) -> dict[str, int]:
    """sent, processed (distinct), lost (sent, never processed) and duplicated (processed
    more than once in effect) for the ids of what was sent and of each effect seen."""
    wanted = list(sent)
    seen = list(processed)
    distinct = set(seen)
    return {
        "sent": len(wanted),
        "processed": len(distinct),
        "lost": len(set(wanted) - distinct),
        "duplicated": len(seen) - len(distinct),
    }


def figure(scenario: str, counts: dict[str, int], max_recovery_s: float, **extra: Any) -> str:
    """Print and return the scenario's JSON figure line."""
    line = json.dumps(
        {"figure": f"chaos_{scenario}", **counts, "max_recovery_s": round(max_recovery_s, 3)}
        | extra,
        ensure_ascii=False,
    )
    print(line, flush=True)
    return line
