"""Where traces start: a span per incoming call, continuing the caller's ``traceparent``.

With an OpenTelemetry SDK installed (``OTEL_EXPORTER_OTLP_ENDPOINT`` set, see
:func:`bus.tracing.configure`) the edge records a real SERVER span. Without one it still starts
the trace: the call runs under a non-recording span with fresh random ids (or the caller's
trace id), so ``traceparent`` flows through the bus at the cost of a few microseconds instead
of an SDK span's tens.
"""

from __future__ import annotations

import random
from collections.abc import Mapping
from contextlib import AbstractContextManager

from opentelemetry import context as otel_context
from opentelemetry import trace
from opentelemetry.trace import (
    NonRecordingSpan,
    Span,
    SpanContext,
    SpanKind,
    TraceFlags,
)

from bus import tracing
from bus.config import Settings

_tracer = trace.get_tracer("sophia.edge")
_random = random.Random()  # as the SDK's own id generator: unique, not secret


def configure(settings: Settings | None = None) -> None:
    """Record spans where ``OTEL_EXPORTER_OTLP_ENDPOINT`` or ``settings`` say (idempotent)."""
    tracing.configure("edge", settings)


def carrier_of(headers: Mapping[str, str]) -> dict[str, str] | None:
    """The W3C trace headers of an incoming HTTP request, or None when it has none."""
    carrier = {name: headers[name] for name in tracing.TRACE_HEADERS if name in headers}
    return carrier or None


def trace_id_of(span: Span) -> str:
    ctx = span.get_span_context()
    return format(ctx.trace_id, "032x") if ctx.is_valid else ""


def _unrecorded(carrier: dict[str, str] | None) -> NonRecordingSpan:
    parent = trace.get_current_span(tracing.extract(carrier)).get_span_context()
    trace_id = parent.trace_id if parent.is_valid else _random.getrandbits(128) or 1
    flags = parent.trace_flags if parent.is_valid else TraceFlags(TraceFlags.SAMPLED)
    span_id = _random.getrandbits(64) or 1
    return NonRecordingSpan(SpanContext(trace_id, span_id, is_remote=False, trace_flags=flags))


class _UnrecordedSpan:
    """The edge's span when nothing records: current for the block, so ``traceparent`` flows
    (a plain class: this runs for every call, and generator managers cost more)."""

    __slots__ = ("_carrier", "_token")

    def __init__(self, carrier: dict[str, str] | None) -> None:
        self._carrier = carrier
        self._token: object | None = None

    def __enter__(self) -> Span:
        span = _unrecorded(self._carrier)
        self._token = otel_context.attach(trace.set_span_in_context(span))
        return span

    def __exit__(self, *exc_info: object) -> None:
        otel_context.detach(self._token)  # type: ignore[arg-type]


def edge_span(name: str, carrier: dict[str, str] | None) -> AbstractContextManager[Span]:
    """Run the block as the edge's span for one call; ``carrier``: incoming trace headers."""
    if tracing.recording():
        return _tracer.start_as_current_span(
            name,
            context=tracing.extract(carrier),
            kind=SpanKind.SERVER,
            record_exception=False,
            set_status_on_exception=False,
        )
    return _UnrecordedSpan(carrier)
