"""The model gateway: one call, routed, budgeted, retried, cached, accounted.

Guarantees of :meth:`Gateway.complete`:

- every attempt, retries and fallbacks included, first reserves its worst-case cost on every
  budget that applies (prompt estimate x input price + ``max_tokens`` x output price) and
  settles the reservation with the real usage afterwards, so concurrent calls never
  overshoot a budget; a model that does not fit is skipped for a cheaper capable one
  (``degraded``), and when none fits the call is a 402 naming the budget;
- it never runs past its deadline: each attempt has its own timeout, retries (429 honouring
  ``Retry-After``, 5xx, timeouts, dropped connections and cut streams) wait a jittered,
  growing delay, at most ``max_retries`` per model, then the next model is tried;
- a provider whose circuit breaker is open is skipped;
- only a complete answer is returned: a stream that ends without its final chunk, or
  ``finish_reason`` ``length`` when the caller did not allow partial output, is a failed
  attempt; with a schema, ``data`` is the validated object (one repair attempt first);
- a retry is never a byte-identical request to a caching upstream: it carries Portkey's
  ``x-portkey-cache-force-refresh`` and its own attempt number;
- only complete answers at temperature 0 are cached, and reused only as
  :mod:`adapters.llm.cache` allows.
"""

from __future__ import annotations

import time

from opentelemetry import trace

from adapters.llm import structured, tokens
from adapters.llm.accounting import Accounting, new_call_id
from adapters.llm.attempts import Answer, CallState, Later, ModelAttempts, OnDelta
from adapters.llm.budget import Budgets
from adapters.llm.cache import CallCache, key_for
from adapters.llm.config import SETUP_HINT, LlmConfig, ModelSpec
from adapters.llm.router import Need, chain
from adapters.llm.transport import Transports
from bus.errors import (
    BadRequestError,
    BudgetExceededError,
    SophiaError,
    TimeoutError_,
    UnavailableError,
)
from bus.schemas.llm import Attempt, CompleteRequest, CompleteResult, Delta


