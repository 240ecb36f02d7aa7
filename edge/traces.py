"""Where traces start: a span per incoming call, continuing the caller's ``traceparent``.

With an OpenTelemetry SDK installed (``OTEL_EXPORTER_OTLP_ENDPOINT`` set, see
:func:`bus.tracing.configure`) the edge records a real SERVER span. Without one it still starts
the trace: the call runs under a non-recording span with fresh random ids (or the caller's
trace id), so ``traceparent`` flows through the bus at the cost of a few microseconds instead
of an SDK span's tens.
"""

from __future__ import annotations

import random
from collections.abc import Iterator
from contextlib import contextmanager

from opentelemetry import trace
from opentelemetry.trace import (
    NonRecordingSpan,
    Span,
    SpanContext,
    SpanKind,
    TraceFlags,
)

from bus import tracing

_tracer = trace.get_tracer("sophia.edge")
_random = random.Random()  # as the SDK's own id generator: unique, not secret


def configure() -> None:
    """Export spans when ``OTEL_EXPORTER_OTLP_ENDPOINT`` says where (idempotent)."""
    tracing.configure("edge")


def trace_id_of(span: Span) -> str:
    ctx = span.get_span_context()
    return format(ctx.trace_id, "032x") if ctx.is_valid else ""


def _unrecorded(carrier: dict[str, str] | None) -> NonRecordingSpan:
    parent = trace.get_current_span(tracing.extract(carrier)).get_span_context()
    trace_id = parent.trace_id if parent.is_valid else _random.getrandbits(128) or 1
    flags = parent.trace_flags if parent.is_valid else TraceFlags(TraceFlags.SAMPLED)
    span_id = _random.getrandbits(64) or 1
    return NonRecordingSpan(SpanContext(trace_id, span_id, is_remote=False, trace_flags=flags))


@contextmanager
def edge_span(name: str, carrier: dict[str, str] | None) -> Iterator[Span]:
    """Run the block as the edge's span for one call; ``carrier``: incoming trace headers."""
    if tracing.recording():
        with _tracer.start_as_current_span(
            name,
            context=tracing.extract(carrier),
            kind=SpanKind.SERVER,
            record_exception=False,
            set_status_on_exception=False,
        ) as span:
            yield span
        return
    span = _unrecorded(carrier)
    with trace.use_span(span, end_on_exit=False):
        yield span
