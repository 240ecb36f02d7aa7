"""The memory agent: keeps coding context across sessions in four tiers and finds it by meaning.

Run as ``python -m agents.memory``. It serves :class:`memory.engine.MemoryEngine` on
``sophia.memory.<endpoint>``; bad input is a 400 naming the field (msgspec checks each
request against its schema as it decodes it), and the agent keeps serving. A write is
acknowledged only once L3 (the source of truth) has committed it, and only when what it
stored can come back in one reply (else 413).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import msgspec

from bus import Agent, BadRequestError, endpoint, wire
from bus.codec import encode
from bus.config import Settings, load
from bus.limits import HEADER_ROOM
from bus.runner import run_agent
from bus.schemas import memory as s
from bus.subjects import INBOX_PREFIX, is_inbox
from memory.config import MemorySettings

if TYPE_CHECKING:
    from memory.engine import MemoryEngine


class MemoryAgent(Agent, name="memory"):
    """Keeps coding context across sessions in four tiers and finds it by meaning."""

    engine: MemoryEngine

    def __init__(self, settings: Settings | None = None) -> None:
        """Load the memory settings too (their home is the bus settings'). Raises ConfigError
        naming the variable, before anything connects."""
        super().__init__(settings)
        self.memory_settings = msgspec.structs.replace(
            load(MemorySettings), home=self.settings.home
        )

    async def setup(self) -> None:
        # the engine (ONNX Runtime, the tiers' clients) loads here, not at import: `sophia up`
        # imports every agent module to discover it and stays small
        from memory.engine import MemoryEngine

        reply_bytes = self.nc.max_payload - HEADER_ROOM
        self.engine = MemoryEngine(self.memory_settings, reply_bytes=reply_bytes)
        await self.engine.open()

    async def teardown(self) -> None:
        await self.engine.close()

    async def health_details(self) -> dict[str, str]:
        embedder = self.engine.embedder
        return {"model": embedder.model_id, "device": embedder.embedder.device}

    @endpoint(public=True)
    async def store(self, req: s.StoreRequest) -> s.StoreResult:
        """Remember a decision, solution, error, doc or code item (secrets redacted first)."""
        return await self.engine.store(req)

    @endpoint(public=True, access="read")
    async def search(self, req: s.SearchRequest) -> s.SearchResult:
        """Find items by meaning and keywords; code hits carry path and line range."""
        return await self.engine.search(req)

    @endpoint(public=True, access="read")
    async def context(self, req: s.ContextRequest) -> s.ContextPack:
        """What matters at a place in the code (path, symbol, question), ranked: the symbol's
        code, its callers and callees, the decisions and errors recorded for its file, the
        summary of the session named (else of the latest one saved); cut to
        ``budget_tokens``. 400 when path, symbol and query are all missing."""
        return await self.engine.context(req)

    @endpoint(public=True, access="read")
    async def get(self, req: s.GetRequest) -> s.Item:
        """One item by id, its whole body. Raises NotFoundError (404)."""
        return await self.engine.get(req)

    @endpoint(subject="list", public=True, access="read")
    async def list_items(self, req: s.ListRequest) -> s.ListResult:
        """Items most recent first, a page at a time: id, namespace, kind, created_at and a
        title (``path:start-end`` for code, else the text's first line); pass ``next_cursor``
        back as ``cursor`` for the next page ("" when there is none). 400 for a cursor this
        endpoint did not give."""
        return await self.engine.list_items(req)

    @endpoint(public=True)
    async def delete(self, req: s.DeleteRequest) -> s.DeleteResult:
        """Forget one item by id in every tier (``deleted`` is false when there was none)."""
        return await self.engine.delete(req)

    @endpoint(public=True)
    async def index(self, req: s.IndexRequest) -> s.IndexResult:
        """Index a repository on this agent's machine; only changed files are redone.

        Progress goes to ``progress_subject`` (the caller's inbox) after each file.
        """
        subject = req.progress_subject
        if subject and not is_inbox(subject):
            raise BadRequestError(f"progress_subject: must be an inbox ({INBOX_PREFIX}…)")

        async def progress(event: s.IndexProgress) -> None:
            await wire.publish(self.nc, subject, encode(event), what="progress")

        return await self.engine.index(req, progress if subject else None)

    @endpoint(public=True, access="read")
    async def stats(self, req: s.StatsRequest) -> s.Stats:
        """Items per kind and tier, the model and device, cache and L1 hit counts."""
        return await self.engine.stats(req)

    @endpoint(subject="session.save", public=True)
    async def session_save(self, req: s.SessionSaveRequest) -> s.SessionSaveResult:
        """Save an editor session's context (redacted) to restore in the next session."""
        return await self.engine.session_save(req)

    @endpoint(subject="session.load", public=True, access="read")
    async def session_load(self, req: s.SessionLoadRequest) -> s.Session:
        """The latest saved context of a session (``found`` false when there is none)."""
        return await self.engine.session_load(req)

    @endpoint(subject="cache.lookup", access="read")
    async def cache_lookup(self, req: s.CacheLookupRequest) -> s.CacheLookupResult:
        """A cached model response for this prompt, exact or by meaning."""
        return await self.engine.cache_lookup(req)

    @endpoint(subject="cache.put")
    async def cache_put(self, req: s.CachePutRequest) -> s.CachePutResult:
        """Cache a model's response to a prompt for a while."""
        return await self.engine.cache_put(req)


if __name__ == "__main__":
    run_agent(MemoryAgent)
