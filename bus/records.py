"""Typed records in a KV bucket, changed with optimistic concurrency.

``update`` reads a record with its revision, applies a pure function, and writes
the result only if nobody wrote in between (``Nats-Expected-Last-Subject-Sequence``);
on a conflict it reads again and retries, a bounded number of times. Two writers
therefore never lose each other's change.
"""

from __future__ import annotations

import random
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from typing import Any, Generic, TypeVar

import anyio
import msgspec
import nats.errors
import nats.js.errors
from nats.js.kv import KeyValue

from bus import codec
from bus.client import Bus, storage_full
from bus.errors import BadRequestError, ConflictError, NotFoundError, StorageFullError

T = TypeVar("T", bound=msgspec.Struct)

MAX_ATTEMPTS = 16
BACKOFF_S = 0.005


@asynccontextmanager
async def watching(kv: KeyValue, keys: str, **options: Any) -> AsyncIterator[Any]:
    """A watcher on ``keys`` of ``kv`` (``KeyValue.watch`` options), stopped when the block
    ends: within 2 s, even when the block was cancelled, a dead connection's error ignored."""
    watcher = await kv.watch(keys, **options)
    try:
        yield watcher
    finally:
        with anyio.move_on_after(2, shield=True):
            try:
                await watcher.stop()
            except nats.errors.Error:
                pass


class Records(Generic[T]):
    """The records of one type in one bucket (e.g. task state in ``sophia_tasks``)."""

    def __init__(self, kv: KeyValue, record_type: type[T], *, bucket: str) -> None:
        self.kv = kv
        self.record_type = record_type
        self.bucket = bucket

    @classmethod
    async def tasks(cls, bus: Bus, record_type: type[T]) -> Records[T]:
        """The ``<prefix>_tasks`` bucket (created by ``ensure_streams``)."""
        bucket = bus.subjects.tasks_bucket
        return cls(await bus.js.key_value(bucket), record_type, bucket=bucket)

    async def get(self, key: str) -> tuple[T, int]:
        """The record and its revision. Raises NotFoundError, BadRequestError (bad key)."""
        found = await self._read(key)
        if found is None:
            raise NotFoundError(f"{self.bucket}: no such record")
        return found

    async def update(
        self,
        key: str,
        change: Callable[[T | None], T],
        *,
        attempts: int = MAX_ATTEMPTS,
        backoff_s: float = BACKOFF_S,
    ) -> tuple[T, int]:
        """Apply ``change`` to the current record (None when absent) and store the result.

        ``change`` may run more than once, so it must be pure; an exception it raises ends
        the update with nothing written, and when it returns the very record it was given,
        nothing is written either (the stored record and its revision come back). After the
        n-th lost race it sleeps a random time
        below ``n * backoff_s``. Returns the stored record and its revision. Raises
        ConflictError after ``attempts`` lost races (a hot key with many writers needs more),
        StorageFullError when JetStream has no space for it.
        """
        for attempt in range(attempts):
            current = await self._read(key)
            record = change(current[0] if current else None)
            if current is not None and record is current[0]:
                return current  # unchanged: no write, no new revision
            payload = codec.encode(record)
            try:
                if current is None:
                    revision = await self.kv.create(key, payload)
                else:
                    revision = await self.kv.update(key, payload, last=current[1])
            except nats.js.errors.KeyWrongLastSequenceError:
                await anyio.sleep(backoff_s * (attempt + 1) * random.random())
                continue
            except nats.js.errors.APIError as exc:
                if not storage_full(exc):
                    raise
                raise StorageFullError(
                    f"bus storage is full: {self.bucket} was not written ({exc.description})"
                ) from None
            return record, revision
        raise ConflictError(f"{self.bucket}: the record kept changing; gave up after {attempts}")

    async def delete(self, key: str) -> None:
        await self.kv.delete(key)

    async def _read(self, key: str) -> tuple[T, int] | None:
        try:
            entry = await self.kv.get(key)
        except (nats.js.errors.KeyNotFoundError, nats.js.errors.KeyDeletedError):
            return None
        except nats.js.errors.InvalidKeyError:
            raise BadRequestError("key: letters, digits and -/_=. only") from None
        if entry.value is None or entry.revision is None:
            return None
        return codec.decode(entry.value, self.record_type), entry.revision
