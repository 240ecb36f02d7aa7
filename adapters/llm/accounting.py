"""Accounting of every call: an event, a row in L3, and a GenAI span — never the prompt.

The span is set while the call runs (a child of the caller's, following the OpenTelemetry
GenAI semantic conventions); the event on ``sophia.events.llm.call`` and the ledger row are
written after the reply, off the caller's path, so a slow disk or JetStream never slows a
call down. They carry model, provider, tokens, cost, latency, cache, attempts and scope.
"""

from __future__ import annotations

import logging
import time
import uuid
from collections.abc import Awaitable

import msgspec
from opentelemetry import trace
from opentelemetry.trace import Span, Status, StatusCode

from adapters.llm.ledger import CallLedger, CallRecord
from bus import metrics, tracing
from bus.client import Bus
from bus.errors import SophiaError
from bus.schemas.llm import Attempt, CallEvent, CompleteRequest, CompleteResult, DegradedEvent

log = logging.getLogger("sophia.llm")
tracer = trace.get_tracer("sophia.llm")


class Accounting:
    def __init__(self, bus: Bus, ledger: CallLedger) -> None:
        self.bus, self.ledger = bus, ledger

    def span(self) -> trace.Span:
        """The call's span (use as a context manager); named after the model once known."""
        return tracer.start_span("chat", kind=trace.SpanKind.CLIENT)

    def answered(
        self, call_id: str, req: CompleteRequest, result: CompleteResult, span: Span
    ) -> Awaitable[None]:
        """Describe the answer on ``span`` now; returns the writes to run after the reply."""
        _span_attributes(span, req, result.model, result.provider)
        span.set_attribute("gen_ai.response.model", result.model)
        span.set_attribute("gen_ai.usage.input_tokens", result.input_tokens)
        span.set_attribute("gen_ai.usage.output_tokens", result.output_tokens)
        span.set_attribute("gen_ai.response.finish_reasons", [result.finish_reason])
        span.set_attribute("sophia.llm.cost_usd", result.cost_usd)
        span.set_attribute("sophia.llm.cached", result.cached or "none")
        span.set_attribute("sophia.llm.attempts", len(result.attempts))
        _measure(result, "ok")
        return self._write(
            call_id, req, result.model, result.provider, result.attempts, "ok", 0, result
        )

    def failed(
        self,
        call_id: str,
        req: CompleteRequest,
        attempts: list[Attempt],
        error: SophiaError,
        latency_ms: float,
        span: Span,
    ) -> Awaitable[None]:
        """Mark ``span`` failed now; returns the writes to run after the reply."""
        model = attempts[-1].model if attempts else req.model
        _span_attributes(span, req, model, "")
        span.set_status(Status(StatusCode.ERROR, error.description))
        span.set_attribute("error.type", type(error).__name__)
        failed = CompleteResult(text="", model=model, provider="", latency_ms=latency_ms)
        # a model no attempt reached is the caller's text, not a configured name: not a label
        _measure(msgspec.structs.replace(failed, model=model if attempts else ""), "error")
        return self._write(call_id, req, model, "", attempts, "error", error.code, failed)

    async def degraded(
        self, call_id: str, req: CompleteRequest, wanted: str, used: str, budget: str
    ) -> None:
        event = DegradedEvent(
            call_id=call_id,
            wanted=wanted,
            used=used,
            budget=budget,
            task_id=req.scope.task_id,
            project=req.scope.project,
        )
        try:
            await self.bus.emit(event, "llm", "degraded", msg_id=f"{call_id}.degraded")
        except SophiaError as exc:
            log.warning("llm_event_lost", extra={"event": "degraded", "code": exc.code})

    async def _write(
        self,
        call_id: str,
        req: CompleteRequest,
        model: str,
        provider: str,
        attempts: list[Attempt],
        outcome: str,
        code: int,
        result: CompleteResult,
    ) -> None:
        event = CallEvent(
            call_id=call_id,
            model=model,
            provider=provider,
            task=req.task,
            task_id=req.scope.task_id,
            project=req.scope.project,
            input_tokens=result.input_tokens,
            output_tokens=result.output_tokens,
            cost_usd=result.cost_usd,
            latency_ms=result.latency_ms,
            cached=result.cached,
            outcome=outcome,
            error_code=code,
            attempts=attempts,
            degraded=result.degraded,
        )
        try:
            await self.bus.emit(event, "llm", "call", msg_id=call_id)
        except SophiaError as exc:
            log.warning("llm_event_lost", extra={"event": "call", "code": exc.code})
        await self.ledger.put(_row(event))


def _row(event: CallEvent) -> CallRecord:
    return CallRecord(
        id=event.call_id,
        at=time.time(),
        model=event.model,
        provider=event.provider,
        task=event.task,
        task_id=event.task_id,
        project=event.project,
        input_tokens=event.input_tokens,
        output_tokens=event.output_tokens,
        cost_usd=event.cost_usd,
        latency_ms=event.latency_ms,
        cached=event.cached,
        outcome=event.outcome,
        attempts=len(event.attempts),
        degraded=event.degraded,
    )


def _measure(result: CompleteResult, outcome: str) -> None:
    """Count the call on the gateway's metrics (model names are configured ones: bounded)."""
    model = {"model": result.model or "none"}
    metrics.llm_calls.add(1, {**model, "outcome": outcome, "cached": result.cached or "none"})
    metrics.llm_duration.record(result.latency_ms / 1000, {**model, "outcome": outcome})
    if result.input_tokens:
        metrics.llm_tokens.add(result.input_tokens, {**model, "type": "input"})
    if result.output_tokens:
        metrics.llm_tokens.add(result.output_tokens, {**model, "type": "output"})
    if result.cost_usd > 0:
        metrics.llm_cost.add(result.cost_usd, model)


def _span_attributes(span: Span, req: CompleteRequest, model: str, provider: str) -> None:
    span.update_name(f"chat {model}" if model else "chat")
    span.set_attribute("gen_ai.operation.name", "chat")
    # both names: gen_ai.system until semantic conventions 1.36, gen_ai.provider.name since
    span.set_attribute("gen_ai.system", provider or "unknown")
    span.set_attribute("gen_ai.provider.name", provider or "unknown")
    span.set_attribute("gen_ai.request.model", model)
    span.set_attribute("gen_ai.request.max_tokens", req.max_tokens)
    span.set_attribute("gen_ai.request.temperature", req.temperature)
    span.set_attribute("sophia.llm.task", req.task)
    if req.scope.project:
        span.set_attribute("sophia.project", req.scope.project)
    if req.scope.task_id:
        span.set_attribute(tracing.TASK_ID, req.scope.task_id)


def new_call_id() -> str:
    return uuid.uuid4().hex
