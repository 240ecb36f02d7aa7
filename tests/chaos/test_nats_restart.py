"""Chaos: nats-server dies (kill -9) under load and comes back on the same port and store.

Under a steady stream of requests (an echo service) and durable work items (two workers),
the server is killed and restarted ``OUTAGE_S`` later. What must hold: a request made while
the bus is down fails with 503 — an answer, not a wait for its timeout (a 408 here would be
the hang) — and succeeds when retried; every client (the agents and the caller) is back
within ``RECONNECT_BOUND_S`` of the server; every work item JetStream acknowledged is
processed, none lost. Publishes retried after an unacknowledged attempt reuse their
``Nats-Msg-Id``, so the stream's duplicate window drops a copy that did get stored. (A
JetStream publish made during the outage is held by nats-py until the server is back, within
the request timeout; ``slowest_attempt_s`` in the figure shows how long.) ``duplicated`` counts
items a worker completed twice: an ack that died with the server, so the item came again —
at-least-once delivery, which ``test_kill_replicas`` shows absorbed by an effect keyed by id.
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import TypeVar

import anyio
import msgspec
import pytest
from nats.js.api import PubAck

from bus import Bus, Settings
from bus.connection import Link, close, connect
from bus.errors import SophiaError, UnavailableError
from bus.topology import ensure_consumer, ensure_streams
from ops.natsserver import NatsServer
from tests.bus.agents import EchoAgent, EchoReply, EchoRequest, Job, Worker
from tests.chaos.figures import counted, figure
from tests.fixtures.nats_server import running
from tests.polling import wait_for

pytestmark = [pytest.mark.anyio, pytest.mark.chaos]

T = TypeVar("T")

ITEMS = 300
CALLERS = 2
OUTAGE_S = 2.0
RECONNECT_BOUND_S = 5.0  # the bound README states; reconnect_max_s is 0.25 s here
RETRY_BOUND_S = 30.0  # one logical request or publish, retried, succeeds within this
REQUEST_TIMEOUT_S = 20.0  # far above an outage's 503: a hung request would show as a 408


@pytest.fixture
def own_server(tmp_path: Path) -> Iterator[NatsServer]:
    server = NatsServer(store_dir=tmp_path / "js")
    server.start()
    yield server
    server.kill()


@asynccontextmanager
async def caller(settings: Settings) -> AsyncIterator[tuple[Bus, Link]]:
    link = Link()
    nc = await connect(settings, "chaos-caller", link)
    try:
        yield Bus(nc, settings, link), link
    finally:
        await close(nc, link, 2.0)


class Load:
    """What the load saw: each failed attempt's error and how long it took to come back."""

    def __init__(self) -> None:
        self.failures: list[tuple[str, SophiaError, float]] = []
        self.requests = 0
        self.slowest = {"request": 0.0, "publish": 0.0}  # the longest single attempt of each
        self.published: list[str] = []
        self.stop = False

    async def retried(self, kind: str, attempt: Callable[[], Awaitable[T]]) -> T:
        """Run ``attempt()`` until it succeeds (bounded), noting each failure."""
        with anyio.fail_after(RETRY_BOUND_S):
            while True:
                began = time.monotonic()
                try:
                    return await attempt()
                except SophiaError as exc:
                    self.failures.append((kind, exc, time.monotonic() - began))
                    await anyio.sleep(0.05)
                finally:
                    took = time.monotonic() - began
                    self.slowest[kind] = max(self.slowest[kind], took)

    async def ask(self, bus: Bus, n: int) -> None:
        while not self.stop:
            text = f"{n}-{self.requests}"

            async def attempt(text: str = text) -> EchoReply:
                return await bus.request("echo", "say", EchoRequest(text=text), EchoReply)

            reply = await self.retried("request", attempt)
            assert reply.text == text
            self.requests += 1
            await anyio.sleep(0.01)

    async def publish(self, bus: Bus) -> None:
        for n in range(ITEMS):
            item_id = f"w{n:04d}"

            async def attempt(item_id: str = item_id) -> PubAck:
                return await bus.submit_work("worker", Job(id=item_id), msg_id=item_id)

            await self.retried("publish", attempt)
            self.published.append(item_id)
            await anyio.sleep(0.01)


async def test_requests_fail_fast_with_503_and_work_survives_a_nats_server_kill(
    own_server: NatsServer, settings: Settings
) -> None:
    own = msgspec.structs.replace(
        settings, nats_url=own_server.url, request_timeout_s=REQUEST_TIMEOUT_S
    )
    load = Load()
    back: dict[str, float] = {}
    async with caller(own) as (bus, link):
        await ensure_streams(bus.js, own)
        await ensure_consumer(bus.js, own, "worker")
        async with (
            running(EchoAgent(own)) as echo,
            running(Worker(own)) as first,
            running(Worker(own)) as second,
        ):
            links = {"caller": link, "echo": echo.link, "worker1": first.link}
            links["worker2"] = second.link
            for who, each in links.items():
                each.on_back(lambda who=who: back.setdefault(who, time.monotonic()))
            async with anyio.create_task_group() as tg:
                for n in range(CALLERS):
                    tg.start_soon(load.ask, bus, n)
                tg.start_soon(load.publish, bus)
                await wait_for(lambda: len(load.published) >= ITEMS // 4, 30)
                own_server.kill()
                await wait_for(lambda: not any(each.connected for each in links.values()))
                await anyio.sleep(OUTAGE_S)
                restarted = time.monotonic()
                own_server.start()
                await wait_for(lambda: len(back) == len(links), RECONNECT_BOUND_S + 10)
                requests_then = load.requests
                await wait_for(lambda: load.requests > requests_then, RETRY_BOUND_S)
                served_again = time.monotonic() - restarted
                await wait_for(lambda: len(load.published) == ITEMS, 60)
                load.stop = True
            done = set(load.published)
            await wait_for(lambda: done <= set(first.done) | set(second.done), 60)
            processed = [*first.done, *second.done]
    reconnect_s = {who: round(at - restarted, 3) for who, at in sorted(back.items())}
    codes = sorted({exc.code for _, exc, _ in load.failures})
    kinds = [kind for kind, _, _ in load.failures]
    by_kind = {kind: kinds.count(kind) for kind in ("request", "publish")}
    counts = counted(load.published, processed)
    assert load.failures, "the outage was not seen by the load"
    assert codes == [503], [(type(e).__name__, e.description) for _, e, _ in load.failures[:5]]
    assert all(isinstance(exc, UnavailableError) for _, exc, _ in load.failures)
    assert max(reconnect_s.values()) <= RECONNECT_BOUND_S, reconnect_s
    assert counts["lost"] == 0
    figure(
        "nats_restart",
        counts,
        max(served_again, *reconnect_s.values()),
        requests=load.requests,
        failed_attempts=by_kind,
        failure_codes=codes,
        slowest_failure_s=round(max(took for _, _, took in load.failures), 3),
        slowest_attempt_s={kind: round(took, 3) for kind, took in load.slowest.items()},
        outage_s=OUTAGE_S,
        reconnect_s=reconnect_s,
        first_request_served_s=round(served_again, 3),
    )
