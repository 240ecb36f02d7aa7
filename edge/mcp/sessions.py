"""MCP sessions in the KV bucket ``<prefix>_sessions``, so every edge replica serves any of them.

The SDK's streamable-HTTP transport keeps sessions in one process; the edge runs it stateless
and keeps the sessions itself: a record per session (who opened it, the protocol version and
client it initialised with, the client's tool allow-list).

Guarantee: a session opened through one replica is served by any other (its record is read
once, then kept in that replica's bounded cache); a session deleted anywhere is forgotten
everywhere within one KV watch round trip; an id that is unknown, deleted, unreadable or
opened by another principal is "not found" (the HTTP transport answers 404).
"""

from __future__ import annotations

import logging
import time
import uuid
from collections import OrderedDict
from typing import Any

import anyio
import msgspec
import nats.js.errors
from nats.js.kv import KeyValue

from bus.records import watching
from bus.schemas.edge import SessionRecord
from edge.access import Principal

log = logging.getLogger("sophia.edge")

CACHE_SIZE = 10_000
_decoder = msgspec.json.Decoder(SessionRecord)


class Sessions:
    """Create, find and end sessions; one per edge process."""

    def __init__(self, kv: KeyValue) -> None:
        self._kv = kv
        self._cache: OrderedDict[str, SessionRecord] = OrderedDict()

    async def open(
        self, principal: Principal, protocol_version: str, client: dict[str, Any], tools: list[str]
    ) -> str:
        """Store a new session after a successful ``initialize``; return its id."""
        session_id = uuid.uuid4().hex
        record = SessionRecord(
            principal=principal.name,
            protocol_version=protocol_version,
            client={k: v for k, v in client.items() if k != "_meta"},
            tools=tools,
            created_at=time.time(),
        )
        await self._kv.create(session_id, msgspec.json.encode(record))
        self._remember(session_id, record)
        return session_id

    async def find(self, session_id: str, principal: Principal) -> SessionRecord | None:
        """The session ``session_id`` if it exists and belongs to ``principal``."""
        record = self._cache.get(session_id)
        if record is None:
            record = await self._load(session_id)
            if record is None:
                return None
            self._remember(session_id, record)
        else:
            self._cache.move_to_end(session_id)
        return record if record.principal == principal.name else None

    async def end(self, session_id: str) -> None:
        """Delete the session everywhere."""
        self._cache.pop(session_id, None)
        await self._kv.purge(session_id)

    async def _load(self, session_id: str) -> SessionRecord | None:
        if not session_id.isalnum() or len(session_id) > 64:
            return None
        try:
            entry = await self._kv.get(session_id)
            return _decoder.decode(entry.value or b"")
        except nats.js.errors.NotFoundError:
            return None
        except (msgspec.DecodeError, msgspec.ValidationError):
            log.warning("session_unreadable")
            return None

    def _remember(self, session_id: str, record: SessionRecord) -> None:
        self._cache[session_id] = record
        self._cache.move_to_end(session_id)
        while len(self._cache) > CACHE_SIZE:
            self._cache.popitem(last=False)

    async def watch(
        self, *, task_status: anyio.abc.TaskStatus[None] = anyio.TASK_STATUS_IGNORED
    ) -> None:
        """Forget sessions deleted through other replicas; runs until cancelled."""
        async with watching(self._kv, ">", meta_only=True) as watcher:
            task_status.started()
            async for entry in watcher:
                if entry is not None and entry.operation in ("DEL", "PURGE"):
                    self._cache.pop(entry.key, None)
