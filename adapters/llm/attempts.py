"""One model's attempts for a call: each budgeted, bounded, judged; retried while it helps.

Guarantees of :meth:`ModelAttempts.run`: before every attempt the worst-case cost is
reserved on every budget that applies (a refusal raises BudgetExceededError before anything
is sent) and afterwards settled with the real usage, or released when nothing was billed;
retries wait a jittered, growing delay (``Retry-After`` honoured) and never past the call's
deadline; a retry carries ``x-portkey-cache-force-refresh`` and its own attempt number; an
answer counts only when complete (final chunk seen, ``finish_reason`` not ``length`` unless
allowed) and, with a schema, valid — an invalid one gets one repair attempt that quotes the
validation error.
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

import anyio

from adapters.llm import backoff, structured, tokens
from adapters.llm.breaker import Breakers
from adapters.llm.budget import Budgets, BudgetScope, Reservation
from adapters.llm.config import LlmTable, ModelSpec
from adapters.llm.router import Need
from adapters.llm.transport import AttemptError, Call, Completion, Transports
from bus.errors import BudgetExceededError
from bus.schemas.llm import Attempt, CompleteRequest, Delta, Message

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
        scope = self.req.scope
        return BudgetScope(
            task_id=scope.task_id, project=scope.project, task_limit_usd=scope.budget_usd
        )


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


class ModelAttempts:
    """Runs the attempts on one model for a call; shared by every call of a gateway."""

    def __init__(
        self,
        table: LlmTable,
        models: tuple[ModelSpec, ...],
        *,
        transports: Transports,
        budgets: Budgets,
        later: Later,
    ) -> None:
        self.table = table
        self.transports = transports
        self.budgets = budgets
        self.later = later
        self.breakers = Breakers(table.breaker_failures, table.breaker_cooldown_s)
        self.limiters = {m.name: anyio.CapacityLimiter(m.concurrency) for m in models}

    def in_flight(self, name: str) -> int:
        limiter = self.limiters.get(name)
        return limiter.borrowed_tokens if limiter else 0

    async def run(self, state: CallState, spec: ModelSpec, worst: float) -> Answer | None:
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
                worst += spec.cost_usd(_repair_tokens(outcome), 0)  # the longer prompt
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


def _repair_tokens(invalid: InvalidAnswer) -> int:
    """Prompt tokens the repair attempt adds: the invalid answer and the error quoted."""
    return tokens.estimate(
        [
            Message(role="assistant", content=invalid.text),
            Message(role="user", content=str(invalid.error)[: structured.MAX_QUOTED_ERROR + 200]),
        ]
    )


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
