"""Trace context crosses agents: every handler span is the child of its sender's span."""

from __future__ import annotations

import anyio
import pytest
from opentelemetry import trace
from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind

from bus import Agent, Bus, Settings, endpoint, tracing
from tests.bus.agents import EchoAgent, EchoReply, EchoRequest, Job, Worker
from tests.polling import wait_for

pytestmark = pytest.mark.anyio


class RelayAgent(Agent, name="relay"):
    """Forwards a request to the echo agent over the bus."""

    @endpoint
    async def forward(self, req: EchoRequest) -> EchoReply:
        """Ask echo.say and return its reply."""
        return await self.bus.request("echo", "say", req, EchoReply)


def one(spans: list[ReadableSpan], name: str, kind: SpanKind) -> ReadableSpan:
    [span] = [s for s in spans if s.name == name and s.kind == kind]
    return span


async def test_trace_context_crosses_two_agents(
    spans: InMemorySpanExporter, settings: Settings, bus: Bus
) -> None:
    spans.clear()
    prefix = settings.prefix
    async with anyio.create_task_group() as tg:
        echo = await tg.start(EchoAgent(settings).run)
        relay = await tg.start(RelayAgent(settings).run)
        with trace.get_tracer("test").start_as_current_span("caller") as root:
            reply = await bus.request("relay", "forward", EchoRequest(text="t"), EchoReply)
        echo.stop()
        relay.stop()
    assert reply.text == "t"
    finished = list(spans.get_finished_spans())
    caller_send = one(finished, f"send {prefix}.relay.forward", SpanKind.CLIENT)
    relay_process = one(finished, f"process {prefix}.relay.forward", SpanKind.SERVER)
    relay_send = one(finished, f"send {prefix}.echo.say", SpanKind.CLIENT)
    echo_process = one(finished, f"process {prefix}.echo.say", SpanKind.SERVER)
    trace_id = root.get_span_context().trace_id
    assert {s.context.trace_id for s in (caller_send, relay_process, relay_send, echo_process)} == {
        trace_id
    }
    assert caller_send.parent.span_id == root.get_span_context().span_id
    assert relay_process.parent.span_id == caller_send.context.span_id
    assert relay_send.parent.span_id == relay_process.context.span_id
    assert echo_process.parent.span_id == relay_send.context.span_id
    assert echo_process.attributes["messaging.system"] == "nats"
    assert echo_process.attributes["messaging.destination.name"] == f"{prefix}.echo.say"
    assert echo_process.attributes["messaging.consumer.group.name"] == "echo"


async def test_trace_context_travels_with_work_items(
    spans: InMemorySpanExporter, settings: Settings, bus: Bus
) -> None:
    spans.clear()
    async with anyio.create_task_group() as tg:
        worker = await tg.start(Worker(settings).run)
        with trace.get_tracer("test").start_as_current_span("producer") as root:
            await bus.submit_work("worker", Job(id="traced"), msg_id="traced")
        await wait_for(lambda: worker.done == ["traced"])
        worker.stop()
    finished = list(spans.get_finished_spans())
    work_subject = bus.subjects.work("worker")
    publish = one(finished, f"publish {work_subject}", SpanKind.PRODUCER)
    process = one(finished, f"process {work_subject}", SpanKind.CONSUMER)
    assert publish.parent.span_id == root.get_span_context().span_id
    assert process.parent.span_id == publish.context.span_id
    assert process.context.trace_id == root.get_span_context().trace_id
    assert process.attributes["messaging.nats.delivery_count"] == 1


_TRACE = "0af7651916cd43dd8448eb211c80319c"


@pytest.mark.parametrize(
    "headers",
    [
        {"traceparent": f"00-{_TRACE}-b7ad6b7169203331-01"},
        {"traceparent": f"00-{_TRACE}-b7ad6b7169203331-00"},
        {"traceparent": f"00-{_TRACE}-b7ad6b7169203331-01", "tracestate": "vendor=x"},
        {"traceparent": f"00-{'0' * 32}-b7ad6b7169203331-01"},
        {"traceparent": f"00-{_TRACE}-{'0' * 16}-01"},
        {"traceparent": f"00-{_TRACE.upper()}-B7AD6B7169203331-01"},
        {"traceparent": f"ff-{_TRACE}-b7ad6b7169203331-01"},
        {"traceparent": f"01-{_TRACE}-b7ad6b7169203331-01-future"},
        {"traceparent": "garbage"},
    ],
    ids=["sampled", "unsampled", "tracestate", "zero-trace", "zero-span", "upper-case",
         "version-ff", "future-version", "garbage"],
)  # fmt: skip
def test_tracing_extract_agrees_with_the_w3c_propagator(headers: dict[str, str]) -> None:
    ours = tracing.extract(headers)
    theirs = tracing._propagator.extract(headers)
    assert ours is not None
    ours_span = trace.get_current_span(ours).get_span_context()
    theirs_span = trace.get_current_span(theirs).get_span_context()
    assert ours_span == theirs_span
    assert ours_span.trace_state == theirs_span.trace_state