class Gateway:
    def __init__(
        self,
        config: LlmConfig,
        *,
        transports: Transports,
        budgets: Budgets,
        cache: CallCache,
        accounting: Accounting,
        later: Later,
    ) -> None:
        self.config = config
        self.table = config.table
        self.cache = cache
        self.accounting = accounting
        self.later = later
        self.attempts = ModelAttempts(
            config.table, config.models, transports=transports, budgets=budgets, later=later
        )

    async def complete(
        self, req: CompleteRequest, *, on_delta: OnDelta | None = None
    ) -> CompleteResult:
        """Answer one call; see the module docstring for what is guaranteed.

        Raises BadRequestError (nothing can take it), BudgetExceededError (402),
        TimeoutError_ (the deadline passed), UnavailableError (every model failed, or none
        is configured).
        """
        started = time.monotonic()
        call_id = new_call_id()
        attempts: list[Attempt] = []
        span = self.accounting.span()
        with trace.use_span(span, end_on_exit=True):
            try:
                state = self._prepare(req, on_delta, started, call_id)
                attempts = state.attempts
                result = await self._complete(state, started)
            except SophiaError as exc:
                latency_ms = round((time.monotonic() - started) * 1000, 3)
                self.later(self.accounting.failed(call_id, req, attempts, exc, latency_ms, span))
                raise
            self.later(self.accounting.answered(call_id, req, result, span))
        return result

    async def _complete(self, state: CallState, started: float) -> CompleteResult:
        models = self._chain(state)
        key = key_for(state.req, models[0].name)
        hit = await self.cache.lookup(key) if key is not None else None
        if hit is not None and key is not None:
            cached = await self._from_cache(state, models[0], hit, started)
            if cached is not None:
                return cached
        answer = await self._run_chain(state, models)
        finished = answer.completion.finish_reason == "stop"  # never a partial answer
        if key is not None and finished and answer.spec.name == key.model:
            self.later(self.cache.put(key, answer.completion.text))
        degraded = state.refused is not None and answer.spec is not models[0]
        if degraded:
            budget = state.refused.description if state.refused else ""
            self.later(
                self.accounting.degraded(
                    state.call_id, state.req, models[0].name, answer.spec.name, budget
                )
            )
        return CompleteResult(
            text=answer.completion.text,
            data=answer.data,
            model=answer.spec.name,
            provider=answer.spec.provider,
            input_tokens=answer.input_tokens,
            output_tokens=answer.output_tokens,
            cost_usd=round(state.cost_usd, 9),
            latency_ms=round((time.monotonic() - started) * 1000, 3),
            attempts=state.attempts,
            degraded=degraded,
            finish_reason=answer.completion.finish_reason,
        )

    # ---- one call ---------------------------------------------------------------------------

    def _prepare(
        self, req: CompleteRequest, on_delta: OnDelta | None, started: float, call_id: str
    ) -> CallState:
        if not self.config.configured:
            raise UnavailableError(SETUP_HINT)
        if req.response_schema is not None:
            structured.check_schema(req.response_schema)
        need = Need(
            task=req.task,
            strategy=req.strategy,
            prompt_tokens=tokens.estimate(req.messages),
            max_tokens=req.max_tokens,
            schema=req.response_schema is not None,
        )
        deadline = started + (req.timeout_s or self.table.deadline_s)
        return CallState(req, call_id, need, deadline, on_delta)

    def _chain(self, state: CallState) -> list[ModelSpec]:
        req = state.req
        if req.model:
            spec = self.config.model(req.model)
            if spec is None:
                raise BadRequestError("model: no such model is configured (see sophia.llm.models)")
            pinned = chain([spec], (), state.need)
            if not pinned:
                raise BadRequestError(
                    f"model: {spec.name} cannot take this call ({_why(state.need)})"
                )
            return pinned
        models = chain(self.config.models, self.config.routes.get(req.task, ()), state.need)
        if not models:
            raise BadRequestError(
                f"messages: no configured model can take this call ({_why(state.need)})"
            )
        return models

    async def _from_cache(
        self, state: CallState, spec: ModelSpec, hit: tuple[str, str], started: float
    ) -> CompleteResult | None:
        """The cached answer as a reply; None when it no longer fits the schema."""
        text, kind = hit
        data = None
        if state.req.response_schema is not None:
            try:
                data = structured.parse(text, state.req.response_schema)
            except structured.InvalidOutput:
                return None
        if state.on_delta is not None:
            await state.on_delta(Delta(seq=0, attempt=0, model=spec.name, text=text))
        return CompleteResult(
            text=text,
            data=data,
            model=spec.name,
            provider=spec.provider,
            latency_ms=round((time.monotonic() - started) * 1000, 3),
            cached=kind,  # type: ignore[arg-type]
        )

    async def _run_chain(self, state: CallState, models: list[ModelSpec]) -> Answer:
        ceiling: float | None = None  # after a budget refusal: only models cheaper than that
        for spec in models:
            worst = spec.cost_usd(state.need.prompt_tokens, state.need.max_tokens)
            if ceiling is not None and worst >= ceiling:
                state.attempts.append(Attempt(model=spec.name, outcome="over_budget"))
                continue
            if state.remaining_s <= 0:
                break
            breaker = self.attempts.breakers[spec.breaker_key]
            if not breaker.allow():
                state.attempts.append(Attempt(model=spec.name, outcome="circuit_open"))
                continue
            try:
                answer = await self.attempts.run(state, spec, worst)
            except BudgetExceededError as exc:
                breaker.abandoned()
                state.refused = state.refused or exc
                ceiling = worst
                state.attempts.append(Attempt(model=spec.name, outcome="over_budget"))
                continue
            if answer is not None:
                return answer
        raise self._failure(state)

    def _failure(self, state: CallState) -> SophiaError:
        outcomes = [a.outcome for a in state.attempts]
        if state.refused is not None and all(o == "over_budget" for o in outcomes):
            return state.refused
        summary = ", ".join(f"{a.model}: {a.outcome}" for a in state.attempts[-6:]) or "none"
        if state.remaining_s <= 0:
            return TimeoutError_(f"the call's deadline passed; attempts: {summary}")
        if outcomes and all(o == "client_error" for o in outcomes):
            return BadRequestError(f"every model refused the request; attempts: {summary}")
        return UnavailableError(f"no model answered; attempts: {summary}")


def _why(need: Need) -> str:
    needed = f"a context window of {need.prompt_tokens + need.max_tokens} tokens"
    return needed + (" and JSON output" if need.schema else "")
