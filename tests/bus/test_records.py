"""Task records in KV with optimistic concurrency; events on the events stream."""

from __future__ import annotations

import anyio
import msgspec
import pytest

from bus import Bus
from bus.errors import BadRequestError, NotFoundError
from bus.records import Records

pytestmark = pytest.mark.anyio


class TaskRecord(msgspec.Struct, kw_only=True):
    state: str = "new"
    steps_done: int = 0
    notes: list[str] = msgspec.field(default_factory=list)


class TaskEvent(msgspec.Struct, kw_only=True):
    task: str
    state: str


def add_step(name: str):  # type: ignore[no-untyped-def]
    def change(record: TaskRecord | None) -> TaskRecord:
        record = record or TaskRecord()
        return TaskRecord(
            state="running", steps_done=record.steps_done + 1, notes=[*record.notes, name]
        )

    return change


async def test_records_concurrent_updates_lose_nothing(bus: Bus) -> None:
    tasks = await Records.tasks(bus, TaskRecord)
    async with anyio.create_task_group() as tg:
        for i in range(20):
            tg.start_soon(tasks.update, "t1", add_step(f"s{i}"))
    record, revision = await tasks.get("t1")
    assert record.steps_done == 20
    assert sorted(record.notes) == sorted(f"s{i}" for i in range(20))
    assert revision >= 20


async def test_records_update_creates_then_changes(bus: Bus) -> None:
    tasks = await Records.tasks(bus, TaskRecord)
    first, rev1 = await tasks.update("t2", add_step("plan"))
    second, rev2 = await tasks.update("t2", add_step("code"))
    assert (first.steps_done, second.steps_done) == (1, 2)
    assert rev2 > rev1
    entry = await bus.js.key_value(bus.subjects.tasks_bucket)
    raw = await entry.get("t2")  # what `nats kv get sophia_tasks t2` shows: plain JSON
    assert msgspec.json.decode(raw.value) == {
        "state": "running",
        "steps_done": 2,
        "notes": ["plan", "code"],
    }


async def test_records_missing_and_bad_keys(bus: Bus) -> None:
    tasks = await Records.tasks(bus, TaskRecord)
    with pytest.raises(NotFoundError):
        await tasks.get("nope")
    with pytest.raises(BadRequestError) as caught:
        await tasks.get("bad key")
    assert caught.value.description.startswith("key: ")
    assert "bad key" not in caught.value.description  # never echoes the input


async def test_events_are_kept_in_the_events_stream(bus: Bus) -> None:
    subject = bus.subjects.event("task", "t9")
    sub = await bus.js.subscribe(subject, ordered_consumer=True)
    ack = await bus.emit(TaskEvent(task="t9", state="planned"), "task", "t9", msg_id="t9-planned")
    again = await bus.emit(TaskEvent(task="t9", state="planned"), "task", "t9", msg_id="t9-planned")
    assert ack.stream == bus.subjects.events_stream
    assert again.duplicate
    msg = await sub.next_msg(timeout=5)
    assert msgspec.json.decode(msg.data, type=TaskEvent) == TaskEvent(task="t9", state="planned")
    info = await bus.js.stream_info(bus.subjects.events_stream)
    assert info.state.messages == 1


async def test_buckets_exist_and_only_sessions_expire(bus: Bus) -> None:
    subjects = bus.subjects
    ages = {}
    for bucket in (subjects.tasks_bucket, subjects.sessions_bucket, subjects.config_bucket):
        status = await (await bus.js.key_value(bucket)).status()
        ages[bucket] = status.ttl or None  # 0 and None both mean "kept until deleted"
    assert ages == {
        subjects.tasks_bucket: None,
        subjects.sessions_bucket: 24 * 3600,
        subjects.config_bucket: None,
    }


async def test_records_update_that_returns_the_record_unchanged_writes_nothing(bus: Bus) -> None:
    tasks = await Records.tasks(bus, TaskRecord)
    _, written = await tasks.update("t-same", add_step("plan"))
    same, revision = await tasks.update("t-same", lambda current: current)  # type: ignore[arg-type,return-value]
    assert revision == written and same.notes == ["plan"]
    assert (await tasks.get("t-same"))[1] == written  # no new revision in the bucket
