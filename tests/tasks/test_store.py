"""The task store's refusals: they name the field, never the caller's id or the bucket."""

from __future__ import annotations

import pytest

from bus import Bus
from bus.errors import NotFoundError
from bus.schemas.tasks import TaskRecord
from tasks.store import TaskStore

pytestmark = pytest.mark.anyio


async def test_store_get_of_unknown_id_names_the_field_only(bus: Bus) -> None:
    store = await TaskStore.open(bus)
    with pytest.raises(NotFoundError) as caught:
        await store.get("no-such-task-0")
    assert caught.value.description == "task_id: no such task"


async def test_store_change_of_unknown_id_names_the_field_only(bus: Bus) -> None:
    store = await TaskStore.open(bus)

    def change(record: TaskRecord) -> TaskRecord:
        return record

    with pytest.raises(NotFoundError) as caught:
        await store.change("no-such-task-1", change)
    assert caught.value.description == "task_id: no such task"
