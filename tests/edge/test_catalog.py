"""Discovery: when a poll misses a service, ``$SRV.PING`` decides whether its tools stay.

The service here is raw nats-py answering the service API's subjects, as an agent of this
install (or of another) would, so each test can make its INFO reply late on purpose.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from dataclasses import dataclass

import anyio
import msgspec
import nats
import pytest
from nats.aio.client import Client
from nats.aio.msg import Msg
from nats.aio.subscription import Subscription

from bus import Settings
from bus.micro import INFO_TYPE, PING_TYPE, EndpointInfo, InfoResponse, PingResponse
from edge.catalog import MISSES_TO_DROP, Catalog

pytestmark = pytest.mark.anyio

WINDOW_S = 0.1


@dataclass
class FakeService:
    """Answers ``$SRV.INFO`` (late when ``info_late``) and ``$SRV.PING.slowpoke`` (as
    ``ping_prefix``'s instance, not at all when ``ping_quiet``)."""

    nc: Client
    prefix: str
    ping_prefix: str
    info_late: bool = False
    ping_quiet: bool = False
    subs: tuple[Subscription, ...] = ()

    def info(self) -> bytes:
        endpoint = EndpointInfo(
            name="poke",
            subject=f"{self.prefix}.slowpoke.poke",
            queue_group="q",
            metadata={"public": "true", "request_schema": json.dumps({"type": "object"})},
        )
        info = InfoResponse(
            type=INFO_TYPE,
            name="slowpoke",
            id="1",
            version="0.0.1",
            description="",
            metadata={"prefix": self.prefix},
            endpoints=[endpoint],
        )
        return msgspec.json.encode(info)

    async def on_info(self, msg: Msg) -> None:
        if self.info_late:
            await anyio.sleep(WINDOW_S * 3)
        await msg.respond(self.info())

    async def on_ping(self, msg: Msg) -> None:
        if self.ping_quiet:
            return
        ping = PingResponse(
            type=PING_TYPE,
            name="slowpoke",
            id="1",
            version="0.0.1",
            metadata={"prefix": self.ping_prefix},
        )
        await msg.respond(msgspec.json.encode(ping))

    async def stop(self) -> None:
        for sub in self.subs:
            await sub.unsubscribe()
        await self.nc.flush()


@pytest.fixture
async def service(settings: Settings) -> AsyncIterator[FakeService]:
    nc = await nats.connect(settings.nats_url)
    fake = FakeService(nc=nc, prefix=settings.prefix, ping_prefix=settings.prefix)
    fake.subs = (
        await nc.subscribe("$SRV.INFO", cb=fake.on_info),
        await nc.subscribe("$SRV.PING.slowpoke", cb=fake.on_ping),
    )
    await nc.flush()
    yield fake
    await nc.close()


@pytest.fixture
async def catalog(settings: Settings) -> AsyncIterator[Catalog]:
    nc = await nats.connect(settings.nats_url)
    found = Catalog(nc, settings.prefix, interval_s=1.0, window_s=WINDOW_S)
    yield found
    await nc.close()


async def polls(catalog: Catalog, count: int) -> None:
    for _ in range(count):
        await catalog.poll()


async def test_a_service_slow_with_its_info_keeps_its_tools_while_it_answers_ping(
    service: FakeService, catalog: Catalog
) -> None:
    await catalog.poll()
    assert catalog.get("slowpoke", "poke") is not None
    service.info_late = True
    await polls(catalog, MISSES_TO_DROP + 2)
    assert catalog.get("slowpoke", "poke") is not None


async def test_a_hung_service_goes_after_misses_in_a_row(
    service: FakeService, catalog: Catalog
) -> None:
    await catalog.poll()
    service.info_late = service.ping_quiet = True
    await polls(catalog, MISSES_TO_DROP - 1)
    assert catalog.get("slowpoke", "poke") is not None  # one slow poll does not flap a tool
    await catalog.poll()
    assert catalog.get("slowpoke", "poke") is None


async def test_another_installs_ping_reply_is_no_proof_of_life(
    service: FakeService, catalog: Catalog
) -> None:
    await catalog.poll()
    service.info_late = True
    service.ping_prefix = "someoneelse"
    await polls(catalog, MISSES_TO_DROP)
    assert catalog.get("slowpoke", "poke") is None


async def test_a_stopped_service_goes_on_the_first_poll_that_misses_it(
    service: FakeService, catalog: Catalog
) -> None:
    await catalog.poll()
    await service.stop()
    await catalog.poll()
    assert catalog.get("slowpoke", "poke") is None
