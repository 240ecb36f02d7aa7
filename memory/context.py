"""Context for the editor: one ranked pack of what matters at a place in the code.

Given a path, a symbol and/or a question, :class:`ContextLoader` gathers, its searches run
concurrently: the symbol's own code and its class's header (reason ``symbol``), the
definitions it calls (``callee``), the code that calls it — for a file alone, the code that
imports it (``caller``) —, the decisions, errors and solutions recorded for its file, a
directory above it or its module (``decision``, ``error``, ``solution``), hits for the question
(``query``), and the summary of the session named, else of the latest session saved
(``session``). Each section is ranked by its own rules, and :func:`memory.tokens.pack` fills
the token budget from them.

Guarantee: every entry names its reason, item id, path, lines and score; the pack holds at
most ``budget_tokens`` tokens of the embedding model's tokenizer and fits one bus reply.
"""

from __future__ import annotations

import re
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass
from functools import partial
from pathlib import PurePosixPath

import anyio
import anyio.to_thread
import msgspec

from bus.errors import BadRequestError
from bus.limits import QUERY_CHARS
from bus.schemas import memory as s
from memory import symbols as sym
from memory.budget import ReplyBudget
from memory.keywords import query_terms
from memory.sessions import Sessions
from memory.tokens import pack, token_counter

Search = Callable[[s.SearchRequest], Awaitable[s.SearchResult]]
Entries = list[s.ContextEntry]

NOTE_KINDS = ("decision", "error", "solution")
MAX_DEFINITIONS = 3  # places a bare name is defined that are shown
MAX_PER_SECTION = 8


@dataclass(frozen=True, slots=True)
class Place:
    """Where the editor is, normalised: the file's directories and its module's names."""

    namespace: str | None
    path: str | None
    symbol: str | None
    query: str | None
    dirs: tuple[str, ...] = ()  # nearest first: pkg/sub, pkg
    modules: tuple[str, ...] = ()  # longest first: src.pkg.mod, pkg.mod

    @property
    def names(self) -> tuple[str, ...]:
        """How a text names the file: its module, its path, its path without a suffix."""
        if not self.path:
            return self.modules
        return (*self.modules, self.path, str(PurePosixPath(self.path).with_suffix("")))


def place(req: s.ContextRequest, path: str | None = None) -> Place:
    """The request as a :class:`Place` (``path`` instead of its own). Raises BadRequestError
    naming the fields when path, symbol and query are all missing, or a path is absolute."""
    if not (req.path or req.symbol or req.query):
        raise BadRequestError("path, symbol, query: give at least one")
    path = path or _relative(req.path)
    symbol = req.symbol.strip().removesuffix("()") or None if req.symbol else None
    if not path:
        return Place(req.namespace, None, symbol, req.query)
    pure = PurePosixPath(path)
    dirs = tuple(str(p) for p in pure.parents if str(p) != ".")
    parts = [*pure.parent.parts, *([] if pure.stem == "__init__" else [pure.stem])]
    dotted = [".".join(parts[i:]) for i in range(len(parts)) if len(parts) - i >= 2]
    if len(parts) == 1 and len(parts[0]) >= 4:  # a top-level module is named by its name alone
        dotted.append(parts[0])
    return Place(req.namespace, path, symbol, req.query, dirs, tuple(dotted))


def _relative(path: str | None) -> str | None:
    path = (path or "").strip().replace("\\", "/")
    while path.startswith("./"):
        path = path[2:]
    if path.startswith("/") or re.match(r"[A-Za-z]:/", path):
        raise BadRequestError("path: must be relative to the repository root")
    return path or None


def entry(reason: str, hit: s.Hit, tier: float, rank: int) -> s.ContextEntry:
    """``hit`` as a ``reason`` entry; its score is the tier plus a fraction that falls with
    the hit's rank in its search."""
    meta = hit.metadata
    start, end = (meta.get(k) for k in ("start_line", "end_line"))
    return s.ContextEntry(
        reason=reason,
        id=hit.id,
        text=hit.text,
        score=round(tier + 0.5 / (1 + rank), 4),
        tokens=0,
        kind=hit.kind,
        namespace=hit.namespace,
        path=_str(meta.get("path")),
        start_line=start if isinstance(start, int) else 0,
        end_line=end if isinstance(end, int) else 0,
        symbol=_str(meta.get("symbol")),
    )


