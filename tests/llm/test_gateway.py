"""The gateway end to end: bus request → llm agent → portkey-ai SDK → scripted upstream."""

from __future__ import annotations

import time
from pathlib import Path

import anyio
import msgspec
import nats
import pytest

from bus import Bus
from bus.config import Settings
from bus.errors import BadRequestError, BudgetExceededError, TimeoutError_, UnavailableError
from bus.schemas.common import Empty
from bus.schemas.llm import CallEvent, CostsRequest, CostsResult, Delta, ModelsResult, Scope
from tests.fixtures.openai_upstream import CutStream, Fault, Hang, OpenAIUpstream, Reply
from tests.llm.harness import ask, complete, llm_agent, model, write_toml

pytestmark = pytest.mark.anyio


def two_models(upstream: OpenAIUpstream, tmp_path: Path, **table: object) -> Path:
    """``cheap`` (low price, low quality) and ``smart`` (ten times the price, high quality)."""
    return write_toml(
        tmp_path / "sophia.toml",
        [
            model(
                "cheap",
                upstream.base_url,
                input_usd_per_mtok=1.0,
                output_usd_per_mtok=2.0,
                quality=0.3,
                context_window=16_000,
            ),
            model(
                "smart",
                upstream.base_url,
                input_usd_per_mtok=10.0,
                output_usd_per_mtok=30.0,
                quality=0.9,
                context_window=16_000,
            ),
        ],
        **table,  # type: ignore[arg-type]
    )


