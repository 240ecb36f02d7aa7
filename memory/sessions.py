"""Editor sessions' saved context: the latest version in L3, read through L1, every version a
later save replaced kept in L4.

Guarantee: a saved context is redacted first, and a save is refused (413) when the context
it would restore could not come back in one ``session.load`` reply.
"""

from __future__ import annotations

import time
from typing import Any

import msgspec

from bus.schemas import memory as s
from memory import keys
from memory.budget import ReplyBudget, encoded_size
from memory.redact import redact, redact_value
from memory.tiers.base import ArchiveTier, HotTier, SessionStore
from memory.validation import within_bytes

#: a version number as long as one can be, for sizing a reply before the save knows it
_LONGEST_VERSION = 2**62


class Sessions:
    """Saves and restores sessions over a :class:`SessionStore`, L1 and L4."""

    def __init__(
        self,
        *,
        store: SessionStore,
        hot: HotTier,
        archive: ArchiveTier,
        budget: ReplyBudget,
        ttl_s: float,
        max_text_bytes: int,
    ) -> None:
        self.store, self.hot, self.archive = store, hot, archive
        self.budget = budget
        self.ttl_s = ttl_s
        self.max_text_bytes = max_text_bytes

    async def save(self, req: s.SessionSaveRequest) -> s.SessionSaveResult:
        """Save a session's context (redacted); the version it replaces goes to L4.

        Raises BadRequestError (summary over max_text_bytes) and PayloadTooLargeError.
        """
        sid, namespace = req.session_id, req.namespace
        summary, n1 = redact(within_bytes(req.summary, "summary", self.max_text_bytes))
        context, n2 = redact_value(req.context)
        now = time.time()
        restored = _session(sid, namespace, summary, context, _LONGEST_VERSION, now)
        bigger = "summary" if encoded_size(summary) >= encoded_size(context) else "context"
        self.budget.require(restored, bigger)
        body = msgspec.json.encode({"summary": summary, "context": context}).decode()
        previous = await self.store.session_get(namespace, sid)
        if previous is not None:
            old_body, old_version, _ = previous
            await self.archive.put(
                keys.archived_session(namespace, sid, old_version), old_body.encode()
            )
        version = await self.store.session_put(namespace, sid, body, now)
        cached = msgspec.json.encode([body, version, now])
        await self.hot.set(keys.session(namespace, sid), cached, self.ttl_s)
        return s.SessionSaveResult(session_id=sid, version=version, redactions=n1 + n2)

    async def load(self, req: s.SessionLoadRequest) -> s.Session:
        """The latest saved context of a session, or ``found=False``."""
        sid, namespace = req.session_id, req.namespace
        key = keys.session(namespace, sid)
        raw = await self.hot.get(key)
        row = (
            tuple(msgspec.json.decode(raw)) if raw else await self.store.session_get(namespace, sid)
        )
        if row is None:
            return s.Session(session_id=sid, namespace=namespace, found=False)
        body, version, saved_at = row
        if raw is None:
            await self.hot.set(key, msgspec.json.encode([body, version, saved_at]), self.ttl_s)
        data = msgspec.json.decode(body)
        return _session(
            sid, namespace, data.get("summary", ""), data.get("context", {}), version, saved_at
        )

    async def latest(self, namespace: str | None) -> s.Session | None:
        """The session of ``namespace`` (of every namespace when None) saved last, or None.

        Read from L3 itself: L1 holds sessions by id, and the latest one changes with every
        save of any session of the namespace.
        """
        saved = await self.store.session_latest(namespace)
        if saved is None:
            return None
        data = msgspec.json.decode(saved.body)
        return _session(
            saved.session_id,
            saved.namespace,
            data.get("summary", ""),
            data.get("context", {}),
            saved.version,
            saved.saved_at,
        )


def _session(
    sid: str, namespace: str, summary: str, context: dict[str, Any], version: int, at: float
) -> s.Session:
    return s.Session(
        session_id=sid,
        namespace=namespace,
        summary=summary,
        context=context,
        version=version,
        saved_at=at,
    )
