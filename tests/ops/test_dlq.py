"""``sophia dlq``: list, show, replay and purge real dead letters from the Worker agent, and
truncated ones published by hand as the runtime writes them."""

from __future__ import annotations

import base64
import json
import time

import msgspec
import pytest

from bus import Bus
from bus.schemas.common import DeadLetter
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


def truncated_letter(bus: Bus, kept: bytes, original: int) -> DeadLetter:
    """A letter as the runtime writes one whose item was too large to keep whole."""
    return DeadLetter(
        service="worker",
        subject=bus.subjects.work("worker"),
        headers={},
        payload=base64.b64encode(kept).decode(),
        encoding="base64",
        deliveries=1,
        error="id: refused on purpose",
        code=400,
        stream_seq=7,
        failed_at=time.time(),
        truncated=True,
        payload_bytes=original,
    )


async def test_dlq_ls_and_show_say_a_letter_was_truncated_and_its_original_size(
    bus: Bus, sophia: Sophia
) -> None:
    letter = truncated_letter(bus, b'{"id": "big", "pad": "xxxx', 3 * 1024 * 1024)
    await bus.js.publish(bus.subjects.dlq("worker"), msgspec.json.encode(letter))
    [entry] = await listed(sophia)
    assert (entry["truncated"], entry["payload_bytes"]) == (True, 3 * 1024 * 1024)
    run = await sophia("dlq", "ls")
    [row] = [line for line in run.out.splitlines() if line.startswith(str(entry["id"]))]
    assert "3.0MiB truncated" in row
    run = await sophia("dlq", "show", str(entry["id"]))
    assert run.status == 0, run.err
    shown = json.loads(run.out)
    assert (shown["truncated"], shown["payload_bytes"]) == (True, 3 * 1024 * 1024)
    assert f"dead letter {entry['id']} is truncated" in run.err


async def test_dlq_replay_refuses_a_truncated_letter_and_keeps_it(bus: Bus, sophia: Sophia) -> None:
    letter = truncated_letter(bus, b'{"id": "big", "pad": "xxxx', 2_000_000)
    await bus.js.publish(bus.subjects.dlq("worker"), msgspec.json.encode(letter))
    [entry] = await listed(sophia)
    run = await sophia("dlq", "replay", str(entry["id"]))
    assert run.status == 2
    assert run.err == (
        f"sophia: dead letter {entry['id']}: its payload was truncated to fit the DLQ "
        "(2000000 bytes originally), so it cannot be replayed; `sophia dlq show` prints "
        "what it kept\n"
    )
    assert run.out == ""
    assert await listed(sophia) == [entry]  # still there
    work = await bus.js.stream_info(bus.subjects.work_stream)
    assert work.state.messages == 0  # nothing was sent on


async def test_dlq_ls_shows_the_payload_size_of_a_whole_letter(
    worker: Worker, bus: Bus, sophia: Sophia
) -> None:
    job = Job(id="b1", bad=True)
    await dead_letter(bus, worker, job)
    [entry] = await listed(sophia)
    assert (entry["truncated"], entry["payload_bytes"]) == (False, len(msgspec.json.encode(job)))
