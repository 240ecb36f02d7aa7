"""Accounting: GenAI spans, costs summed from the ledger, the model registry as configured."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from pathlib import Path

import anyio
import pytest
from opentelemetry import trace
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind

from bus import Bus
from bus.config import Settings
from bus.schemas.common import Empty
from bus.schemas.llm import CostsRequest, CostsResult, ModelsResult, Scope
from tests.fixtures.openai_upstream import OpenAIUpstream, Reply
from tests.llm.harness import ask, complete, llm_agent, model, write_toml
from tests.polling import wait_for

pytestmark = pytest.mark.anyio


def priced(upstream: OpenAIUpstream, tmp_path: Path) -> Path:
    return write_toml(
        tmp_path / "sophia.toml",
        [
            model("a", upstream.base_url, input_usd_per_mtok=1.0, output_usd_per_mtok=2.0),
            model(
                "b",
                upstream.base_url,
                input_usd_per_mtok=3.0,
                output_usd_per_mtok=4.0,
                quality=0.9,
                capabilities=["json_schema", "tools"],
            ),
        ],
        routes={"review": ["b"]},
        budgets={"per_day_usd": 50.0},
    )


async def test_complete_span_follows_genai_conventions_under_the_callers_span(
    spans: InMemorySpanExporter,
    bus: Bus,
    settings: Settings,
    monkeypatch: pytest.MonkeyPatch,
    upstream: OpenAIUpstream,
    tmp_path: Path,
) -> None:
    upstream.script("a", Reply(text="hi", prompt_tokens=7, completion_tokens=3))
    async with llm_agent(settings, monkeypatch, priced(upstream, tmp_path)):
        spans.clear()
        with trace.get_tracer("test").start_as_current_span("caller") as caller:
            await complete(bus, ask("hello", strategy="cost", scope=Scope(project="web")))
        await wait_for(lambda: any(s.name == "chat a" for s in spans.get_finished_spans()))
    finished = spans.get_finished_spans()
    [chat] = [s for s in finished if s.name == "chat a"]
    [handler] = [s for s in finished if s.kind == SpanKind.SERVER and "llm.complete" in s.name]
    attributes = dict(chat.attributes or {})
    assert chat.kind == SpanKind.CLIENT
    assert chat.context.trace_id == caller.get_span_context().trace_id
    assert chat.parent is not None and chat.parent.span_id == handler.context.span_id
    assert attributes["gen_ai.operation.name"] == "chat"
    assert attributes["gen_ai.system"] == "openai"
    assert attributes["gen_ai.request.model"] == "a"
    assert attributes["gen_ai.usage.input_tokens"] == 7
    assert attributes["gen_ai.usage.output_tokens"] == 3
    assert attributes["sophia.project"] == "web"
    assert "hello" not in str(attributes) and "hi" not in [str(v) for v in attributes.values()]


async def test_costs_sum_calls_by_model_task_project_and_day(
    bus: Bus,
    settings: Settings,
    monkeypatch: pytest.MonkeyPatch,
    upstream: OpenAIUpstream,
    tmp_path: Path,
) -> None:
    upstream.script("a", Reply(text="x", prompt_tokens=1000, completion_tokens=500))
    upstream.script("b", Reply(text="y", prompt_tokens=1000, completion_tokens=500))
    async with llm_agent(settings, monkeypatch, priced(upstream, tmp_path)):
        await complete(bus, ask("one", strategy="cost", scope=Scope(project="web")))
        await complete(bus, ask("two", task="review", scope=Scope(project="api")))
        await complete(bus, ask("one", strategy="cost", scope=Scope(project="web")))  # cached

        async def totals(by: str) -> CostsResult:
            return await bus.request("llm", "costs", CostsRequest(by=by), CostsResult)

        await wait_for_calls(totals, 3)
        by_model = await totals("model")
        by_task = await totals("task")
        by_project = await totals("project")
        by_day = await totals("day")
    assert {t.key: round(t.cost_usd, 6) for t in by_model.totals} == {"a": 0.002, "b": 0.005}
    assert {t.key: t.calls for t in by_task.totals} == {"chat": 2, "review": 1}
    assert {t.key: t.cached_calls for t in by_project.totals} == {"web": 1, "api": 0}
    assert len(by_day.totals) == 1 and by_day.calls == 3
    assert by_model.cost_usd == pytest.approx(0.007)


async def wait_for_calls(
    totals: Callable[[str], Awaitable[CostsResult]], count: int, limit_s: float = 10.0
) -> None:
    """The ledger rows are written after the replies: wait until ``count`` are there."""
    with anyio.fail_after(limit_s):
        while (await totals("model")).calls < count:  # noqa: ASYNC110 - state is remote
            await anyio.sleep(0.05)


async def test_models_lists_the_registry_with_circuit_state(
    bus: Bus,
    settings: Settings,
    monkeypatch: pytest.MonkeyPatch,
    upstream: OpenAIUpstream,
    tmp_path: Path,
) -> None:
    async with llm_agent(settings, monkeypatch, priced(upstream, tmp_path)):
        registry = await bus.request("llm", "models", Empty(), ModelsResult)
    assert [m.name for m in registry.models] == ["a", "b"]
    assert registry.models[1].capabilities == ["json_schema", "tools"]
    assert {m.circuit for m in registry.models} == {"closed"}
    assert registry.routes == {"review": ["b"]}
    assert registry.budgets.per_day_usd == 50.0 and registry.transport == "direct"
