"""Discovery: ``$SRV`` replies match the service-API schemas, as ``nats micro`` reads them."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from datetime import datetime

import anyio
import jsonschema
import msgspec
import pytest
from nats.aio.msg import Msg

from bus import Bus, Settings
from bus.micro import sophia_version
from tests.bus.agents import EchoAgent, EchoRequest, Worker
from tests.data import micro_v1
from tests.fixtures.nats_server import running

pytestmark = pytest.mark.anyio


@pytest.fixture
async def agents(settings: Settings) -> AsyncIterator[tuple[EchoAgent, Worker]]:
    async with running(EchoAgent(settings)) as echo, running(Worker(settings)) as worker:
        yield echo, worker


async def gather(bus: Bus, subject: str, window_s: float = 0.5) -> list[dict]:
    """Every reply to one request within ``window_s`` (how ``nats micro ls`` collects)."""
    inbox = bus.nc.new_inbox()
    replies: list[Msg] = []

    async def collect(msg: Msg) -> None:
        replies.append(msg)

    sub = await bus.nc.subscribe(inbox, cb=collect)
    await bus.nc.publish(subject, b"", reply=inbox)
    await anyio.sleep(window_s)
    await sub.unsubscribe()
    return [json.loads(m.data) for m in replies]


@pytest.mark.parametrize(
    ("verb", "schema"),
    [("PING", micro_v1.PING), ("INFO", micro_v1.INFO), ("STATS", micro_v1.STATS)],
    ids=["ping", "info", "stats"],
)
async def test_srv_replies_match_service_api_schema(
    agents: tuple[EchoAgent, Worker], bus: Bus, verb: str, schema: dict
) -> None:
    echo, worker = agents
    for subject in (f"$SRV.{verb}.echo", f"$SRV.{verb}.echo.{echo.id}"):
        [body] = await gather(bus, subject)
        jsonschema.validate(body, schema)
        assert (body["name"], body["id"], body["version"]) == ("echo", echo.id, sophia_version())
    everyone = await gather(bus, f"$SRV.{verb}")
    for body in everyone:
        jsonschema.validate(body, schema)
    assert {(b["name"], b["id"]) for b in everyone} >= {("echo", echo.id), ("worker", worker.id)}


async def test_srv_info_publishes_endpoint_schemas_docs_and_visibility(
    agents: tuple[EchoAgent, Worker], bus: Bus
) -> None:
    [info] = await gather(bus, "$SRV.INFO.echo")
    endpoints = {e["name"]: e for e in info["endpoints"]}
    assert set(endpoints) == {"say", "lookup_one", "header", "pick", "crash", "health"}
    say = endpoints["say"]
    assert say["subject"] == f"{bus.settings.prefix}.echo.say"
    assert say["queue_group"] == "echo"
    assert endpoints["lookup_one"]["subject"] == f"{bus.settings.prefix}.echo.lookup.one"
    meta = say["metadata"]
    assert json.loads(meta["request_schema"]) == msgspec.json.schema(EchoRequest)
    assert meta["description"] == "Return the text repeated ``times`` times."
    assert meta["public"] == "true"
    assert endpoints["health"]["metadata"]["public"] == "false"
    assert endpoints["header"]["metadata"]["access"] == "read"  # changes nothing
    assert "access" not in meta
    assert info["description"] == "Echoes text back; fails on purpose when asked."


async def test_srv_stats_started_is_rfc3339(agents: tuple[EchoAgent, Worker], bus: Bus) -> None:
    [stats] = await gather(bus, "$SRV.STATS.worker")
    started = datetime.fromisoformat(stats["started"].replace("Z", "+00:00"))
    assert started.tzinfo is not None


async def test_health_reports_lag_in_flight_and_round_trip(
    agents: tuple[EchoAgent, Worker], bus: Bus
) -> None:
    msg = await bus.nc.request(f"{bus.settings.prefix}.worker.health", b"", timeout=5)
    health = json.loads(msg.data)
    assert health["service"] == "worker"
    assert health["status"] == "ok"
    assert health["consumer_lag"] == 0
    assert health["work_in_flight"] == 0
    assert health["work_max_in_flight"] == bus.settings.work_max_inflight
    assert health["nats_rtt_ms"] > 0
    assert health["uptime_s"] >= 0
