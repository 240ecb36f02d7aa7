"""Wire schemas of the memory service (``sophia.memory.<endpoint>``).

Evolution rules (msgspec's): new fields get defaults, a field never changes type,
no ``forbid_unknown_fields``, so old readers accept new messages.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

import msgspec

Kind = Literal["code", "decision", "solution", "error", "session", "doc"]
KINDS: tuple[str, ...] = ("code", "decision", "solution", "error", "session", "doc")
Tier = Literal["l1", "l2", "l3", "l4", "hybrid"]

MAX_K = 100
Namespace = Annotated[str, msgspec.Meta(min_length=1, max_length=128)]


class StoreRequest(msgspec.Struct, kw_only=True):
    """One item to remember: redacted, deduplicated, then placed in the tiers."""

    text: str
    namespace: Namespace = "default"
    kind: Kind = "doc"
    metadata: dict[str, Any] = msgspec.field(default_factory=dict)


class StoreResult(msgspec.Struct, kw_only=True):
    """Where an item went; ``created`` is False when the same item was already there."""

    id: str
    created: bool = True
    tiers: list[str] = msgspec.field(default_factory=list)
    redactions: int = 0


class SearchFilters(msgspec.Struct, kw_only=True):
    """Metadata filters; every one that is set must match."""

    path: str | None = None  # exact path, or a prefix when it ends with "/"
    language: str | None = None
    tags: list[str] = msgspec.field(default_factory=list)  # any of them
    since: float | None = None  # unix seconds, created at or after
    until: float | None = None  # unix seconds, created before


class SearchRequest(msgspec.Struct, kw_only=True):
    """A natural-language or keyword query over one namespace."""

    query: str
    namespace: Namespace = "default"
    kinds: list[Kind] = msgspec.field(default_factory=list)  # empty: every kind
    k: Annotated[int, msgspec.Meta(ge=1, le=MAX_K)] = 10
    filters: SearchFilters = msgspec.field(default_factory=SearchFilters)
    mode: Literal["hybrid", "vector", "keyword"] = "hybrid"


class Hit(msgspec.Struct, kw_only=True):
    """One search result; code hits carry ``path``, ``start_line`` and ``end_line``."""

    id: str
    text: str
    score: float
    tier: str
    kind: str = "doc"
    namespace: str = "default"
    metadata: dict[str, Any] = msgspec.field(default_factory=dict)


class SearchResult(msgspec.Struct, kw_only=True):
    hits: list[Hit] = msgspec.field(default_factory=list)


class GetRequest(msgspec.Struct, kw_only=True):
    id: str


class Item(msgspec.Struct, kw_only=True):
    """A stored item as read back (the body comes from L4 when it was archived)."""

    id: str
    text: str
    namespace: str
    kind: str
    metadata: dict[str, Any] = msgspec.field(default_factory=dict)
    created_at: float = 0.0
    tier: str = "l3"
    model: str = ""


class DeleteRequest(msgspec.Struct, kw_only=True):
    id: str


class DeleteResult(msgspec.Struct, kw_only=True):
    id: str
    deleted: bool


class IndexRequest(msgspec.Struct, kw_only=True):
    """Index a repository on the memory agent's machine; the namespace defaults to its name."""

    path: str
    namespace: str = ""
    progress_subject: str = ""  # an inbox of the caller's: IndexProgress after each file


class IndexResult(msgspec.Struct, kw_only=True):
    namespace: str
    files: int  # files seen
    changed: int  # files (re)indexed
    removed: int  # files gone since the last run
    chunks: int  # chunks written
    seconds: float


class IndexProgress(msgspec.Struct, kw_only=True):
    """Progress of one index run (published as an event while it runs)."""

    namespace: str
    done: int
    total: int
    path: str = ""


class StatsRequest(msgspec.Struct, kw_only=True):
    namespace: str = ""  # empty: every namespace


class TierStats(msgspec.Struct, kw_only=True):
    name: str  # l1, l2, l3, l4
    backend: str
    items: int


class Stats(msgspec.Struct, kw_only=True):
    model: str
    device: str
    dim: int
    items: int
    by_kind: dict[str, int] = msgspec.field(default_factory=dict)
    namespaces: list[str] = msgspec.field(default_factory=list)
    tiers: list[TierStats] = msgspec.field(default_factory=list)
    cache_hits: int = 0
    cache_misses: int = 0
    l1_hits: int = 0
    l1_misses: int = 0


class SessionSaveRequest(msgspec.Struct, kw_only=True):
    """The context an editor session had, to restore in the next one."""

    session_id: Annotated[str, msgspec.Meta(min_length=1, max_length=256)]
    namespace: Namespace = "default"
    summary: str = ""
    context: dict[str, Any] = msgspec.field(default_factory=dict)


class SessionSaveResult(msgspec.Struct, kw_only=True):
    session_id: str
    version: int
    redactions: int = 0


class SessionLoadRequest(msgspec.Struct, kw_only=True):
    session_id: str
    namespace: Namespace = "default"


class Session(msgspec.Struct, kw_only=True):
    session_id: str
    namespace: str
    summary: str = ""
    context: dict[str, Any] = msgspec.field(default_factory=dict)
    version: int = 0
    saved_at: float = 0.0
    found: bool = True


class CacheLookupRequest(msgspec.Struct, kw_only=True):
    """Look up a model call: exact prompt first, then by meaning above ``threshold``."""

    model: Annotated[str, msgspec.Meta(min_length=1, max_length=256)]
    prompt: str
    threshold: float | None = None  # None: the configured default


class CacheLookupResult(msgspec.Struct, kw_only=True):
    hit: bool
    response: str = ""
    similarity: float = 0.0
    exact: bool = False


class CachePutRequest(msgspec.Struct, kw_only=True):
    model: Annotated[str, msgspec.Meta(min_length=1, max_length=256)]
    prompt: str
    response: str
    ttl_s: float | None = None  # None: the configured default


class CachePutResult(msgspec.Struct, kw_only=True):
    id: str
    expires_at: float
