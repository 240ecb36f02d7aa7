"""Wire schemas of the memory service (``sophia.memory.<endpoint>``).

Every request field carries its limit from :mod:`bus.limits`, so msgspec enforces it when a
request is decoded and the published JSON Schema states exactly that; the engine checks only
what a schema cannot say (byte sizes, what redaction leaves, secrets' shapes in identifiers,
paths on its machine).

Evolution rules (msgspec's): new fields get defaults, a field never changes type,
no ``forbid_unknown_fields``, so old readers accept new messages.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal, get_args

import msgspec

from bus.limits import (
    MAX_K,
    NAMESPACE_CHARS,
    PATH_CHARS,
    QUERY_CHARS,
    TAGS,
    Ident,
    K,
    Model,
    Namespace,
    OptionalText,
    Path,
    Query,
    SessionId,
    Subject,
    Text,
    text,
)

Kind = Literal["code", "decision", "solution", "error", "session", "doc"]
KINDS: tuple[str, ...] = get_args(Kind)
Tier = Literal["l1", "l2", "l3", "l4", "hybrid"]

#: a namespace that may be left empty ("every namespace", "the directory's name"), else not blank
OptionalNamespace = Annotated[str, msgspec.Meta(max_length=NAMESPACE_CHARS, pattern=r"^$|\S")]
#: a filter value: matched exactly against stored metadata, so blank only matches nothing
FilterPath = Annotated[str, text(PATH_CHARS, blank=True)]
FilterText = Annotated[str, text(QUERY_CHARS, blank=True)]
Threshold = Annotated[float, msgspec.Meta(gt=0, le=1)]
TtlSeconds = Annotated[float, msgspec.Meta(gt=0, le=365 * 86_400)]  # at most a year


class StoreRequest(msgspec.Struct, kw_only=True):
    """One item to remember: redacted, deduplicated, then placed in the tiers."""

    text: Text
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

    path: FilterPath | None = None  # exact path, or a prefix when it ends with "/"
    language: FilterText | None = None
    tags: Annotated[list[FilterText], msgspec.Meta(max_length=TAGS)] = msgspec.field(
        default_factory=list
    )  # any of them
    since: float | None = None  # unix seconds, created at or after
    until: float | None = None  # unix seconds, created before


class SearchRequest(msgspec.Struct, kw_only=True):
    """A natural-language or keyword query over one namespace, or every namespace when
    ``namespace`` is left out."""

    query: Query
    namespace: Namespace | None = None
    kinds: Annotated[list[Kind], msgspec.Meta(max_length=len(KINDS))] = msgspec.field(
        default_factory=list
    )  # empty: every kind
    k: K = 10
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
    """Hits best first; ``truncated`` when more matched than one reply can carry."""

    hits: list[Hit] = msgspec.field(default_factory=list)
    truncated: bool = False


class GetRequest(msgspec.Struct, kw_only=True):
    id: Ident


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
    id: Ident


class DeleteResult(msgspec.Struct, kw_only=True):
    id: str
    deleted: bool


#: characters of a ``memory.list`` cursor (the ones it gives are about half as long)
CURSOR_CHARS = 256
#: characters of a listed item's title taken from its text
TITLE_CHARS = 120
PageSize = Annotated[int, msgspec.Meta(ge=1, le=MAX_K)]
Cursor = Annotated[
    str,
    msgspec.Meta(
        max_length=CURSOR_CHARS,
        description="opaque: a next_cursor this endpoint gave; empty: the first page",
    ),
]


class ListRequest(msgspec.Struct, kw_only=True):
    """A page of items, most recent first, of one namespace, or every namespace when
    ``namespace`` is left out."""

    namespace: Namespace | None = None
    kinds: Annotated[list[Kind], msgspec.Meta(max_length=len(KINDS))] = msgspec.field(
        default_factory=list
    )  # empty: every kind
    limit: PageSize = 50
    cursor: Cursor = ""


class ListedItem(msgspec.Struct, kw_only=True):
    """One item of a page: ``title`` is ``path:start-end`` for code, else the first line of
    its text (at most ``TITLE_CHARS``)."""

    id: str
    namespace: str
    kind: str
    created_at: float
    title: str = ""


class ListResult(msgspec.Struct, kw_only=True):
    """Items by (created_at, id), newest first; ``next_cursor`` is "" on the last page."""

    items: list[ListedItem] = msgspec.field(default_factory=list)
    next_cursor: str = ""


class IndexRequest(msgspec.Struct, kw_only=True):
    """Index a repository on the memory agent's machine; the namespace defaults to its name."""

    path: Path
    namespace: OptionalNamespace = ""
    progress_subject: Subject = ""  # an inbox of the caller's: IndexProgress after each file


class IndexResult(msgspec.Struct, kw_only=True):
    namespace: str
    files: int  # files seen
    changed: int  # files (re)indexed
    removed: int  # files gone since the last run
    chunks: int  # chunks written
    seconds: float


