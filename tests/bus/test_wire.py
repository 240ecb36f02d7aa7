"""One message never exceeds the server's max_payload, headers included: refused, not sent."""

from __future__ import annotations

from collections.abc import AsyncIterator

import msgspec
import nats
import pytest
from nats.aio.client import Client

from bus import Agent, Bus, endpoint
from bus.config import Settings
from bus.errors import PayloadTooLargeError
from bus.wire import header_bytes, publish
from tests.fixtures.nats_server import running

pytestmark = pytest.mark.anyio


@pytest.fixture
async def nc(settings: Settings) -> AsyncIterator[Client]:
    client = await nats.connect(settings.nats_url)
    yield client
    await client.close()


async def test_a_message_that_fits_exactly_is_sent_and_one_byte_more_is_refused(
    nc: Client, settings: Settings
) -> None:
    subject = f"{settings.prefix}.wire.exact"
    sub = await nc.subscribe(subject)
    headers = {"traceparent": "00-" + "1" * 32 + "-" + "2" * 16 + "-01", "X-Call": "abc"}
    fits = b"x" * (nc.max_payload - header_bytes(headers))
    await publish(nc, subject, fits, headers=headers)
    with pytest.raises(PayloadTooLargeError) as caught:
        await publish(nc, subject, fits + b"x", headers=headers)
    assert caught.value.code == 413
    assert f"limit of {nc.max_payload} bytes" in caught.value.description
    msg = await sub.next_msg(timeout=5)
    assert len(msg.data) == len(fits)
    await nc.flush(timeout=5)
    assert nc.is_connected  # the server never saw the oversize message


async def test_a_request_of_max_payload_with_trace_headers_is_a_413_and_the_link_stays(
    bus: Bus, echo: Agent, settings: Settings
) -> None:
    subject = bus.subjects.endpoint("echo", "say")
    with pytest.raises(PayloadTooLargeError):
        await bus.request_raw(subject, b"x" * bus.nc.max_payload, {"X-Pad": "y" * 200})
    assert bus.nc.is_connected
    reply = await bus.request_raw(subject, b'{"text": "still here"}')
    assert msgspec.json.decode(reply.data) == {"text": "still here"}


class Big(msgspec.Struct, kw_only=True):
    size: int


class Blob(msgspec.Struct, kw_only=True):
    data: str


class BigAgent(Agent, name="big"):
    """Replies as large as asked."""

    @endpoint
    async def make(self, req: Big) -> Blob:
        """A reply of ``size`` characters."""
        return Blob(data="y" * req.size)


async def test_a_reply_over_max_payload_is_a_413_naming_the_limit_and_the_agent_serves_on(
    bus: Bus, settings: Settings
) -> None:
    async with running(BigAgent(settings)) as agent:
        limit = agent.nc.max_payload
        subject = bus.subjects.endpoint("big", "make")
        reply = await bus.request_raw(subject, msgspec.json.encode(Big(size=limit)), timeout=10)
        assert reply.headers is not None
        assert reply.headers["Nats-Service-Error-Code"] == "413"
        assert reply.headers["Nats-Service-Error"].startswith("reply: ")
        assert f"limit of {limit} bytes" in reply.headers["Nats-Service-Error"]
        small = await bus.request_raw(subject, b'{"size": 3}')
        assert msgspec.json.decode(small.data) == {"data": "yyy"}
        assert agent.link.connected