async def test_complete_unconfigured_answers_503_naming_the_variables(
    bus: Bus, settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    async with llm_agent(settings, monkeypatch, None):
        with pytest.raises(UnavailableError) as caught:
            await complete(bus, ask("hello"))
        models = await bus.request("llm", "models", Empty(), ModelsResult)
    assert "SOPHIA_LLM_BASE_URL" in str(caught.value) and "SOPHIA_LLM_MODEL" in str(caught.value)
    assert models.configured is False and models.models == []


async def test_complete_answers_with_usage_cost_and_attempts(
    bus: Bus,
    settings: Settings,
    monkeypatch: pytest.MonkeyPatch,
    upstream: OpenAIUpstream,
    tmp_path: Path,
) -> None:
    upstream.script("smart", Reply(text="four", prompt_tokens=1000, completion_tokens=100))
    async with llm_agent(settings, monkeypatch, two_models(upstream, tmp_path)):
        result = await complete(bus, ask("what is 2+2?", strategy="quality"))
    assert (result.text, result.model, result.finish_reason) == ("four", "smart", "stop")
    assert (result.input_tokens, result.output_tokens) == (1000, 100)
    assert result.cost_usd == pytest.approx((1000 * 10 + 100 * 30) / 1e6)
    assert [(a.model, a.outcome, a.status) for a in result.attempts] == [("smart", "ok", 200)]
    assert result.cached == "" and result.degraded is False


@pytest.mark.parametrize(
    ("strategy", "expected"),
    [("cost", "cheap"), ("quality", "smart"), ("balanced", "cheap")],
    ids=["cost-picks-cheapest", "quality-picks-best", "balanced-picks-pareto-value"],
)
async def test_complete_routes_by_strategy(
    bus: Bus,
    settings: Settings,
    monkeypatch: pytest.MonkeyPatch,
    upstream: OpenAIUpstream,
    tmp_path: Path,
    strategy: str,
    expected: str,
) -> None:
    async with llm_agent(settings, monkeypatch, two_models(upstream, tmp_path)):
        result = await complete(bus, ask("hi", strategy=strategy))
    assert result.model == expected
    assert [r.model for r in upstream.requests] == [expected]


async def test_complete_routes_by_task(
    bus: Bus,
    settings: Settings,
    monkeypatch: pytest.MonkeyPatch,
    upstream: OpenAIUpstream,
    tmp_path: Path,
) -> None:
    toml = two_models(upstream, tmp_path)
    toml.write_text(toml.read_text() + '[llm.routes]\ncode = ["smart"]\n')
    async with llm_agent(settings, monkeypatch, toml):
        coded = await complete(bus, ask("write a function", task="code", strategy="cost"))
        chatted = await complete(bus, ask("hello", task="chat", strategy="cost"))
    assert (coded.model, chatted.model) == ("smart", "cheap")


async def test_complete_skips_models_whose_context_window_is_too_small(
    bus: Bus,
    settings: Settings,
    monkeypatch: pytest.MonkeyPatch,
    upstream: OpenAIUpstream,
    tmp_path: Path,
) -> None:
    toml = write_toml(
        tmp_path / "sophia.toml",
        [
            model("small", upstream.base_url, context_window=512, quality=0.9),
            model("large", upstream.base_url, context_window=100_000, quality=0.1),
        ],
    )
    async with llm_agent(settings, monkeypatch, toml):
        result = await complete(bus, ask("word " * 400, strategy="quality", max_tokens=64))
        with pytest.raises(BadRequestError) as caught:
            await complete(bus, ask("word " * 400, max_tokens=200_000))
    assert result.model == "large"
    assert "context window" in str(caught.value)


async def test_complete_retries_429_honouring_retry_after_with_a_fresh_request(
    bus: Bus,
    settings: Settings,
    monkeypatch: pytest.MonkeyPatch,
    upstream: OpenAIUpstream,
    tmp_path: Path,
) -> None:
    upstream.script("cheap", Fault(429, retry_after=0.4), Reply(text="ok"))
    async with llm_agent(settings, monkeypatch, two_models(upstream, tmp_path)):
        result = await complete(bus, ask("hi", strategy="cost"))
    first, second = upstream.calls("cheap")
    assert [(a.outcome, a.status) for a in result.attempts] == [("rate_limited", 429), ("ok", 200)]
    assert second.at - first.at >= 0.4
    assert "x-portkey-cache-force-refresh" not in first.headers
    assert second.headers["x-portkey-cache-force-refresh"] == "true"
    assert first.headers["x-sophia-attempt"] != second.headers["x-sophia-attempt"]


async def test_complete_retries_a_500_then_falls_back_to_the_next_model(
    bus: Bus,
    settings: Settings,
    monkeypatch: pytest.MonkeyPatch,
    upstream: OpenAIUpstream,
    tmp_path: Path,
) -> None:
    upstream.script("cheap", Fault(500), Fault(502), Fault(503))
    async with llm_agent(settings, monkeypatch, two_models(upstream, tmp_path)):
        result = await complete(bus, ask("hi", strategy="cost"))
    assert result.model == "smart", (result.attempts, upstream.requests)
    assert [(a.model, a.outcome) for a in result.attempts] == [
        ("cheap", "server_error"),
        ("cheap", "server_error"),
        ("cheap", "server_error"),
        ("smart", "ok"),
    ]


async def test_complete_times_out_a_hung_attempt_and_falls_back(
    bus: Bus,
    settings: Settings,
    monkeypatch: pytest.MonkeyPatch,
    upstream: OpenAIUpstream,
    tmp_path: Path,
) -> None:
    upstream.script("cheap", Hang(10), Hang(10), Hang(10))
    toml = two_models(upstream, tmp_path, attempt_timeout_s=0.3, max_retries=0)
    async with llm_agent(settings, monkeypatch, toml):
        started = time.monotonic()
        result = await complete(bus, ask("hi", strategy="cost"))
        took = time.monotonic() - started
    assert [(a.model, a.outcome) for a in result.attempts] == [
        ("cheap", "timeout"),
        ("smart", "ok"),
    ]
    assert took < 3.0


async def test_complete_never_runs_past_its_deadline(
    bus: Bus,
    settings: Settings,
    monkeypatch: pytest.MonkeyPatch,
    upstream: OpenAIUpstream,
    tmp_path: Path,
) -> None:
    upstream.script("cheap", *[Hang(10)] * 5)
    upstream.script("smart", *[Hang(10)] * 5)
    async with llm_agent(settings, monkeypatch, two_models(upstream, tmp_path)):
        started = time.monotonic()
        with pytest.raises(TimeoutError_):
            await complete(bus, ask("hi", timeout_s=1.5))
        took = time.monotonic() - started
    assert took < 3.0


async def test_complete_client_error_is_not_retried(
    bus: Bus,
    settings: Settings,
    monkeypatch: pytest.MonkeyPatch,
    upstream: OpenAIUpstream,
    tmp_path: Path,
) -> None:
    upstream.script("cheap", Fault(400))
    upstream.script("smart", Fault(400))
    async with llm_agent(settings, monkeypatch, two_models(upstream, tmp_path)):
        with pytest.raises(BadRequestError):
            await complete(bus, ask("hi", strategy="cost"))
    assert [r.model for r in upstream.requests] == ["cheap", "smart"]


async def test_breaker_opens_then_half_opens_with_one_probe_then_closes(
    bus: Bus,
    settings: Settings,
    monkeypatch: pytest.MonkeyPatch,
    upstream: OpenAIUpstream,
    tmp_path: Path,
) -> None:
    toml = two_models(upstream, tmp_path, max_retries=0, breaker_failures=2, breaker_cooldown_s=0.6)
    upstream.script("cheap", Fault(500), Fault(500))

    async def circuit() -> str:
        models = await bus.request("llm", "models", Empty(), ModelsResult)
        return next(m.circuit for m in models.models if m.name == "cheap")

    async with llm_agent(settings, monkeypatch, toml):
        for _ in range(2):
            await complete(bus, ask("hi", strategy="cost"))
        opened = await circuit()
        skipped = await complete(bus, ask("hi", strategy="cost"))
        await anyio.sleep(0.7)
        half_open = await circuit()
        probed = await complete(bus, ask("hi", strategy="cost"))
        closed = await circuit()
    assert opened == "open"
    assert [(a.model, a.outcome) for a in skipped.attempts] == [
        ("cheap", "circuit_open"),
        ("smart", "ok"),
    ]
    assert half_open == "half_open"
    assert probed.model == "cheap" and closed == "closed"


async def test_complete_length_finish_is_a_failure_unless_partial_allowed(
    bus: Bus,
    settings: Settings,
    monkeypatch: pytest.MonkeyPatch,
    upstream: OpenAIUpstream,
    tmp_path: Path,
) -> None:
    for _ in range(3):
        upstream.script("cheap", Reply(text="half an ans", finish_reason="length"))
    async with llm_agent(settings, monkeypatch, two_models(upstream, tmp_path)) as llm:
        whole = await complete(bus, ask("hi", strategy="cost"))
        partial = await complete(bus, ask("hi", strategy="cost", allow_partial=True))
        await llm.settled()
        again = await complete(bus, ask("hi", strategy="cost", allow_partial=True))
    assert [(a.model, a.outcome) for a in whole.attempts] == [
        ("cheap", "truncated"),
        ("smart", "ok"),
    ]
    assert (partial.model, partial.finish_reason, partial.text) == (
        "cheap",
        "length",
        "half an ans",
    )
    assert (partial.cached, again.cached) == ("", "")  # a partial answer is never cached
    assert len(upstream.calls("cheap")) == 3


async def test_complete_streams_deltas_then_returns_the_whole_reply(
    bus: Bus,
    settings: Settings,
    monkeypatch: pytest.MonkeyPatch,
    upstream: OpenAIUpstream,
    tmp_path: Path,
) -> None:
    upstream.script(
        "cheap",
        CutStream(after_chunks=2, text="one two three four"),
        Reply(text="alpha beta gamma"),
    )
    deltas: list[Delta] = []
    inbox = bus.nc.new_inbox()

    async def collect(msg: nats.aio.msg.Msg) -> None:
        deltas.append(msgspec.json.decode(msg.data, type=Delta))

    sub = await bus.nc.subscribe(inbox, cb=collect)
    async with llm_agent(settings, monkeypatch, two_models(upstream, tmp_path)):
        result = await complete(bus, ask("hi", strategy="cost", stream_subject=inbox))
        await bus.nc.flush()
    await sub.unsubscribe()
    assert result.text == "alpha beta gamma"
    assert [a.outcome for a in result.attempts] == ["cut_stream", "ok"]
    last = max(d.attempt for d in deltas)
    assert "".join(d.text for d in deltas if d.attempt == last) == "alpha beta gamma"
    assert [d.seq for d in deltas] == sorted(d.seq for d in deltas)


async def test_complete_refuses_a_stream_subject_that_is_not_an_inbox(
    bus: Bus,
    settings: Settings,
    monkeypatch: pytest.MonkeyPatch,
    upstream: OpenAIUpstream,
    tmp_path: Path,
) -> None:
    async with llm_agent(settings, monkeypatch, two_models(upstream, tmp_path)):
        with pytest.raises(BadRequestError) as caught:
            await complete(bus, ask("hi", stream_subject=f"{settings.prefix}.memory.store"))
    assert "stream_subject" in str(caught.value)
    assert upstream.requests == []


async def test_complete_exact_cache_hit_for_temperature_zero_only(
    bus: Bus,
    settings: Settings,
    monkeypatch: pytest.MonkeyPatch,
    upstream: OpenAIUpstream,
    tmp_path: Path,
) -> None:
    async with llm_agent(settings, monkeypatch, two_models(upstream, tmp_path)):
        first = await complete(bus, ask("define idempotent", task="code"))
        again = await complete(bus, ask("define idempotent", task="code"))
        other = await complete(bus, ask("define idempotent", task="code", max_tokens=99))
        warm = [
            await complete(bus, ask("define idempotent", task="code", temperature=0.7))
            for _ in range(2)
        ]
    assert (first.cached, again.cached, other.cached) == ("", "exact", "")
    assert again.text == first.text and again.cost_usd == 0
    assert [w.cached for w in warm] == ["", ""]
    assert len(upstream.requests) == 4


async def test_complete_never_caches_a_cut_stream_or_an_error(
    bus: Bus,
    settings: Settings,
    monkeypatch: pytest.MonkeyPatch,
    upstream: OpenAIUpstream,
    tmp_path: Path,
) -> None:
    toml = write_toml(tmp_path / "sophia.toml", [model("only", upstream.base_url)], max_retries=0)
    upstream.script("only", CutStream(after_chunks=2), Fault(429), Reply(text="the real one"))
    inbox = bus.nc.new_inbox()
    async with llm_agent(settings, monkeypatch, toml):
        with pytest.raises(UnavailableError):
            await complete(bus, ask("q", task="code", stream_subject=inbox))
        with pytest.raises(UnavailableError):
            await complete(bus, ask("q", task="code"))
        answered = await complete(bus, ask("q", task="code"))
        cached = await complete(bus, ask("q", task="code"))
    assert (answered.text, answered.cached) == ("the real one", "")
    assert (cached.text, cached.cached) == ("the real one", "exact")
    assert len(upstream.requests) == 3


async def test_complete_repairs_invalid_structured_output_once(
    bus: Bus,
    settings: Settings,
    monkeypatch: pytest.MonkeyPatch,
    upstream: OpenAIUpstream,
    tmp_path: Path,
) -> None:
    schema = {
        "type": "object",
        "properties": {"n": {"type": "integer"}},
        "required": ["n"],
        "additionalProperties": False,
    }
    toml = write_toml(
        tmp_path / "sophia.toml", [model("only", upstream.base_url, capabilities=["json_schema"])]
    )
    upstream.script("only", Reply(text='{"n": "four"}'), Reply(text='```json\n{"n": 4}\n```'))
    async with llm_agent(settings, monkeypatch, toml):
        result = await complete(bus, ask("2+2 as JSON", response_schema=schema, schema_name="sum"))
    first, repair = upstream.calls("only")
    assert result.data == {"n": 4}
    assert [a.outcome for a in result.attempts] == ["invalid_output", "ok"]
    assert first.body["response_format"]["type"] == "json_schema"
    assert first.body["response_format"]["json_schema"]["name"] == "sum"
    assert "not of type 'integer'" in repair.body["messages"][-1]["content"]


async def test_complete_schema_without_json_schema_support_goes_in_the_prompt(
    bus: Bus,
    settings: Settings,
    monkeypatch: pytest.MonkeyPatch,
    upstream: OpenAIUpstream,
    tmp_path: Path,
) -> None:
    schema = {"type": "object", "required": ["ok"]}
    toml = write_toml(
        tmp_path / "sophia.toml", [model("only", upstream.base_url, capabilities=["json_mode"])]
    )
    upstream.script("only", Reply(text='{"ok": true}'), Reply(text="nope"), Reply(text="nope"))
    async with llm_agent(settings, monkeypatch, toml):
        result = await complete(bus, ask("json please", response_schema=schema))
        with pytest.raises(UnavailableError):
            await complete(bus, ask("json again please", response_schema=schema))
    sent = upstream.calls("only")[0].body
    assert result.data == {"ok": True}
    assert sent["response_format"] == {"type": "json_object"}
    assert '"required":["ok"]' in sent["messages"][0]["content"]


async def test_complete_refuses_an_invalid_schema(
    bus: Bus,
    settings: Settings,
    monkeypatch: pytest.MonkeyPatch,
    upstream: OpenAIUpstream,
    tmp_path: Path,
) -> None:
    async with llm_agent(settings, monkeypatch, two_models(upstream, tmp_path)):
        with pytest.raises(BadRequestError) as caught:
            await complete(bus, ask("x", response_schema={"type": 12}))
    assert "response_schema" in str(caught.value)


async def test_budget_degrades_to_a_cheaper_model_with_an_event(
    bus: Bus,
    settings: Settings,
    monkeypatch: pytest.MonkeyPatch,
    upstream: OpenAIUpstream,
    tmp_path: Path,
) -> None:
    # worst case on smart: ~100 prompt tokens x $10/M + 1000 x $30/M = ~$0.031; cheap ~$0.002
    toml = two_models(upstream, tmp_path)
    toml.write_text(toml.read_text() + "[llm.budgets]\nper_project_usd = 0.01\n")
    events = await bus.js.subscribe(f"{settings.prefix}.events.llm.degraded")
    async with llm_agent(settings, monkeypatch, toml):
        result = await complete(
            bus, ask("hi", strategy="quality", max_tokens=1000, scope=Scope(project="web"))
        )
        event = await events.next_msg(timeout=5)
    assert (result.model, result.degraded) == ("cheap", True)
    assert [(a.model, a.outcome) for a in result.attempts] == [
        ("smart", "over_budget"),
        ("cheap", "ok"),
    ]
    assert b'"used":"cheap"' in event.data and b"project" in event.data
    assert [r.model for r in upstream.requests] == ["cheap"]


async def test_budget_refuses_with_402_when_nothing_fits(
    bus: Bus,
    settings: Settings,
    monkeypatch: pytest.MonkeyPatch,
    upstream: OpenAIUpstream,
    tmp_path: Path,
) -> None:
    toml = two_models(upstream, tmp_path)
    toml.write_text(toml.read_text() + "[llm.budgets]\nper_task_usd = 0.0001\n")
    async with llm_agent(settings, monkeypatch, toml):
        with pytest.raises(BudgetExceededError) as caught:
            await complete(bus, ask("hi", max_tokens=1000, scope=Scope(task_id="t-1")))
    assert caught.value.code == 402
    assert "task" in str(caught.value) and "t-1" in str(caught.value)
    assert upstream.requests == []


async def test_budget_holds_on_the_fallback_path(
    bus: Bus,
    settings: Settings,
    monkeypatch: pytest.MonkeyPatch,
    upstream: OpenAIUpstream,
    tmp_path: Path,
) -> None:
    # cheap fails every attempt; the fallback smart may cost ~$0.031, over the $0.005 left
    upstream.script("cheap", Fault(500), Fault(500), Fault(500))
    toml = two_models(upstream, tmp_path)
    toml.write_text(toml.read_text() + "[llm.budgets]\nper_project_usd = 0.005\n")
    async with llm_agent(settings, monkeypatch, toml):
        with pytest.raises(UnavailableError) as caught:
            await complete(
                bus, ask("hi", strategy="cost", max_tokens=1000, scope=Scope(project="p"))
            )
    assert "smart: over_budget" in str(caught.value)
    assert len(upstream.calls("cheap")) == 3 and upstream.calls("smart") == []


async def test_budget_concurrent_calls_never_overshoot(
    bus: Bus,
    settings: Settings,
    monkeypatch: pytest.MonkeyPatch,
    upstream: OpenAIUpstream,
    tmp_path: Path,
) -> None:
    toml = write_toml(
        tmp_path / "sophia.toml",
        [
            model(
                "only",
                upstream.base_url,
                input_usd_per_mtok=1.0,
                output_usd_per_mtok=1.0,
                context_window=100_000,
            )
        ],
        budgets={"per_project_usd": 0.01},
    )
    for _ in range(40):  # every call bills its whole max_tokens
        upstream.script(
            "only", Reply(text="x", prompt_tokens=0, completion_tokens=1000, delay_s=0.2)
        )
    outcomes: list[str] = []
    async with llm_agent(settings, monkeypatch, toml):

        async def one() -> None:
            try:
                await complete(
                    bus, ask("go", max_tokens=1000, temperature=1.0, scope=Scope(project="p"))
                )
                outcomes.append("ok")
            except BudgetExceededError:
                outcomes.append("402")

        async with anyio.create_task_group() as tg:
            for _ in range(40):
                tg.start_soon(one)
        await anyio.sleep(0.5)  # the ledger rows are written after the replies
        costs = await bus.request("llm", "costs", CostsRequest(by="project"), CostsResult)
    spent = sum(t.cost_usd for t in costs.totals)
    assert outcomes.count("ok") <= 9  # $0.01 / ~$0.00102 worst case each
    assert outcomes.count("402") >= 31
    assert spent <= 0.01


async def test_complete_emits_a_call_event_without_the_prompt(
    bus: Bus,
    settings: Settings,
    monkeypatch: pytest.MonkeyPatch,
    upstream: OpenAIUpstream,
    tmp_path: Path,
) -> None:
    events = await bus.js.subscribe(f"{settings.prefix}.events.llm.call")
    upstream.script("cheap", Reply(text="the secret answer"))
    async with llm_agent(settings, monkeypatch, two_models(upstream, tmp_path)):
        await complete(
            bus,
            ask("the private prompt", strategy="cost", scope=Scope(project="web", task_id="t9")),
        )
        msg = await events.next_msg(timeout=5)
    event = msgspec.json.decode(msg.data, type=CallEvent)
    assert (event.model, event.project, event.task_id, event.outcome) == (
        "cheap",
        "web",
        "t9",
        "ok",
    )
    assert b"private prompt" not in msg.data and b"secret answer" not in msg.data
