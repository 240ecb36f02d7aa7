"""Routing: the chain of models to try for one call, best first.

Capable models are those the task's route allows (every model when the task has no route),
whose context window holds the prompt plus ``max_tokens``, and that can produce JSON when a
schema is asked for (``json_schema`` or ``json_mode``). They are ordered by strategy:

- ``cost``: cheapest for this call first (expected cost from the prompt and ``max_tokens``);
- ``quality``: highest quality score first;
- ``balanced``: the Pareto front of cost and quality first (no other model is both cheaper
  and better), best quality-per-cost within it; then the rest, by the same measure.

Ties keep the configured order, so a route's order is the tie-breaker. The first model is
the primary, the rest are its fallbacks.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

from adapters.llm.config import ModelSpec
from bus.schemas.llm import Strategy

JSON_CAPABLE = frozenset({"json_schema", "json_mode"})
Cost = Callable[[ModelSpec], float]


@dataclass(frozen=True, slots=True)
class Need:
    task: str
    strategy: Strategy
    prompt_tokens: int
    max_tokens: int
    schema: bool


def capable(models: Sequence[ModelSpec], route: Sequence[str], need: Need) -> list[ModelSpec]:
    allowed = [m for m in models if not route or m.name in route]
    if route:
        allowed.sort(key=lambda m: route.index(m.name))
    return [
        m
        for m in allowed
        if m.context_window >= need.prompt_tokens + need.max_tokens
        and (not need.schema or m.capabilities & JSON_CAPABLE)
    ]


def chain(models: Sequence[ModelSpec], route: Sequence[str], need: Need) -> list[ModelSpec]:
    """The capable models in the order the strategy prefers (empty when none is capable)."""
    candidates = capable(models, route, need)

    def cost(m: ModelSpec) -> float:
        return m.cost_usd(need.prompt_tokens, need.max_tokens)

    if need.strategy == "cost":
        return sorted(candidates, key=cost)
    if need.strategy == "quality":
        return sorted(candidates, key=lambda m: -m.quality)
    front = [m for m in candidates if not _dominated(m, candidates, cost)]
    rest = [m for m in candidates if m not in front]
    return sorted(front, key=_value(candidates, cost)) + sorted(rest, key=_value(rest, cost))


def _dominated(m: ModelSpec, others: Sequence[ModelSpec], cost: Cost) -> bool:
    return any(
        cost(o) <= cost(m)
        and o.quality >= m.quality
        and (cost(o) < cost(m) or o.quality > m.quality)
        for o in others
    )


def _value(pool: Sequence[ModelSpec], cost: Cost) -> Cost:
    """Sort key: quality minus cost, both scaled to [0, 1] over ``pool`` (higher first)."""
    costs = [cost(m) for m in pool] or [0.0]
    low, span = min(costs), (max(costs) - min(costs)) or 1.0
    return lambda m: -(m.quality - (cost(m) - low) / span)
