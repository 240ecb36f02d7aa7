"""Lifecycle: SIGTERM drains without losing work; reconnect after the server restarts."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import anyio
import msgspec
import pytest

from bus import Bus, Settings
from bus.connection import Link, connect
from bus.errors import UnavailableError
from bus.topology import ensure_streams
from ops.natsserver import NatsServer
from tests.bus.agents import EchoAgent, EchoReply, EchoRequest, Job, Worker
from tests.bus.test_work import consumer_state, dead_letters
from tests.fixtures.nats_server import running
from tests.polling import settle, wait_for

pytestmark = pytest.mark.anyio
ROOT = Path(__file__).resolve().parents[2]


def spawn_worker(settings: Settings, done_file: Path) -> subprocess.Popen[bytes]:
    env = {
        **os.environ,
        "SOPHIA_NATS_URL": settings.nats_url,
        "SOPHIA_PREFIX": settings.prefix,
        "SOPHIA_HOME": settings.home,
        "SOPHIA_WORK_MAX_INFLIGHT": "4",
        "SOPHIA_DRAIN_GRACE_S": "10",
        "DONE_FILE": str(done_file),
        # what this run has first (the lowest allowed nats-py, in that run), then Sophia
        "PYTHONPATH": os.pathsep.join(filter(None, [os.environ.get("PYTHONPATH"), str(ROOT)])),
    }
    return subprocess.Popen([sys.executable, "-m", "tests.bus.worker_main"], env=env, cwd=ROOT)


def finished(done_file: Path) -> list[str]:
    return done_file.read_text().split() if done_file.exists() else []


@pytest.mark.slow
async def test_sigterm_drains_in_flight_work_and_loses_none(
    settings: Settings, bus: Bus, tmp_path: Path
) -> None:
    done_file = tmp_path / "done.txt"
    ids = [f"d{i}" for i in range(40)]
    for job_id in ids:
        await bus.submit_work("worker", Job(id=job_id, sleep_s=0.1), msg_id=job_id)
    proc = spawn_worker(settings, done_file)
    try:
        await wait_for(lambda: len(finished(done_file)) >= 5, 30)
        proc.send_signal(signal.SIGTERM)
        await wait_for(lambda: proc.poll() is not None, 30)
    finally:
        proc.kill()
    assert proc.returncode == 0
    first_run = finished(done_file)
    assert 5 <= len(first_run) < len(ids)
    async with anyio.create_task_group() as tg:
        second = await tg.start(Worker(settings).run)
        await wait_for(lambda: set(first_run) | set(second.done) == set(ids), 30)
        second.stop()
    assert not set(first_run) & set(second.done)  # drained items were acked, not redone
    assert await settle(lambda: consumer_state(bus), (0, 0)) == (0, 0)
    assert await dead_letters(bus) == []


@pytest.fixture
def own_server(tmp_path: Path) -> NatsServer:
    server = NatsServer(store_dir=tmp_path / "js")
    server.start()
    yield server
    server.stop()


async def test_agent_reconnects_after_server_restart(
    own_server: NatsServer, settings: Settings
) -> None:
    own = msgspec.structs.replace(settings, nats_url=own_server.url, request_timeout_s=20.0)
    async with anyio.create_task_group() as tg:
        agent = await tg.start(EchoAgent(own).run)
        caller = await tg.start(
            EchoAgent(msgspec.structs.replace(own, prefix=own.prefix + "c")).run
        )
        reply = await caller.bus.request("echo", "say", EchoRequest(text="a"), EchoReply)
        assert reply.text == "a"
        own_server.stop()
        await wait_for(lambda: not agent.link.connected and not caller.link.connected)
        with pytest.raises(UnavailableError):
            await caller.bus.request("echo", "say", EchoRequest(text="b"), EchoReply)
        own_server.start()
        await wait_for(lambda: agent.link.connected and caller.link.connected, 30)
        with anyio.fail_after(20):
            while True:  # the agent's subscriptions come back a moment after the socket
                try:
                    reply = await caller.bus.request(
                        "echo", "say", EchoRequest(text="c"), EchoReply
                    )
                    break
                except UnavailableError:
                    await anyio.sleep(0.1)
        assert reply.text == "c"
        agent.stop()
        caller.stop()


async def test_request_in_flight_fails_with_503_when_connection_drops(
    own_server: NatsServer, settings: Settings
) -> None:
    own = msgspec.structs.replace(settings, nats_url=own_server.url, request_timeout_s=60.0)
    link = Link()
    nc = await connect(own, "test-client", link)
    client = Bus(nc, own, link)
    await ensure_streams(client.js, own)
    nobody = f"{own.prefix}.slow.never"
    sub = await nc.subscribe(nobody)  # a responder that never answers
    outcome: list[BaseException] = []

    async def ask() -> None:
        try:
            await client.request_raw(nobody, b"{}")
        except UnavailableError as exc:
            outcome.append(exc)

    async with anyio.create_task_group() as tg:
        tg.start_soon(ask)
        await anyio.sleep(0.3)
        own_server.kill()
    assert len(outcome) == 1 and outcome[0].code == 503
    await sub.unsubscribe()
    await nc.close()


async def test_agent_reconnects_at_once_when_the_server_is_back_quickly(
    own_server: NatsServer, settings: Settings
) -> None:
    own = msgspec.structs.replace(settings, nats_url=own_server.url, reconnect_max_s=10.0)
    async with running(EchoAgent(own)) as agent:
        own_server.stop()
        await wait_for(lambda: not agent.link.connected)
        own_server.start()
        back = time.monotonic()
        await wait_for(lambda: agent.link.connected, 30)
        took = time.monotonic() - back
    assert took < 2.0  # not the 10 s between attempts: the first tries come quickly


async def test_a_connection_nats_py_gives_up_ends_the_agent(settings: Settings) -> None:
    agent = EchoAgent(settings)

    async def close_it() -> None:
        await wait_for(lambda: agent.link.connected and agent._identity.endpoints)
        await agent.nc.close()  # closed, not by the agent: as when reconnecting gives up

    with anyio.fail_after(30):
        async with anyio.create_task_group() as tg:
            tg.start_soon(close_it)
            with pytest.raises(UnavailableError, match="could not be re-established"):
                await agent.run()
    assert agent.link.state == "closed"
