"""``sophia costs [--by model|task|project|day] [--since 7d] [--json]``: what model calls cost.

The same figures as ``nats req sophia.llm.costs '{"by": "model"}'``, from the gateway's
ledger (a row per call in the L3 facts tier).
"""

from __future__ import annotations

import argparse
import re
import time
from datetime import UTC, datetime
from typing import Any

from bus.config import Settings, load
from bus.schemas.llm import CostsRequest, CostsResult
from ops.cli import run_async
from ops.render import pretty_json, table
from ops.session import open_bus

_RELATIVE = re.compile(r"^(\d+(?:\.\d+)?)([smhdw])$")
_UNIT_S = {"s": 1, "m": 60, "h": 3600, "d": 86_400, "w": 7 * 86_400}


def since(value: str) -> float:
    """``7d``, ``12h`` (that long ago), ``2026-12-01`` (UTC midnight) or ``all``, as unix time."""
    if value == "all":
        return 0.0
    relative = _RELATIVE.match(value)
    if relative:
        return max(0.0, time.time() - float(relative[1]) * _UNIT_S[relative[2]])
    try:
        return datetime.strptime(value, "%Y-%m-%d").replace(tzinfo=UTC).timestamp()
    except ValueError:
        raise argparse.ArgumentTypeError(
            "must be a duration such as 7d or 12h, a date YYYY-MM-DD, or all"
        ) from None


def register(subparsers: Any) -> None:
    parser = subparsers.add_parser(
        "costs",
        help="show what model calls cost, by model, task, project or day",
        description="Sum the model gateway's calls: count, tokens and US dollars. "
        "Exit status 3 when NATS or the llm agent is not reachable.",
    )
    parser.add_argument(
        "--by", choices=("model", "task", "project", "day"), default="model", help="group by"
    )
    parser.add_argument(
        "--since", type=since, default=0.0, metavar="WHEN", help="7d, 12h, 2026-12-01 or all"
    )
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    parser.set_defaults(func=costs)


def costs(args: argparse.Namespace) -> int:
    result = run_async(_ask, load(Settings), CostsRequest(by=args.by, since=args.since))
    print(pretty_json(result) if args.json else render(result))
    return 0


async def _ask(settings: Settings, request: CostsRequest) -> CostsResult:
    async with open_bus(settings) as bus:
        return await bus.request("llm", "costs", request, CostsResult)


def render(result: CostsResult) -> str:
    if not result.totals:
        return "no model calls yet"
    rows = [
        (
            t.key or "-",
            t.calls,
            t.cached_calls,
            t.input_tokens,
            t.output_tokens,
            f"{t.cost_usd:.6f}",
        )
        for t in result.totals
    ]
    rows.append(("total", result.calls, "", "", "", f"{result.cost_usd:.6f}"))
    header = (result.by.upper(), "CALLS", "CACHED", "INPUT TOKENS", "OUTPUT TOKENS", "USD")
    return table(header, rows)
