"""The tier interfaces and the records that cross them.

Each tier has two real backends (a server one and an embedded one), picked by configuration
in :mod:`memory.tiers.select`. L1, L2 and L4 are one small Protocol each; L3 does four jobs
(records and their keyword index, sessions, the model-call cache, file hashes, plus a little
meta), so it is one Protocol per job and :class:`FactTier` is their union.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Protocol, runtime_checkable

import numpy as np


@dataclass(slots=True)
class Query:
    """Which items a search may return: namespace, kinds and metadata filters."""

    namespace: str | None  # None: every namespace
    kinds: list[str] = field(default_factory=list)
    path: str | None = None  # exact, or a prefix when it ends with "/"
    language: str | None = None
    tags: list[str] = field(default_factory=list)
    since: float | None = None
    until: float | None = None


RANK_BUDGET = 4000  # documents a keyword search may rank for one query (see affordable_terms)


def affordable_terms(counts: list[tuple[int, str]], budget: int) -> tuple[list[str], list[str]]:
    """From (matching documents, term) pairs: the rarest terms whose matches add up to at most
    ``budget`` documents, and every term that matches at all, rarest first.

    Ranking costs time per matching document and term (BM25, ts_rank: ~100 ms for an OR of
    common terms over 100k chunks), so terms are taken rarest first while their matches fit;
    the most common ones, which the ranking weighs least, are left out. In a store smaller
    than the budget nothing is left out. The first list is empty when no term fits: the
    caller then requires every present term (AND) among a bounded set of documents.
    """
    present = sorted((n, term) for n, term in counts if n)
    chosen: list[str] = []
    total = 0
    for n, term in present:
        if total + n > budget:
            break
        chosen.append(term)
        total += n
    return chosen, [term for _, term in present]


@dataclass(slots=True)
class Record:
    """One item as the facts tier (L3) keeps it; the source of truth for every other tier."""

    id: str
    namespace: str
    kind: str
    text: str  # the whole body, or its head when the body is archived in L4
    metadata: dict[str, Any]
    created_at: float
    content_hash: str
    model: str = ""  # embedding model id; "" when the item is not embedded
    archived: bool = False
    head: str = ""  # keyword text of high weight (path, symbol names)
    body: str = ""  # keyword text (the body, identifiers split)

    @property
    def path(self) -> str | None:
        value = self.metadata.get("path")
        return value if isinstance(value, str) else None

    @property
    def language(self) -> str | None:
        value = self.metadata.get("language")
        return value if isinstance(value, str) else None

    @property
    def tags(self) -> list[str]:
        value = self.metadata.get("tags")
        return [t for t in value if isinstance(t, str)] if isinstance(value, list) else []


@dataclass(slots=True)
class VectorPoint:
    id: str
    vector: np.ndarray
    payload: dict[str, Any]


class Backend(Protocol):
    """What every tier backend has: a name (shown in stats), and open/close."""

    name: str

    async def open(self) -> None: ...
    async def close(self) -> None: ...


class HotTier(Backend, Protocol):
    """L1: small values with a time to live (Redis or an in-process LRU)."""

    async def get(self, key: str) -> bytes | None: ...
    async def set(self, key: str, value: bytes, ttl_s: float) -> None: ...
    async def delete(self, key: str) -> None: ...
    async def delete_many(self, keys: list[str]) -> None:
        """Delete every key (one round trip on a server)."""
        ...

    async def incr(self, key: str) -> int: ...
    async def counter(self, key: str) -> int: ...
    async def count(self) -> int: ...


class VectorTier(Backend, Protocol):
    """L2: unit vectors with a filterable payload, one collection per vector space."""

    async def upsert(self, points: list[VectorPoint]) -> None: ...
    async def delete(self, ids: list[str]) -> None: ...
    async def search(self, vector: np.ndarray, query: Query, k: int) -> list[tuple[str, float]]: ...
    async def count(self) -> int: ...
    async def ids(self) -> set[str]: ...
    async def payloads(self) -> list[dict[str, Any]]: ...
    async def drop(self) -> None: ...
    async def optimize(self) -> None: ...


# ---- L3, one protocol per job: a new backend can be written (and tested) a piece at a time ----


@runtime_checkable
class RecordStore(Protocol):
    """L3's records and their keyword index: the source of truth for every other tier."""

    async def insert_many(self, records: list[Record]) -> list[bool]:
        """Insert the records that are new; per record, whether it was (a twin was not)."""
        ...

    async def get_many(self, ids: list[str]) -> dict[str, Record]: ...
    async def delete(self, ids: list[str]) -> int: ...
    async def keyword_search(
        self, terms: list[str], query: Query, k: int
    ) -> list[tuple[str, float]]:
        """The best ``k`` (id, score) pairs for ``terms``, ranking a bounded number of
        documents (see :func:`affordable_terms`)."""
        ...

    async def scan(self, after: str, limit: int) -> list[Record]:
        """Up to ``limit`` records with ids after ``after``, in id order."""
        ...

    async def relabel(self, model: str) -> None:
        """Mark every embedded record as embedded by ``model`` (after a re-embed)."""
        ...

    async def counts(self, namespace: str) -> dict[tuple[str, str], int]:
        """Records per (namespace, kind); every namespace when ``namespace`` is empty."""
        ...

    async def list_items(
        self, query: Query, after: tuple[float, str] | None, limit: int
    ) -> list[Record]:
        """Up to ``limit`` records of ``query``'s namespace and kinds, most recent first: by
        (created_at, id) descending, from the first one below ``after`` when it is given."""
        ...


