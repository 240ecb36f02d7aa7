"""One operation per stack at a time: a lease in a JetStream KV bucket whose entries expire.

Guarantee: :meth:`StackLocks.hold` enters only when no live lease names the stack (``kv.create``
is create-only, so of two agents racing for it exactly one wins) and raises ConflictError (409)
otherwise. While the block runs the lease is rewritten every third of the bucket's TTL, so a
long ``pulumi up`` keeps it; it is deleted when the block ends. When the holder dies, nobody
rewrites it and the server drops it after at most the TTL (``SOPHIA_INFRA_LOCK_TTL_S``): the
stack is free again. Pulumi's own backend lock still guards the state itself, so an agent that
was only cut off from NATS and lost its lease meets ``ConcurrentUpdateError`` from the CLI
rather than a corrupted stack.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import anyio
import msgspec
import nats.errors
import nats.js.errors
from nats.js import JetStreamContext
from nats.js.api import KeyValueConfig, StorageType
from nats.js.kv import KeyValue

from bus.errors import ConflictError

log = logging.getLogger("sophia.infra")


class Lease(msgspec.Struct, kw_only=True):
    """Who holds a stack, as stored under the stack's key."""

    op_id: str
    operation: str
    holder: str  # the agent instance id
    since: float


def locks_bucket(prefix: str) -> str:
    """``<prefix>_infra_locks``, lower-cased like every bucket of the install."""
    return f"{prefix.lower().replace('-', '_')}_infra_locks"


class StackLocks:
    """The leases of one install's stacks."""

    def __init__(self, kv: KeyValue, ttl_s: float) -> None:
        self.kv = kv
        self.ttl_s = ttl_s

    @classmethod
    async def open(
        cls, js: JetStreamContext, prefix: str, ttl_s: float, replicas: int = 1
    ) -> StackLocks:
        """The bucket, created with ``replicas`` (``SOPHIA_STREAM_REPLICAS``) when missing."""
        bucket = locks_bucket(prefix)
        try:
            kv = await js.key_value(bucket)
        except nats.js.errors.BucketNotFoundError:
            config = KeyValueConfig(
                bucket=bucket, history=1, ttl=ttl_s, storage=StorageType.FILE, replicas=replicas
            )
            kv = await js.create_key_value(config)
        return cls(kv, ttl_s)

    async def holder(self, key: str) -> Lease | None:
        """The live lease on ``key``, if any."""
        try:
            entry = await self.kv.get(key)
        except (nats.js.errors.KeyNotFoundError, nats.js.errors.KeyDeletedError):
            return None
        return msgspec.json.decode(entry.value, type=Lease) if entry.value else None

    @asynccontextmanager
    async def hold(self, key: str, lease: Lease) -> AsyncIterator[None]:
        """Hold ``key`` for the block. Raises ConflictError naming the running operation."""
        payload = msgspec.json.encode(lease)
        try:
            revision = await self.kv.create(key, payload)
        except nats.js.errors.KeyWrongLastSequenceError:
            current = await self.holder(key)
            running = f"{current.operation} {current.op_id}" if current else "another operation"
            raise ConflictError(f"stack {key}: {running} is running; try again later") from None
        held = [revision]  # the lease's latest revision; None once another holder has it
        try:
            async with anyio.create_task_group() as tg:
                tg.start_soon(self._keep, key, payload, held)
                try:
                    yield
                finally:
                    tg.cancel_scope.cancel()
        finally:
            with anyio.move_on_after(2, shield=True):
                await self._release(key, held[0])

    async def _keep(self, key: str, payload: bytes, held: list[int | None]) -> None:
        """Rewrite the lease every third of the TTL, so it outlives no holder by more."""
        while held[0] is not None:
            await anyio.sleep(self.ttl_s / 3)
            try:
                held[0] = await self.kv.update(key, payload, last=held[0])
            except nats.js.errors.KeyWrongLastSequenceError:
                log.warning("infra_lock_lost", extra={"stack": key})
                held[0] = None
            except (nats.errors.Error, TimeoutError):
                log.warning("infra_lock_refresh_failed", extra={"stack": key})

    async def _release(self, key: str, revision: int | None) -> None:
        """Delete the lease if it is still ours (an expired one may be another's by now)."""
        if revision is None:
            return
        try:
            await self.kv.delete(key, last=revision)
        except nats.js.errors.KeyWrongLastSequenceError:
            pass
        except nats.errors.Error:
            log.warning("infra_lock_release_failed", extra={"stack": key})
