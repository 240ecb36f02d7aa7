"""Every call is audited, traced from the edge on, and cancellable by the client."""

from __future__ import annotations

from collections.abc import AsyncIterator

import anyio
import httpx
import msgspec
import pytest
from nats.aio.subscription import Subscription

from bus import Bus
from bus.schemas.edge import AuditEvent, CallCancelled
from edge.audit import Auditor
from tests.edge.agents import EchoAgent
from tests.edge.clients import http_session
from tests.edge.conftest import RunningEdge

pytestmark = pytest.mark.anyio

TRACE_ID = "4bf92f3577b34da6a3ce929d0e0e4736"


@pytest.fixture
async def audit(bus: Bus) -> AsyncIterator[Subscription]:
    sub = await bus.nc.subscribe(bus.subjects.event("edge", "audit"))
    yield sub
    await sub.unsubscribe()


async def next_events(sub: Subscription, count: int) -> list[tuple[bytes, AuditEvent]]:
    events = []
    with anyio.fail_after(5):
        while len(events) < count:
            msg = await sub.next_msg(timeout=5)
            events.append((msg.data, msgspec.json.decode(msg.data, type=AuditEvent)))
    return events


async def test_each_call_is_audited_without_its_payload(
    http: httpx.AsyncClient, audit: Subscription
) -> None:
    await http.post("/v1/echo/say", json={"text": "my-secret-value"})
    await http.post("/v1/echo/find", json={"query": "another-secret"})
    async with httpx.AsyncClient(base_url=str(http.base_url)) as anonymous:
        await anonymous.post("/v1/echo/say", json={"text": "x"})
    (raw_ok, ok), (raw_missing, missing), (_, refused) = await next_events(audit, 3)
    assert (ok.principal, ok.transport, ok.service, ok.endpoint) == (
        "tester",
        "http",
        "echo",
        "say",
    )
    assert (ok.outcome, ok.code) == ("ok", 200)
    assert ok.latency_ms > 0 and ok.call_id and len(ok.trace_id) == 32
    assert (missing.outcome, missing.code, missing.endpoint) == ("error", 404, "find")
    assert (refused.principal, refused.code) == ("", 401)
    assert b"secret" not in raw_ok + raw_missing


async def test_trace_continues_an_incoming_traceparent(http: httpx.AsyncClient) -> None:
    traceparent = f"00-{TRACE_ID}-00f067aa0ba902b7-01"
    response = await http.post("/v1/echo/traced", json={}, headers={"traceparent": traceparent})
    assert response.json() == {"trace_id": TRACE_ID}


async def test_trace_starts_at_the_edge(http: httpx.AsyncClient, audit: Subscription) -> None:
    first = (await http.post("/v1/echo/traced", json={})).json()["trace_id"]
    second = (await http.post("/v1/echo/traced", json={})).json()["trace_id"]
    events = [event for _, event in await next_events(audit, 2)]
    assert len(first) == 32 and int(first, 16) != 0
    assert first != second
    assert [e.trace_id for e in events] == [first, second]


async def test_mcp_cancellation_reaches_the_bus_and_the_agent(
    edge: RunningEdge, token: str, bus: Bus, echo: EchoAgent, audit: Subscription
) -> None:
    cancels = await bus.nc.subscribe(bus.subjects.event("edge", "cancel"))
    async with http_session(edge.mcp, token) as session:
        with anyio.move_on_after(0.5):
            await session.call_tool("echo_slow", {"steps": 0, "wait_s": 30})
        with anyio.fail_after(5):
            while not echo.cancelled:  # noqa: ASYNC110
                await anyio.sleep(0.02)
        after = await session.call_tool("echo_say", {"text": "next"})
    events = []
    with anyio.fail_after(5):
        while not any(e.call_id for e in events):
            events.append(
                msgspec.json.decode((await cancels.next_msg(timeout=5)).data, type=CallCancelled)
            )
    await cancels.unsubscribe()
    audited = [e for _, e in await next_events(audit, 2)]
    assert echo.cancelled == [next(e.call_id for e in events if e.call_id)]
    assert any(e.session for e in events)  # the client's cancel, as the replicas heard it
    assert (audited[0].endpoint, audited[0].outcome, audited[0].code) == ("slow", "cancelled", 499)
    assert after.structured_content == {"text": "next"}


async def test_audit_events_queued_at_shutdown_are_published(bus: Bus, audit: Subscription) -> None:
    auditor = Auditor(bus.nc, bus.subjects, flush_s=60)  # no timed flush during the test
    async with anyio.create_task_group() as tg:
        await tg.start(auditor.run)
        for i in range(3):
            auditor.record(
                principal="p",
                transport="http",
                service="echo",
                endpoint="say",
                code=200,
                started=0.0,
                call_id=f"c{i}",
            )
        tg.cancel_scope.cancel()  # the edge stopping: what is queued still goes out
    events = [event for _, event in await next_events(audit, 3)]
    assert [e.call_id for e in events] == ["c0", "c1", "c2"]
    assert (auditor.failed, auditor.dropped) == (0, 0)


async def test_refused_calls_are_audited_without_the_path_the_caller_made_up(
    http: httpx.AsyncClient, audit: Subscription
) -> None:
    secret = "sk-live-0123456789abcdefghij"
    await http.post(f"/v1/{secret}/{secret}", json={})
    [(raw, refused)] = await next_events(audit, 1)
    assert (refused.code, refused.service, refused.endpoint) == (404, "", "")
    assert secret.encode() not in raw