def _str(value: object) -> str:
    return value if isinstance(value, str) else ""


def _best(found: Entries) -> Entries:
    return sorted(found, key=lambda e: -e.score)[:MAX_PER_SECTION]


class ContextLoader:
    """Gathers context over the engine's search and sessions, then packs it (see module)."""

    def __init__(self, search: Search, sessions: Sessions, budget: ReplyBudget) -> None:
        self.search, self.sessions, self.budget = search, sessions, budget

    async def load(self, req: s.ContextRequest) -> s.ContextPack:
        """The pack for ``req``: searches that need only the request first, then those that
        need the symbol's definition. Raises BadRequestError (see :func:`place`)."""
        where = place(req)
        counter = await anyio.to_thread.run_sync(token_counter)
        found: dict[str, Entries] = {}

        async def run(name: str, gather: Callable[[], Awaitable[Entries]]) -> None:
            found[name] = await gather()

        async with anyio.create_task_group() as tg:
            tg.start_soon(run, "symbol", partial(self._definitions, where))
            tg.start_soon(run, "query", partial(self._query, where))
            if req.session_id or req.namespace is not None:
                tg.start_soon(run, "session", partial(self._session, req, where.namespace))
            if where.path:
                tg.start_soon(run, "notes", partial(self._notes, where))
        first = found["symbol"][0] if found["symbol"] else None
        async with anyio.create_task_group() as tg:
            if first is not None:
                tg.start_soon(run, "caller", partial(self._callers, first))
                tg.start_soon(run, "callee", partial(self._callees, first))
                if not where.path:
                    tg.start_soon(run, "notes", partial(self._notes, place(req, first.path)))
            elif where.path:
                tg.start_soon(run, "caller", partial(self._importers, where, where.path))
            if (session := self._symbol_session(req, first)) is not None:
                tg.start_soon(run, "session2", session)
        namespace = req.namespace or (first.namespace if first else "")
        entries = [e for group in found.values() for e in group]
        return await pack(entries, req.budget_tokens, counter, self.budget, namespace)

    async def _find(self, query: str, **kw: object) -> list[s.Hit]:
        req = s.SearchRequest(query=query[:QUERY_CHARS], **kw)  # type: ignore[arg-type]
        return (await self.search(req)).hits

    async def _code(self, name: str, namespace: str | None, k: int) -> list[s.Hit]:
        mode = "keyword" if query_terms(name) else "hybrid"  # a stopword name: by meaning
        return await self._find(name, mode=mode, namespace=namespace, kinds=["code"], k=k)

    async def _definitions(self, where: Place) -> Entries:
        """The symbol's own code (every window of the best match), its class's header, and
        up to two more places that define the name. The file's chunks are searched first,
        then (a name used in the file but defined elsewhere) the name's, then by meaning."""
        symbol = where.symbol
        if not symbol:
            return []
        ask: dict[str, object] = {"namespace": where.namespace, "kinds": ["code"]}
        if where.path:
            f = s.SearchFilters(path=where.path)
            words = f"{symbol} {where.path}"
            hits = await self._find(words, mode="keyword", k=100, filters=f, **ask)
            if found := definitions(symbol, hits):
                return found
        if found := definitions(symbol, await self._code(symbol, where.namespace, 50)):
            return found
        return definitions(symbol, await self._find(symbol, mode="vector", k=50, **ask))

    async def _callers(self, definition: s.ContextEntry) -> Entries:
        """Code that calls the definition (a class: names it), around the first use; same
        class first, then same file, then elsewhere."""
        name, cls = sym.short_name(definition.symbol), sym.owner(definition.symbol)
        pattern = sym.usage(name, sym.is_class(definition))
        found: Entries = []
        for rank, hit in enumerate(await self._code(name, definition.namespace, 60)):
            c = entry("caller", hit, 0, rank)
            if c.symbol == definition.symbol or c.id == definition.id:
                continue
            if (window := sym.around(c, pattern)) is not None:
                same_class = bool(cls) and c.symbol.startswith(cls + ".")
                tier = 3 if same_class else 2 if c.path == definition.path else 1
                window.score = round(tier + c.score, 4)
                found.append(window)
        return _best(found)

    async def _callees(self, definition: s.ContextEntry) -> Entries:
        """One definition per name the symbol calls, in call order, nearest first: the
        symbol's own class, then its file, its directory, elsewhere (less when ambiguous)."""
        names = sym.called_names(definition.text, sym.short_name(definition.symbol))
        cls = sym.owner(definition.symbol)
        found: list[s.ContextEntry | None] = [None] * len(names)

        async def one(i: int, name: str, via_self: bool) -> None:
            hits = await self._code(name, definition.namespace, 20)
            choices = [d for d in defined(name, hits, "callee") if d.id != definition.id]
            if via_self and cls:
                choices = [d for d in choices if d.symbol == f"{cls}.{name}"] or choices
            if choices:
                best = min(choices, key=lambda d: sym.distance(d.path, definition.path))
                tier = 3 - sym.distance(best.path, definition.path) - 0.5 * (len(choices) > 1)
                best.score = round(max(tier, 0.5) + 0.5 / (1 + i), 4)
                found[i] = best

        async with anyio.create_task_group() as tg:
            for i, (name, via_self) in enumerate(names):
                tg.start_soon(one, i, name, via_self)
        return [d for d in found if d is not None]

    async def _importers(self, where: Place, path: str) -> Entries:
        """For a file without a symbol: the code that imports its module, around the import."""
        pure = PurePosixPath(path)
        module = where.modules[0] if where.modules else pure.stem
        stem = re.escape(pure.stem if pure.stem != "__init__" else pure.parent.name)
        mod = re.escape(module)
        pattern = re.compile(
            rf"^\s*(?:from\s+(?:{mod}|\.+{stem})\s+import\b|import\s+{mod}\b"
            rf"|from\s+\S+\s+import\s+(?:.*,\s*)?{stem}\b)"
        )
        found: Entries = []
        for rank, hit in enumerate(await self._code(module, where.namespace, 40)):
            c = entry("caller", hit, 1, rank)
            if c.path != path and (window := sym.around(c, pattern)) is not None:
                found.append(window)
        return _best(found)

    async def _notes(self, where: Place) -> Entries:
        """Decisions, errors and solutions tied to the file, a directory above it or its
        module (see :func:`note_tier`): one search by meaning and words, one filtered to the
        file, one to its top directory."""
        words = " ".join([*where.names, where.symbol or "", where.query or ""])
        ask: dict[str, object] = {"namespace": where.namespace, "kinds": list(NOTE_KINDS)}
        searches = [partial(self._find, words, k=30, **ask)]
        for prefix in [where.path, *(f"{d}/" for d in where.dirs[-1:])]:
            f = s.SearchFilters(path=prefix)
            searches.append(partial(self._find, words, mode="keyword", k=30, filters=f, **ask))
        ranked: dict[str, tuple[int, s.Hit]] = {}

        async def one(search: Callable[[], Awaitable[list[s.Hit]]]) -> None:
            for rank, hit in enumerate(await search()):
                if hit.id not in ranked or rank < ranked[hit.id][0]:
                    ranked[hit.id] = (rank, hit)

        async with anyio.create_task_group() as tg:
            for search in searches:
                tg.start_soon(one, search)
        found = [
            entry(hit.kind, hit, tier, rank)
            for rank, hit in ranked.values()
            if (tier := note_tier(hit, where))
        ]
        return [e for kind in NOTE_KINDS for e in _best([e for e in found if e.reason == kind])]

    async def _query(self, where: Place) -> Entries:
        if not where.query:
            return []
        hits = await self._find(where.query, namespace=where.namespace, k=12)
        return [entry("query", h, 1, rank) for rank, h in enumerate(hits)]

    def _symbol_session(
        self, req: s.ContextRequest, first: s.ContextEntry | None
    ) -> Callable[[], Awaitable[Entries]] | None:
        """The session gathered once the symbol is found, when the request names no
        namespace: ``req.session_id`` in the symbol's namespace (it was looked for in
        "default" already), else the latest session there, or of every namespace when no
        symbol was found."""
        if req.namespace is not None:
            return None
        if req.session_id:
            if first is None or first.namespace == "default":
                return None
            return partial(self._session, req, first.namespace)
        return partial(self._session, req, first.namespace if first else None)

    async def _session(self, req: s.ContextRequest, namespace: str | None) -> Entries:
        """The summary (else the context) of ``req.session_id``, else of the latest session
        of ``namespace`` (every namespace when None); a session found in the namespace asked
        for or where the symbol is ranks above one in "default" or found anywhere."""
        if req.session_id:
            load = s.SessionLoadRequest(session_id=req.session_id, namespace=namespace or "default")
            session: s.Session | None = await self.sessions.load(load)
        else:
            session = await self.sessions.latest(namespace)
        if session is None or not session.found:
            return []
        text = session.summary
        if not text.strip() and session.context:
            text = msgspec.json.encode(session.context).decode()
        if not text.strip():
            return []
        return [
            s.ContextEntry(
                reason="session",
                id=session.session_id,
                text=text,
                score=2.0 if namespace else 1.0,
                tokens=0,
                kind="session",
                namespace=session.namespace,
            )
        ]


