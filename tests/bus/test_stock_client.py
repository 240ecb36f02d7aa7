"""The bus's core cases on stock nats-py: every process uses nats-py's own ``Client``, unchanged.

Nothing in Sophia subclasses nats-py's client or reads its private attributes, so an upgrade of
nats-py is caught here, by CI, and not by users. CI also runs ``tests/bus`` against the lowest
nats-py release ``pyproject.toml`` allows (``make test``).
"""

from __future__ import annotations

import msgspec
import nats
import pytest
from nats.aio.client import Client

from bus import Bus, NotFoundError, Settings
from bus.micro import PingResponse
from bus.records import Records
from bus.subjects import srv
from tests.bus.agents import EchoAgent, EchoReply, EchoRequest, Job, Worker
from tests.fixtures.nats_server import running
from tests.polling import wait_for

pytestmark = pytest.mark.anyio


class Counter(msgspec.Struct, kw_only=True):
    n: int = 0


async def test_every_agent_talks_through_nats_py_s_own_client(echo: EchoAgent) -> None:
    assert type(echo.nc) is Client


async def test_core_cases_over_a_connection_made_by_nats_connect(
    settings: Settings, echo: EchoAgent
) -> None:
    nc = await nats.connect(settings.nats_url)
    try:
        bus = Bus(nc, settings)
        reply = await bus.request("echo", "say", EchoRequest(text="ab", times=2), EchoReply)
        with pytest.raises(NotFoundError):
            await bus.request("echo", "lookup.one", EchoRequest(text="x"), EchoReply)
        ping = await nc.request(srv("PING", "echo"), b"", timeout=5)
        counters = await Records.tasks(bus, Counter)
        await counters.update("c", lambda c: Counter(n=(c.n if c else 0) + 1))
        counter, _ = await counters.update("c", lambda c: Counter(n=(c.n if c else 0) + 1))
        async with running(Worker(settings)) as worker:
            await bus.submit_work("worker", Job(id="j1"), msg_id="j1")
            await wait_for(lambda: worker.done == ["j1"])
    finally:
        await nc.drain()
    assert reply == EchoReply(text="abab")
    assert msgspec.json.decode(ping.data, type=PingResponse).name == "echo"
    assert counter.n == 2
