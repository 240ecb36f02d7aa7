"""MCP sessions in the KV bucket ``<prefix>_sessions``, so every edge replica can serve them.

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
from dataclasses import dataclass
from typing import Any

import anyio
import msgspec
import nats.errors
import nats.js.errors
import pydantic
from mcp.server.runner import ServerRunner
from nats.js.kv import KeyValue

from bus.records import watching
from bus.schemas.edge import SessionRecord
from edge.access import Principal
from edge.mcp.core import McpCore

log = logging.getLogger("sophia.edge")

CACHE_SIZE = 10_000
_decoder = msgspec.json.Decoder(SessionRecord)


@dataclass(slots=True)
class Session:
    """A session as this replica serves it."""

    id: str
    record: SessionRecord
    runner: ServerRunner[Any]


class Sessions:
    """Create, find and end sessions; one per edge process."""

    def __init__(self, kv: KeyValue, core: McpCore) -> None:
        self._kv = kv
        self._core = core
        self._cache: OrderedDict[str, Session] = OrderedDict()

    def open(self, principal: Principal, tools: list[str]) -> Session:
        """A new session, not stored yet: :meth:`save` it once ``initialize`` succeeded."""
        session_id = uuid.uuid4().hex
        record = SessionRecord(principal=principal.name, protocol_version="", tools=tools)
        connection = self._core.new_connection(session_id=session_id)
        return Session(session_id, record, self._core.runner(connection))

    async def save(self, session: Session, client: dict[str, Any]) -> None:
        """Store ``session`` after its handshake (``client``: the initialize params)."""
        connection = session.runner.connection
        session.record = msgspec.structs.replace(
            session.record,
            protocol_version=connection.protocol_version,
            client={k: v for k, v in client.items() if k != "_meta"},
            created_at=time.time(),
        )
        await self._kv.create(session.id, msgspec.json.encode(session.record))
        self._remember(session)

    async def find(self, session_id: str, principal: Principal) -> Session | None:
        """The session ``session_id`` if it exists and belongs to ``principal``."""
        session = self._cache.get(session_id)
        if session is None:
            session = await self._load(session_id)
            if session is None:
                return None
            self._remember(session)
        else:
            self._cache.move_to_end(session_id)
        return session if session.record.principal == principal.name else None

    async def end(self, session: Session) -> None:
        """Delete ``session`` everywhere."""
        self._cache.pop(session.id, None)
        await self._kv.purge(session.id)

    async def _load(self, session_id: str) -> Session | None:
        if not session_id.isalnum() or len(session_id) > 64:
            return None
        try:
            entry = await self._kv.get(session_id)
            record = _decoder.decode(entry.value or b"")
            return Session(session_id, record, self._core.restore(session_id, record))
        except nats.js.errors.NotFoundError:
            return None
        except (msgspec.DecodeError, msgspec.ValidationError, pydantic.ValidationError):
            log.warning("session_unreadable", extra={"session": session_id})
            return None

    def _remember(self, session: Session) -> None:
        self._cache[session.id] = session
        self._cache.move_to_end(session.id)
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
