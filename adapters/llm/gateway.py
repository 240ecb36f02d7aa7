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

import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

import anyio
from opentelemetry import trace

from adapters.llm import backoff, structured, tokens
from adapters.llm.accounting import Accounting, new_call_id
from adapters.llm.breaker import Breakers
from adapters.llm.budget import Budgets, BudgetScope, Reservation
from adapters.llm.cache import CallCache, key_for
from adapters.llm.config import SETUP_HINT, LlmConfig, ModelSpec
from adapters.llm.router import Need, chain
from adapters.llm.transport import AttemptError, Call, Completion, Transports
from bus.errors import (
    BadRequestError,
    BudgetExceededError,
    SophiaError,
    TimeoutError_,
    UnavailableError,
)
from bus.schemas.llm import Attempt, CompleteRequest, CompleteResult, Delta

log = logging.getLogger("sophia.llm")

OnDelta = Callable[[Delta], Awaitable[None]]
Later = Callable[[Awaitable[None]], None]  # runs work after the reply (accounting, puts)


@dataclass(slots=True)
class CallState:
    """What one call has done so far."""

    req: CompleteRequest
    call_id: str
    need: Need
    deadline: float
    on_delta: OnDelta | None
    attempts: list[Attempt] = field(default_factory=list)
    refused: BudgetExceededError | None = None
    cost_usd: float = 0.0  # what every attempt so far cost (or may have cost)
    number: int = 0  # attempts sent, over every model
    seq: int = 0  # deltas published

    @property
    def remaining_s(self) -> float:
        return self.deadline - time.monotonic()

    @property
    def scope(self) -> BudgetScope:
        return BudgetScope(task_id=self.req.scope.task_id, project=self.req.scope.project)


@dataclass(frozen=True, slots=True)
class InvalidAnswer:
    """The model answered, but not with what the schema asks for."""

    text: str
    error: structured.InvalidOutput


