"""W3C trace context in NATS headers, one span per handled message, recorded when configured.

Spans are recorded only when ``OTEL_EXPORTER_OTLP_ENDPOINT`` is set or span files are on
(``SOPHIA_TRACE_FILES``, which ``sophia up`` turns on); otherwise the OpenTelemetry API's
default provider records nothing, yet ``traceparent`` still travels, so a trace started at
the edge continues through every hop.
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterator
from contextlib import AbstractContextManager, contextmanager, nullcontext
from typing import TYPE_CHECKING, Any

from opentelemetry import context as otel_context
from opentelemetry import trace
from opentelemetry.trace import NonRecordingSpan, Span, SpanContext, SpanKind, TraceFlags
from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

if TYPE_CHECKING:
    from bus.config import Settings

_propagator = TraceContextTextMapPropagator()
_tracer = trace.get_tracer("sophia.bus")
_configured = False

TRACE_HEADERS = ("traceparent", "tracestate")
#: the span attribute naming the task a span worked for
TASK_ID = "sophia.task.id"
#: a finished span reaches its file within about this long (``sophia trace`` right after a task)
FILE_EXPORT_DELAY_MS = 500
_TRACEPARENT = re.compile(r"00-([0-9a-f]{32})-([0-9a-f]{16})-([0-9a-f]{2})")


def configure(service_name: str, settings: Settings | None = None) -> bool:
    """Record spans when something takes them; return whether this call set that up.

    Exporters: OTLP when ``OTEL_EXPORTER_OTLP_ENDPOINT`` is set, and span files under
    ``<home>/traces`` when ``settings.trace_files`` is ``on`` (:mod:`bus.spanfiles`). With
    neither nothing is installed, so spans cost nothing. Idempotent.
    """
    global _configured
    otlp = bool(os.environ.get("OTEL_EXPORTER_OTLP_ENDPOINT"))
    files = settings is not None and settings.trace_files == "on"
    if _configured or not (otlp or files):
        return False
    from opentelemetry.sdk.resources import Resource
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import BatchSpanProcessor

    provider = TracerProvider(resource=Resource.create({"service.name": f"sophia-{service_name}"}))
    if otlp:
        from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter

        provider.add_span_processor(BatchSpanProcessor(OTLPSpanExporter()))
    if files and settings is not None:
        from bus.spanfiles import SpanFileExporter, traces_dir

        exporter = SpanFileExporter(
            traces_dir(settings.home_path), service_name, settings.trace_files_max_mb << 20
        )
        provider.add_span_processor(
            BatchSpanProcessor(exporter, schedule_delay_millis=FILE_EXPORT_DELAY_MS)
        )
    trace.set_tracer_provider(provider)
    _configured = True
    return True


def tag_task(task_id: str) -> None:
    """Mark the current span as work of task ``task_id`` (how ``sophia trace`` finds it)."""
    span = trace.get_current_span()
    if span.is_recording():
        span.set_attribute(TASK_ID, task_id)


def shutdown() -> None:
    """Flush spans still buffered for export, if :func:`configure` installed the exporter."""
    if not _configured:
        return
    provider = trace.get_tracer_provider()
    flush = getattr(provider, "shutdown", None)
    if callable(flush):
        flush()


def inject(headers: dict[str, str] | None = None) -> dict[str, str]:
    """Return ``headers`` with the current trace context added (a new dict when None)."""
    carrier = {} if headers is None else headers
    _propagator.inject(carrier)
    return carrier


def extract(headers: dict[str, str] | None) -> otel_context.Context | None:
    """The sender's context from ``headers``, or None when they carry no ``traceparent``.

    The usual shape (version 00, no ``tracestate``) is parsed here at half the propagator's
    cost, since every handled message passes; anything else is the propagator's to judge.
    """
    if not headers:
        return None
    value = headers.get("traceparent")
    if value is None:
        return None
    match = _TRACEPARENT.fullmatch(value) if "tracestate" not in headers else None
    if match is None:
        return _propagator.extract(headers)
    trace_id, span_id = int(match[1], 16), int(match[2], 16)
    if not trace_id or not span_id:
        return _propagator.extract(headers)  # invalid ids: the propagator ignores them
    parent = SpanContext(
        trace_id, span_id, is_remote=True, trace_flags=TraceFlags(int(match[3], 16))
    )
    return trace.set_span_in_context(NonRecordingSpan(parent))


def recording() -> bool:
    """Whether a tracer provider is installed (else spans would record nothing).

    Until one is set, the API's global is its proxy provider, so spans would be dropped; a
    provider can be set only once, so a True answer never changes back.
    """
    return not isinstance(trace.get_tracer_provider(), trace.ProxyTracerProvider)


class _Propagated:
    """Makes the sender's context current without a span (a plain class: this is the hot
    path of every handled message when no SDK is installed, and generators cost more)."""

    __slots__ = ("_headers", "_token")

    def __init__(self, headers: dict[str, str] | None) -> None:
        self._headers = headers
        self._token: object | None = None

    def __enter__(self) -> Span:
        parent = extract(self._headers)
        if parent is not None:
            self._token = otel_context.attach(parent)
        return trace.INVALID_SPAN

    def __exit__(self, *exc_info: object) -> None:
        if self._token is not None:
            otel_context.detach(self._token)  # type: ignore[arg-type]


def message_span(
    subject: str,
    headers: dict[str, str] | None,
    *,
    kind: SpanKind,
    operation: str,
    attributes: dict[str, Any],
) -> AbstractContextManager[Span]:
    """Run the block in a span whose parent is the sender's (from ``headers``).

    With no SDK installed nothing could be recorded, so only the sender's context is
    made current (outgoing messages still carry its ``traceparent``): the hot path
    then skips building a span that would be dropped.
    """
    if not recording():
        return _Propagated(headers)
    return _recorded_span(subject, headers, kind, operation, attributes)


@contextmanager
def _recorded_span(
    subject: str,
    headers: dict[str, str] | None,
    kind: SpanKind,
    operation: str,
    attributes: dict[str, Any],
) -> Iterator[Span]:
    parent = extract(headers)
    attrs = {
        "messaging.system": "nats",
        "messaging.destination.name": subject,
        "messaging.operation.type": operation,
        "messaging.operation.name": operation,
        **attributes,
    }
    with _tracer.start_as_current_span(
        f"{operation} {subject}",
        context=parent,
        kind=kind,
        attributes=attrs,
        record_exception=False,
        set_status_on_exception=False,
    ) as span:
        yield span


_NOT_RECORDED: AbstractContextManager[Span] = nullcontext(trace.INVALID_SPAN)


def client_span(subject: str, operation: str = "send") -> AbstractContextManager[Span]:
    """A producer/client span for an outgoing message; inject inside it.

    ``operation`` is ``send`` for a request (a CLIENT span) or ``publish`` for a durable
    message (a PRODUCER span); both are ``messaging.operation.type`` ``send`` in the messaging
    semantic conventions, and ``messaging.operation.name`` tells them apart. With no SDK
    installed it is a shared no-op (every request passes here)."""
    if not recording():
        return _NOT_RECORDED
    return _tracer.start_as_current_span(
        f"{operation} {subject}",
        kind=SpanKind.CLIENT if operation == "send" else SpanKind.PRODUCER,
        attributes={
            "messaging.system": "nats",
            "messaging.destination.name": subject,
            "messaging.operation.type": "send",
            "messaging.operation.name": operation,
        },
    )