@runtime_checkable
class MetaStore(Protocol):
    """L3's small key/value table of the engine's own facts (which model fills a space)."""

    async def meta_get(self, key: str) -> str | None: ...
    async def meta_set(self, key: str, value: str) -> None: ...


@dataclass(slots=True)
class SavedSession:
    """The latest save of one session, as :meth:`SessionStore.session_latest` finds it."""

    namespace: str
    session_id: str
    body: str
    version: int
    saved_at: float


@runtime_checkable
class SessionStore(Protocol):
    """The latest saved context of each editor session, with a version counter."""

    async def session_put(self, namespace: str, session_id: str, body: str, at: float) -> int:
        """Save ``body`` as the session's latest; returns its version (1, 2, …)."""
        ...

    async def session_get(self, namespace: str, session_id: str) -> tuple[str, int, float] | None:
        """(body, version, saved at) of the latest save, or None."""
        ...

    async def session_latest(self, namespace: str | None) -> SavedSession | None:
        """The session of ``namespace`` (of every namespace when None) saved last, or None;
        of two saved at the same time, the greater (namespace, session id)."""
        ...


@dataclass(slots=True)
class CachedCall:
    """One entry of the model-call cache as L3 keeps it: what was asked, and the answer."""

    model: str
    scope: str
    prompt: str  # redacted; "" in entries cached before prompts were kept
    response: str


@runtime_checkable
class CacheStore(Protocol):
    """Model calls of the model-call cache, each with an expiry."""

    async def cache_put(self, entry_id: str, call: CachedCall, expires_at: float) -> None: ...
    async def cache_get(self, entry_id: str, now: float) -> CachedCall | None:
        """The entry, unless it expired by ``now``."""
        ...


@dataclass(slots=True)
class FileBatch:
    """Files of one namespace whose code records are replaced together (an index batch)."""

    namespace: str
    drop: list[str] = field(default_factory=list)  # paths: their code records and hash go
    records: list[Record] = field(default_factory=list)  # then these are inserted
    hashes: dict[str, str] = field(default_factory=dict)  # then these hashes are recorded


@runtime_checkable
class FileHashStore(Protocol):
    """The content hash of every indexed file, so a re-index redoes only changed files."""

    async def file_hashes(self, namespace: str) -> dict[str, str]: ...
    async def set_file(self, namespace: str, path: str, content_hash: str) -> None: ...
    async def drop_file(self, namespace: str, path: str) -> list[str]:
        """Forget a file and delete its code records in one transaction; returns their ids."""
        ...

    async def replace_files(self, batch: FileBatch) -> list[str]:
        """In one transaction: forget the files ``batch.drop`` names and delete their code
        records, insert ``batch.records`` (an id already there is left as it is), record
        ``batch.hashes``. Returns the ids of the records deleted."""
        ...


class FactTier(Backend, RecordStore, MetaStore, SessionStore, CacheStore, FileHashStore, Protocol):
    """L3 as a whole (PostgreSQL or SQLite), as :func:`memory.tiers.select.select` returns it;
    each consumer is typed against the one job it uses."""


class ArchiveTier(Backend, Protocol):
    """L4: immutable bodies by key (S3 or a local directory)."""

    async def put(self, key: str, data: bytes) -> None: ...
    async def get(self, key: str) -> bytes | None: ...
    async def delete(self, key: str) -> None: ...
    async def count(self) -> int: ...
