"""Chaos: kill -9 the node leading ``SOPHIA_WORK`` on the 3-node cluster, mid-flow.

The cluster is ``ops/nats/`` as production runs it (``tests/fixtures/nats_cluster.py``;
``tests/ops/test_nats_cluster.py`` checks its accounts and a kill with the queue at rest).
Here items keep flowing through the kill: a producer publishes (retrying an unacknowledged
attempt with the same ``Nats-Msg-Id``) while two workers, one on the doomed node, consume.
No item JetStream acknowledged may be lost; every client is back within the bound that
README states.
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack, asynccontextmanager
from pathlib import Path

import anyio
import nats.errors
import pytest

from bus import Bus, Settings
from bus.connection import Link, close, connect
from bus.errors import UnavailableError
from bus.topology import ensure_consumer, ensure_streams
from tests.bus.agents import Job, Worker
from tests.chaos.figures import counted, figure
from tests.fixtures.nats_cluster import NatsCluster
from tests.fixtures.nats_server import running
from tests.polling import wait_for

pytestmark = [pytest.mark.anyio, pytest.mark.chaos]

ITEMS = 200
RECONNECT_BOUND_S = 5.0
ELECTION_BOUND_S = 30.0  # a stream that lost its leader has a new one within this
PUBLISH_BOUND_S = 30.0  # one item, retried through the election, is stored within this


@asynccontextmanager
async def client(settings: Settings, name: str) -> AsyncIterator[tuple[Bus, Link]]:
    link = Link()
    nc = await connect(settings, name, link)
    try:
        yield Bus(nc, settings, link), link
    finally:
        await close(nc, link, 2.0)


async def messages_held(bus: Bus, stream: str) -> int:
    """How many messages ``stream`` holds, asked until it answers: a JetStream API request
    times out while the cluster elects the stream a new leader after the kill."""
    with anyio.fail_after(ELECTION_BOUND_S):
        while True:
            try:
                return (await bus.js.stream_info(stream)).state.messages
            except nats.errors.TimeoutError:
                await anyio.sleep(0.2)


async def publish_all(bus: Bus, acked: dict[str, float]) -> None:
    """Publish ``ITEMS`` items, each retried until JetStream acknowledges it."""
    for n in range(ITEMS):
        item_id = f"c{n:04d}"
        with anyio.fail_after(PUBLISH_BOUND_S):
            while True:
                try:
                    await bus.submit_work("worker", Job(id=item_id), msg_id=item_id)
                    break
                except UnavailableError:  # no leader yet, or the ack was lost with the node
                    await anyio.sleep(0.05)
        acked[item_id] = time.monotonic()
        await anyio.sleep(0.005)


async def test_no_acknowledged_item_is_lost_when_the_work_leader_is_killed_mid_flow(
    nats_cluster: NatsCluster, tmp_path: Path
) -> None:
    cluster = nats_cluster
    everywhere = ",".join(n.url for n in cluster.nodes)
    admin = cluster.settings("admin", cluster.nodes[0], tmp_path / "admin", nats_url=everywhere)
    acked: dict[str, float] = {}
    back: dict[str, float] = {}
    async with AsyncExitStack() as stack:
        bus, producer = await stack.enter_async_context(client(admin, "chaos-producer"))
        await ensure_streams(bus.js, admin)
        await ensure_consumer(bus.js, admin, "worker")
        work = await bus.js.stream_info(bus.subjects.work_stream)
        assert work.cluster is not None and work.cluster.leader is not None
        leader = cluster.node_named(work.cluster.leader)
        other = next(n for n in cluster.nodes if n is not leader)
        on_leader = cluster.settings("admin", leader, tmp_path / "w1")
        elsewhere = cluster.settings("admin", other, tmp_path / "w2")
        first = await stack.enter_async_context(running(Worker(on_leader)))
        second = await stack.enter_async_context(running(Worker(elsewhere)))
        links = {"producer": producer, "worker_on_leader": first.link}
        links["worker_elsewhere"] = second.link
        async with anyio.create_task_group() as tg:
            tg.start_soon(publish_all, bus, acked)
            await wait_for(lambda: len(acked) >= ITEMS // 3, 30)
            for who, link in links.items():
                link.on_back(lambda who=who: back.setdefault(who, time.monotonic()))
            killed_at = time.monotonic()
            cluster.kill(leader)
        stored_again_s = min(at for at in acked.values() if at > killed_at) - killed_at
        await wait_for(lambda: set(acked) <= set(first.done) | set(second.done), 60)
        processed = [*first.done, *second.done]
        dlq_held = await messages_held(bus, bus.subjects.dlq_stream)
    # the worker on another node never lost its connection: only the others come back
    reconnect_s = {who: round(at - killed_at, 3) for who, at in sorted(back.items())}
    counts = counted(acked, processed)
    assert "worker_on_leader" in reconnect_s
    assert max(reconnect_s.values()) <= RECONNECT_BOUND_S, reconnect_s
    assert counts["lost"] == 0
    assert dlq_held == 0
    figure(
        "cluster_node_kill",
        counts,
        max(stored_again_s, *reconnect_s.values()),
        killed=leader.name,
        acked_before_kill=sum(1 for at in acked.values() if at <= killed_at),
        reconnect_s=reconnect_s,
        first_publish_after_kill_s=round(stored_again_s, 3),
        processed_by={"worker_on_leader": len(first.done), "worker_elsewhere": len(second.done)},
    )
