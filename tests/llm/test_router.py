"""Routing: capable models by route, window and JSON support, ordered by strategy."""

from __future__ import annotations

import pytest

from adapters.llm.breaker import Breaker
from adapters.llm.config import ModelSpec
from adapters.llm.router import Need, chain


def spec(
    name: str,
    price: float,
    quality: float,
    *,
    window: int = 100_000,
    capabilities: frozenset[str] = frozenset({"json_mode"}),
) -> ModelSpec:
    return ModelSpec(
        name=name,
        upstream_model=name,
        provider="openai",
        base_url="",
        context_window=window,
        input_usd_per_mtok=price,
        output_usd_per_mtok=price,
        quality=quality,
        capabilities=capabilities,
        concurrency=1,
    )


MODELS = [
    spec("budget", 0.1, 0.3),
    spec("mid", 1.0, 0.7),
    spec("dominated", 2.0, 0.6),  # dearer and worse than mid
    spec("top", 10.0, 0.95),
]


def need(strategy: str = "balanced", *, prompt: int = 1000, schema: bool = False) -> Need:
    return Need(
        task="chat",
        strategy=strategy,
        prompt_tokens=prompt,
        max_tokens=1000,  # type: ignore[arg-type]
        schema=schema,
    )


@pytest.mark.parametrize(
    ("strategy", "order"),
    [
        ("cost", ["budget", "mid", "dominated", "top"]),
        ("quality", ["top", "mid", "dominated", "budget"]),
        ("balanced", ["mid", "budget", "top", "dominated"]),
    ],
    ids=["cost", "quality", "balanced-pareto-first"],
)
def test_chain_orders_by_strategy(strategy: str, order: list[str]) -> None:
    assert [m.name for m in chain(MODELS, (), need(strategy))] == order


def test_chain_balanced_never_puts_a_dominated_model_before_the_front() -> None:
    names = [m.name for m in chain(MODELS, (), need("balanced"))]
    assert names.index("dominated") == len(names) - 1


def test_chain_keeps_only_the_route_and_what_fits() -> None:
    small = spec("small", 0.01, 0.9, window=1500)
    plain = spec("plain", 0.01, 0.9, capabilities=frozenset())
    models = [*MODELS, small, plain]
    assert [m.name for m in chain(models, ("top", "budget"), need("cost"))] == ["budget", "top"]
    assert "small" not in [m.name for m in chain(models, (), need(prompt=1000))]
    assert "plain" not in [m.name for m in chain(models, (), need(schema=True))]
    assert chain(models, ("small",), need(prompt=5000)) == []


def test_breaker_opens_half_opens_with_one_probe_and_closes() -> None:
    now = [0.0]
    breaker = Breaker(failures=2, cooldown_s=10, clock=lambda: now[0])
    breaker.failed()
    assert breaker.state == "closed"
    breaker.failed()
    assert breaker.state == "open" and not breaker.allow()
    now[0] = 10.0
    assert breaker.state == "half_open"
    assert breaker.allow() and not breaker.allow()  # one probe only
    breaker.failed()
    assert breaker.state == "open"
    now[0] = 20.0
    assert breaker.allow()
    breaker.succeeded()
    assert breaker.state == "closed" and breaker.allow()
