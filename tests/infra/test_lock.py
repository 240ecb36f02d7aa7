"""The stack lock: create-only leases in a KV bucket with a TTL, so a dead holder frees itself."""

from __future__ import annotations

import anyio
import pytest

from bus import Bus
from bus.errors import ConflictError
from infra.lock import Lease, StackLocks, locks_bucket

pytestmark = pytest.mark.anyio


def lease(op_id: str) -> Lease:
    return Lease(op_id=op_id, operation="up", holder="test", since=0.0)


async def test_lock_refuses_a_second_holder_and_frees_on_exit(bus: Bus) -> None:
    locks = await StackLocks.open(bus.js, bus.settings.prefix, ttl_s=30)
    async with locks.hold("scratch", lease("first")):
        with pytest.raises(ConflictError) as busy:
            async with locks.hold("scratch", lease("second")):
                pass
        held = await locks.holder("scratch")
    async with locks.hold("scratch", lease("third")):
        pass
    assert "up first is running" in busy.value.description
    assert held is not None and held.op_id == "first"
    assert await locks.holder("scratch") is None


async def test_lock_of_a_dead_holder_expires(bus: Bus) -> None:
    locks = await StackLocks.open(bus.js, bus.settings.prefix, ttl_s=1)
    await locks.kv.create("scratch", b'{"op_id":"dead","operation":"up","holder":"x","since":0}')
    with pytest.raises(ConflictError):
        async with locks.hold("scratch", lease("blocked")):
            pass
    with anyio.fail_after(10):  # the server drops the lease after its TTL
        while await locks.holder("scratch") is not None:  # noqa: ASYNC110 — server state
            await anyio.sleep(0.1)
    async with locks.hold("scratch", lease("after")):
        held = await locks.holder("scratch")
    assert held is not None and held.op_id == "after"


async def test_lock_is_kept_while_the_operation_outlives_the_ttl(bus: Bus) -> None:
    locks = await StackLocks.open(bus.js, bus.settings.prefix, ttl_s=1)
    async with locks.hold("scratch", lease("long")):
        await anyio.sleep(2.5)  # past two TTLs: only the refreshes keep it
        held = await locks.holder("scratch")
    assert held is not None and held.op_id == "long"


def test_locks_bucket_is_named_after_the_prefix() -> None:
    assert locks_bucket("Sophia-Dev") == "sophia_dev_infra_locks"