def defined(name: str, hits: list[s.Hit], reason: str) -> Entries:
    """The chunks among ``hits`` that define ``name`` (the last part of their symbol), or,
    cut to its lines, that hold its definition (a method of a class chunked whole)."""
    found: Entries = []
    for rank, hit in enumerate(hits):
        c = entry(reason, hit, 0, rank)
        if sym.short_name(c.symbol) == name:
            found.append(c)
        elif (inner := sym.member(c, name)) is not None:
            found.append(inner)
    return found


def definitions(symbol: str, hits: list[s.Hit]) -> Entries:
    """The places among ``hits`` that define ``symbol``, best first: exact names before
    qualified ones, then by search rank; a definition's windows in line order, then the
    header of the best one's class."""
    groups: dict[tuple[str, str, str], list[tuple[int, s.ContextEntry]]] = {}
    for c in defined(sym.short_name(symbol), hits, "symbol"):
        if strength := sym.symbol_match(symbol, c.symbol):
            groups.setdefault((c.namespace, c.path, c.symbol), []).append((strength, c))
    ordered = sorted(groups.values(), key=lambda g: (-g[0][0], -g[0][1].score))
    found: Entries = []
    for n, group in enumerate(ordered[:MAX_DEFINITIONS]):
        tier = 4 if n == 0 else 2
        for _, c in sorted(group, key=lambda x: x[1].start_line):
            found.append(msgspec.structs.replace(c, score=round(tier + c.score, 4)))
    if ordered:
        best = ordered[0][0][1]
        cls = sym.owner(best.symbol)
        for rank, hit in enumerate(hits):
            meta = hit.metadata
            if cls and meta.get("symbol") == cls and meta.get("path") == best.path:
                found.append(entry("symbol", hit, 3, rank))
                break
    return found


def _mentions(text: str, names: Iterable[str]) -> bool:
    return any(re.search(rf"(?<![\w.]){re.escape(n)}(?![\w/])", text) for n in names if n)


def note_tier(hit: s.Hit, where: Place) -> int:
    """How a note is tied to the place: 5 its file (or module, by metadata) and its symbol,
    4 its file or module, 3 a directory above it, 2 its text names the module or path,
    1 a note with no path of its own names the symbol (4 letters or more), 0 not at all."""
    meta = hit.metadata
    path = _str(meta.get("path")).strip().removeprefix("./").rstrip("/")
    symbol = where.symbol or ""
    same_symbol = bool(symbol) and bool(sym.symbol_match(symbol, _str(meta.get("symbol"))))
    if (path and path == where.path) or _str(meta.get("module")) in where.modules:
        return 5 if same_symbol else 4
    if path and path in where.dirs:
        return 3
    if _mentions(hit.text, where.names):
        return 2
    short = sym.short_name(symbol)
    named = _mentions(hit.text, [symbol, short if len(short) >= 4 else ""])
    return 1 if not path and (same_symbol or named) else 0
