"""Chaos: JetStream's storage quota runs out under durable work, then space returns.

A nats-server of the test's own may keep only ``QUOTA`` on disk. Work items are published
until it is full: every refusal must be an answer (bounded, never a hang) naming storage, a
503 that callers may retry — through the bus client and through an agent's endpoint (the
planner's ``tasks.submit``, which writes the task record), never a 500. What was accepted is
all still there, intact. When a worker drains the queue the space comes back and publishing
succeeds again; every accepted item is processed once.
"""

from __future__ import annotations

import time
from pathlib import Path

import anyio
import msgspec
import nats
import pytest

from agents.planner import PlannerAgent
from bus import Bus, Settings
from bus.errors import StorageFullError, UnavailableError, describe
from bus.schemas import tasks as t
from bus.topology import ensure_consumer, ensure_streams
from tests.bus.agents import Job, Worker
from tests.chaos.figures import counted, figure
from tests.chaos.servers import quota_nats
from tests.fixtures.nats_server import running
from tests.polling import wait_for
from tests.tasks.harness import make_repo

pytestmark = [pytest.mark.anyio, pytest.mark.chaos]

QUOTA = "1MB"
PAD = "x" * 4000  # one item: ~4 kB, so the quota holds a couple of hundred
REFUSALS = 5  # publishes go on after the first refusal: each one must be answered
ANSWER_BOUND_S = 10.0  # a refusal is an answer, never a hang
RECOVERY_BOUND_S = 30.0


def job(n: int, tag: str = "q") -> Job:
    return Job(id=f"{tag}{n:05d}-{PAD}")


async def fill(bus: Bus) -> tuple[dict[int, str], list[StorageFullError]]:
    """Publish until ``REFUSALS`` were refused; returns {stream seq: id} accepted, refusals."""
    accepted: dict[int, str] = {}
    refused: list[StorageFullError] = []
    n = 0
    with anyio.fail_after(60):
        while len(refused) < REFUSALS:
            item = job(n)
            try:
                with anyio.fail_after(ANSWER_BOUND_S):
                    ack = await bus.submit_work("worker", item, msg_id=f"q{n}")
                accepted[ack.seq] = item.id
            except StorageFullError as exc:
                refused.append(exc)
            n += 1
    return accepted, refused


async def test_a_full_store_refuses_with_a_storage_503_keeps_what_it_took_and_recovers(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    empty = tmp_path / "empty.toml"  # the planner with no model: submit needs none
    empty.write_text("")
    monkeypatch.setenv("SOPHIA_CONFIG", str(empty))
    repo = make_repo(tmp_path / "repo")
    with quota_nats(tmp_path / "nats", QUOTA) as server:
        settings = Settings(
            home=str(tmp_path / "home"),
            nats_url=server.url,
            prefix="chaos",
            request_timeout_s=5.0,
            drain_grace_s=3.0,
            reconnect_max_s=0.25,
            work_ack_wait_s=5.0,
        )
        nc = await nats.connect(server.url)
        bus = Bus(nc, settings)
        try:
            await ensure_streams(bus.js, settings)
            await ensure_consumer(bus.js, settings, "worker")
            async with running(PlannerAgent(settings)):
                accepted, refused = await fill(bus)
                with anyio.fail_after(ANSWER_BOUND_S):
                    with pytest.raises(UnavailableError) as through_endpoint:
                        req = t.SubmitRequest(goal="add a flag", repo=str(repo))
                        await bus.request("tasks", "submit", req, t.SubmitResult)
            # nothing corrupts: every accepted item is there, whole
            work = await bus.js.stream_info(bus.subjects.work_stream)
            assert work.state.messages == len(accepted)
            for seq, item_id in accepted.items():
                stored = await bus.js.get_msg(work.config.name, seq)
                assert msgspec.json.decode(stored.data or b"", type=Job).id == item_id

            # space returns as a worker drains the queue; publishing succeeds again
            async with running(Worker(settings)) as worker:
                started = time.monotonic()
                probes: list[str] = []
                with anyio.fail_after(RECOVERY_BOUND_S):
                    while True:
                        item = job(len(probes), tag="p")
                        try:
                            await bus.submit_work("worker", item, msg_id=f"p{len(probes)}")
                        except StorageFullError:
                            await anyio.sleep(0.05)
                            continue
                        probes.append(item.id)
                        break
                recovery_s = time.monotonic() - started
                sent = [*accepted.values(), *probes]
                await wait_for(lambda: set(worker.done) >= set(sent), 60)
            dlq = await bus.js.stream_info(bus.subjects.dlq_stream)
        finally:
            await nc.close()
    for exc in refused:
        assert describe(exc)[0] == 503
        assert exc.description.startswith("bus storage is full: chaos.work.worker was not stored")
    answered = through_endpoint.value
    assert answered.code == 503 and "storage is full" in answered.description
    counts = counted(sent, worker.done)
    assert (counts["lost"], counts["duplicated"]) == (0, 0)
    assert dlq.state.messages == 0
    figure(
        "storage_full",
        counts,
        recovery_s,
        quota=QUOTA,
        accepted_before_full=len(accepted),
        refused=len(refused),
        refusal=refused[0].description,
    )