@dataclass(frozen=True, slots=True)
class Answer:
    spec: ModelSpec
    completion: Completion
    data: object
    input_tokens: int
    output_tokens: int
    cost_usd: float


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
        self.transports = transports
        self.budgets = budgets
        self.cache = cache
        self.accounting = accounting
        self.later = later
        self.breakers = Breakers(self.table.breaker_failures, self.table.breaker_cooldown_s)
        self.limiters = {m.name: anyio.CapacityLimiter(m.concurrency) for m in config.models}

    def in_flight(self, name: str) -> int:
        limiter = self.limiters.get(name)
        return limiter.borrowed_tokens if limiter else 0

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
        if key is not None and answer.spec.name == key.model:
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
            breaker = self.breakers[spec.breaker_key]
            if not breaker.allow():
                state.attempts.append(Attempt(model=spec.name, outcome="circuit_open"))
                continue
            try:
                answer = await self._run_model(state, spec, worst)
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

    # ---- one model, with retries --------------------------------------------------------------

    async def _run_model(self, state: CallState, spec: ModelSpec, worst: float) -> Answer | None:
        """Attempts on ``spec`` until one answers, retries run out, or the deadline is near.

        Returns None to move on to the next model. Raises BudgetExceededError.
        """
        breaker = self.breakers[spec.breaker_key]
        messages = _wire_messages(state.req, spec)
        repaired = False
        retry = 0
        while True:
            outcome = await self._attempt(state, spec, messages, worst)
            if isinstance(outcome, Answer):
                breaker.succeeded()
                return outcome
            if isinstance(outcome, InvalidAnswer):
                breaker.succeeded()  # the provider answered; the answer was wrong
                if repaired:
                    return None
                repaired = True
                messages = structured.repair(messages, outcome.text, outcome.error)
                continue
            if outcome.blames_provider:
                breaker.failed()
            else:
                breaker.abandoned()
            if not outcome.retryable or retry >= self.table.max_retries or not breaker.allow():
                return None
            wait = backoff.delay(
                retry,
                base_s=self.table.backoff_base_s,
                cap_s=self.table.backoff_max_s,
                retry_after_s=outcome.retry_after_s,
                remaining_s=state.remaining_s,
            )
            if wait is None:
                breaker.abandoned()
                return None
            await anyio.sleep(wait)
            retry += 1

    async def _attempt(
        self, state: CallState, spec: ModelSpec, messages: list[dict[str, str]], worst: float
    ) -> Answer | AttemptError | InvalidAnswer:
        """One attempt, its budget reserved first and settled after. Raises BudgetExceededError."""
        reservation = await self.budgets.reserve(state.scope, worst)
        number = state.number
        state.number += 1
        started = time.monotonic()
        try:
            async with self.limiters[spec.name]:
                completion = await self.transports.attempt(
                    spec,
                    _call(state, spec, messages, number),
                    timeout_s=max(0.001, min(self.table.attempt_timeout_s, state.remaining_s)),
                    on_delta=self._deltas(state, spec, number, state.on_delta)
                    if state.on_delta
                    else None,
                )
        except AttemptError as exc:
            self._record(state, spec, exc.outcome, exc.status, started)
            state.cost_usd += self._settle(reservation, spec, state.need.prompt_tokens, exc)
            return exc
        except BaseException:
            with anyio.CancelScope(shield=True):
                await self.budgets.settle(reservation, worst)  # billed or not: assume the worst
            raise
        return self._judge(state, spec, messages, completion, reservation, started)

    def _judge(
        self,
        state: CallState,
        spec: ModelSpec,
        messages: list[dict[str, str]],
        completion: Completion,
        reservation: Reservation,
        started: float,
    ) -> Answer | AttemptError | InvalidAnswer:
        input_tokens = completion.input_tokens
        if input_tokens is None:
            input_tokens = state.need.prompt_tokens
        output_tokens = completion.output_tokens
        if output_tokens is None:
            output_tokens = tokens.count(completion.text)
        cost = spec.cost_usd(input_tokens, output_tokens)
        state.cost_usd += cost
        self.later(self.budgets.settle(reservation, cost))
        if completion.finish_reason == "length" and not state.req.allow_partial:
            self._record(state, spec, "truncated", completion.status, started)
            return AttemptError("truncated", completion.status)
        data = None
        if state.req.response_schema is not None:
            try:
                data = structured.parse(completion.text, state.req.response_schema)
            except structured.InvalidOutput as exc:
                self._record(state, spec, "invalid_output", completion.status, started)
                return InvalidAnswer(completion.text, exc)
        self._record(state, spec, "ok", completion.status, started)
        return Answer(spec, completion, data, input_tokens, output_tokens, cost)

    def _settle(
        self, reservation: Reservation, spec: ModelSpec, prompt_tokens: int, error: AttemptError
    ) -> float:
        """Settle a failed attempt; returns what it may have cost."""
        if error.outcome in ("cut_stream", "timeout") or error.partial_tokens:
            # a provider may bill a call it did not finish: count the prompt and what came
            cost = spec.cost_usd(prompt_tokens, error.partial_tokens)
            self.later(self.budgets.settle(reservation, cost))
            return cost
        self.later(self.budgets.release(reservation))
        return 0.0

    def _record(
        self, state: CallState, spec: ModelSpec, outcome: str, status: int, started: float
    ) -> None:
        state.attempts.append(
            Attempt(
                model=spec.name,
                outcome=outcome,  # type: ignore[arg-type]
                status=status,
                latency_ms=round((time.monotonic() - started) * 1000, 3),
            )
        )

    def _deltas(
        self, state: CallState, spec: ModelSpec, number: int, on_delta: OnDelta
    ) -> Callable[[str], Awaitable[None]]:
        async def publish(text: str) -> None:
            state.seq += 1
            await on_delta(Delta(seq=state.seq, attempt=number, model=spec.name, text=text))

        return publish


def _wire_messages(req: CompleteRequest, spec: ModelSpec) -> list[dict[str, str]]:
    messages = [{"role": m.role, "content": m.content} for m in req.messages]
    if req.response_schema is not None:
        extra = structured.instructions(spec, req.response_schema)
        if extra is not None:
            messages.insert(0, extra)
    return messages


def _call(state: CallState, spec: ModelSpec, messages: list[dict[str, str]], number: int) -> Call:
    headers = {"x-sophia-call": state.call_id, "x-sophia-attempt": str(number)}
    if number > 0:
        headers["x-portkey-cache-force-refresh"] = "true"
    req = state.req
    response_format = None
    if req.response_schema is not None:
        response_format = structured.response_format(spec, req.response_schema, req.schema_name)
    return Call(messages, req.max_tokens, req.temperature, response_format, headers)


def _why(need: Need) -> str:
    needed = f"a context window of {need.prompt_tokens + need.max_tokens} tokens"
    return needed + (" and JSON output" if need.schema else "")