class IndexProgress(msgspec.Struct, kw_only=True, tag_field="type", tag="index"):
    """Progress of one index run, published to the request's ``progress_subject`` after each
    file (one member of the progress union, :data:`bus.schemas.progress.Progress`)."""

    namespace: str
    done: int
    total: int
    path: str = ""
    chunks: int = 0  # chunks stored so far in this run
    seconds: float = 0.0  # since the run started, on the memory agent's clock


class StatsRequest(msgspec.Struct, kw_only=True):
    namespace: OptionalNamespace = ""  # empty: every namespace


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

    session_id: SessionId
    namespace: Namespace = "default"
    summary: OptionalText = ""
    context: dict[str, Any] = msgspec.field(default_factory=dict)


class SessionSaveResult(msgspec.Struct, kw_only=True):
    session_id: str
    version: int
    redactions: int = 0


class SessionLoadRequest(msgspec.Struct, kw_only=True):
    session_id: SessionId
    namespace: Namespace = "default"


class Session(msgspec.Struct, kw_only=True):
    session_id: str
    namespace: str
    summary: str = ""
    context: dict[str, Any] = msgspec.field(default_factory=dict)
    version: int = 0
    saved_at: float = 0.0
    found: bool = True


#: characters of a cache scope: room for any hex digest
SCOPE_CHARS = 128
#: a cache partition: empty, or letters, digits and ``. _ : -`` (a hex digest, say)
Scope = Annotated[
    str,
    msgspec.Meta(
        max_length=SCOPE_CHARS,
        pattern=r"^[A-Za-z0-9._:-]*$",
        description="letters, digits and . _ : - only (a hex digest, say); empty: no scope",
    ),
]


class CacheLookupRequest(msgspec.Struct, kw_only=True):
    """Look up a model call: exact prompt first, then by meaning above ``threshold``.

    Only entries put with the same ``model`` and ``scope`` are seen. By meaning, a cached
    prompt must also ask the same question (:func:`memory.sameness.same_question`);
    ``semantic=False`` takes exact prompts only.
    """

    model: Model
    prompt: Text
    threshold: Threshold | None = None  # None: the configured default
    scope: Scope = ""  # opaque: what else decides the answer (system prompt, turns, sampling)
    semantic: bool = True


class CacheLookupResult(msgspec.Struct, kw_only=True):
    hit: bool
    response: str = ""
    similarity: float = 0.0
    exact: bool = False


class CachePutRequest(msgspec.Struct, kw_only=True):
    """Cache a model's response to a prompt, seen only by lookups of the same model and
    scope."""

    model: Model
    prompt: Text
    response: OptionalText
    ttl_s: TtlSeconds | None = None  # None: the configured default
    scope: Scope = ""
    #: False: only an exact lookup will ever ask for it, so it is not embedded
    semantic: bool = True


class CachePutResult(msgspec.Struct, kw_only=True):
    id: str
    expires_at: float


#: characters of a symbol name (``BaseClient._merge_url``)
SYMBOL_CHARS = 512
#: tokens one context pack may hold
MAX_CONTEXT_TOKENS = 32_000
Symbol = Annotated[str, text(SYMBOL_CHARS)]
ContextTokens = Annotated[
    int,
    msgspec.Meta(
        ge=1,
        le=MAX_CONTEXT_TOKENS,
        description="tokens of the embedding model's WordPiece tokenizer, over entry texts",
    ),
]


class ContextRequest(msgspec.Struct, kw_only=True):
    """What the editor knows about a place in the code; at least one of ``path``, ``symbol``
    and ``query``. Every namespace when ``namespace`` is left out."""

    namespace: Namespace | None = None
    path: Path | None = None  # relative to the repository root, as indexed
    symbol: Symbol | None = None  # `_merge_url` or `BaseClient._merge_url`
    query: Query | None = None
    budget_tokens: ContextTokens = 2_000
    #: whose summary to include; none: the latest saved session of the namespace (of the
    #: symbol's namespace when none is named; of every namespace when no symbol is found)
    session_id: SessionId | None = None


class ContextEntry(msgspec.Struct, kw_only=True):
    """One piece of a context pack and why it is there.

    ``reason``: symbol, decision, error, solution, session, query, callee or caller (a plain
    string, so later reasons do not break old readers). ``score`` orders entries within their
    reason: its integer part is how closely the entry is tied to the place asked about, its
    fraction the search's confidence. ``truncated``: the text was cut at a line boundary
    (``end_line`` is then the last line kept)."""

    reason: str
    id: str
    text: str
    score: float
    tokens: int
    kind: str = "code"
    namespace: str = ""
    path: str = ""
    start_line: int = 0
    end_line: int = 0
    symbol: str = ""
    truncated: bool = False


class ContextPack(msgspec.Struct, kw_only=True):
    """Entries in priority order (symbol, decision, error, solution, session, query, callee,
    caller); ``tokens_used`` never exceeds ``budget_tokens``. ``dropped`` counts, per reason,
    what was found but did not fit."""

    entries: list[ContextEntry] = msgspec.field(default_factory=list)
    tokens_used: int = 0
    budget_tokens: int = 0
    dropped: dict[str, int] = msgspec.field(default_factory=dict)
    truncated: bool = False  # something was dropped or cut
    namespace: str = ""  # where the symbol was found; "" when not found
    tokenizer: str = ""
