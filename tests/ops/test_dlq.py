"""``sophia dlq``: list, show, replay and purge real dead letters from the Worker agent."""

from __future__ import annotations

import json

import msgspec
import pytest

from bus import Bus
from tests.bus.agents import Job, Worker
from tests.ops.conftest import Sophia
from tests.polling import wait_for

pytestmark = pytest.mark.anyio


async def dead_letter(bus: Bus, worker: Worker, job: Job) -> None:
    """Submit ``job`` and wait until the worker has dead-lettered it."""
    before = worker.dead_lettered_count()
    await bus.submit_work("worker", job, msg_id=job.id)
    await wait_for(lambda: worker.dead_lettered_count() == before + 1)


async def listed(sophia: Sophia, *args: str) -> list[dict[str, object]]:
    run = await sophia("dlq", "ls", "--json", *args)
    assert run.status == 0, run.err
    return json.loads(run.out)


async def test_dlq_ls_lists_service_subject_deliveries_and_error(
    worker: Worker, bus: Bus, sophia: Sophia
) -> None:
    await dead_letter(bus, worker, Job(id="b1", bad=True))
    await dead_letter(bus, worker, Job(id="flaky", fail_times=5))
    first, second = await listed(sophia)
    assert first["service"] == second["service"] == "worker"
    assert first["subject"] == second["subject"] == bus.subjects.work("worker")
    assert (first["deliveries"], first["code"], first["error"]) == (
        1,
        400,
        "id: refused on purpose",
    )
    assert (second["deliveries"], second["code"], second["error"]) == (2, 503, "flaky backend")
    assert isinstance(first["id"], int) and first["id"] < second["id"]
    run = await sophia("dlq", "ls")
    assert "refused on purpose" in run.out
    assert "flaky backend" in run.out
    assert await listed(sophia, "--service", "other") == []


async def test_dlq_show_prints_the_whole_dead_letter(
    worker: Worker, bus: Bus, sophia: Sophia
) -> None:
    job = Job(id="b1", bad=True)
    await dead_letter(bus, worker, job)
    [entry] = await listed(sophia)
    run = await sophia("dlq", "show", str(entry["id"]))
    assert run.status == 0, run.err
    letter = json.loads(run.out)
    assert letter["id"] == entry["id"]
    assert msgspec.json.decode(letter["payload"], type=Job) == job
    assert letter["headers"]["Nats-Msg-Id"] == "b1"
    assert letter["encoding"] == "utf-8"
    assert letter["service"] == "worker"
    assert letter["stream_seq"] >= 1


async def test_dlq_replay_redelivers_despite_dedupe_and_removes_the_letter(
    worker: Worker, bus: Bus, sophia: Sophia
) -> None:
    # Fails on its two allowed deliveries, so it is dead-lettered; the third attempt,
    # after the replay, succeeds. The original Nats-Msg-Id is still inside the
    # duplicate window: only a fresh id lets the replay through.
    await dead_letter(bus, worker, Job(id="flaky", fail_times=2))
    [entry] = await listed(sophia)
    run = await sophia("dlq", "replay", str(entry["id"]))
    assert run.status == 0, run.err
    assert bus.subjects.work("worker") in run.out
    await wait_for(lambda: worker.done == ["flaky"])
    assert worker.attempts["flaky"] == 3
    assert await listed(sophia) == []
    missing = await sophia("dlq", "show", str(entry["id"]))
    assert missing.status == 2
    assert f"no dead letter {entry['id']}" in missing.err


async def test_dlq_replay_of_an_unknown_id_exits_2(worker: Worker, sophia: Sophia) -> None:
    run = await sophia("dlq", "replay", "999")
    assert run.status == 2
    assert "no dead letter 999" in run.err


async def test_dlq_purge_empties_one_service_or_all(
    worker: Worker, bus: Bus, sophia: Sophia
) -> None:
    await dead_letter(bus, worker, Job(id="b1", bad=True))
    await dead_letter(bus, worker, Job(id="b2", bad=True))
    run = await sophia("dlq", "purge", "--service", "other")
    assert run.out.strip() == "purged 0 dead letters of other"
    assert len(await listed(sophia)) == 2
    run = await sophia("dlq", "purge")
    assert run.status == 0, run.err
    assert run.out.strip() == "purged 2 dead letters"
    assert await listed(sophia) == []
