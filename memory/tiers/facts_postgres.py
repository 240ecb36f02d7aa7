"""L3 production: PostgreSQL through asyncpg, with migrations and a tsvector GIN index."""

from __future__ import annotations

import json
from typing import Any

import asyncpg

from memory.tiers.base import (
    RANK_BUDGET,
    CachedCall,
    FileBatch,
    Query,
    Record,
    SavedSession,
    affordable_terms,
)
from memory.tiers.connections import PostgresPool

_MIGRATIONS: list[str] = [
    """
    CREATE TABLE items(
        id TEXT PRIMARY KEY,
        namespace TEXT NOT NULL,
        kind TEXT NOT NULL,
        text TEXT NOT NULL,
        metadata JSONB NOT NULL,
        path TEXT,
        language TEXT,
        tags TEXT[] NOT NULL DEFAULT '{}',
        created_at DOUBLE PRECISION NOT NULL,
        content_hash TEXT NOT NULL,
        model TEXT NOT NULL DEFAULT '',
        archived BOOLEAN NOT NULL DEFAULT FALSE,
        head TEXT NOT NULL DEFAULT '',
        body TEXT NOT NULL DEFAULT '',
        tsv tsvector GENERATED ALWAYS AS (
            setweight(to_tsvector('english', head), 'A') ||
            setweight(to_tsvector('english', body), 'D')
        ) STORED
    );
    CREATE INDEX items_tsv ON items USING GIN (tsv);
    CREATE INDEX items_ns_kind ON items(namespace, kind);
    CREATE INDEX items_ns_path ON items(namespace, path);
    CREATE TABLE files(
        namespace TEXT NOT NULL, path TEXT NOT NULL, hash TEXT NOT NULL,
        PRIMARY KEY(namespace, path)
    );
    CREATE TABLE sessions(
        namespace TEXT NOT NULL, session_id TEXT NOT NULL, version INTEGER NOT NULL,
        saved_at DOUBLE PRECISION NOT NULL, body TEXT NOT NULL,
        PRIMARY KEY(namespace, session_id)
    );
    CREATE TABLE cache_entries(
        id TEXT PRIMARY KEY, model TEXT NOT NULL, response TEXT NOT NULL,
        expires_at DOUBLE PRECISION NOT NULL
    );
    CREATE TABLE meta(key TEXT PRIMARY KEY, value TEXT NOT NULL);
    """,
    # 2: a cache entry keeps its scope and (redacted) prompt, so a lookup by meaning can
    # check that the cached prompt asks the same question; older entries get "" for both
    """
    ALTER TABLE cache_entries
        ADD COLUMN scope TEXT NOT NULL DEFAULT '',
        ADD COLUMN prompt TEXT NOT NULL DEFAULT '';
    """,
    # 3: memory.list pages by (created_at, id), within a namespace or across all of them;
    # context finds the session of a namespace saved last
    """
    CREATE INDEX items_created ON items(created_at, id);
    CREATE INDEX items_ns_created ON items(namespace, created_at, id);
    CREATE INDEX sessions_ns_saved ON sessions(namespace, saved_at);
    """,
]
_LOCK_ID = 0x50F1A  # advisory lock: one migrator at a time
_SELECT = "SELECT id, namespace, kind, text, metadata, created_at, content_hash, model, archived"
# one statement for a whole batch: the columns travel as arrays (one round trip, one plan);
# tags as JSON text, since a column of arrays of different lengths is no Postgres array
_INSERT = (
    "INSERT INTO items(id, namespace, kind, text, metadata, path, language, tags, created_at, "
    "content_hash, model, archived, head, body) "
    "SELECT r.id, r.ns, r.kind, r.text, r.meta::jsonb, r.path, r.lang, "
    "ARRAY(SELECT jsonb_array_elements_text(r.tags::jsonb)), r.at, r.hash, r.model, r.arch, "
    "r.head, r.body FROM unnest($1::text[], $2::text[], $3::text[], $4::text[], $5::text[], "
    "$6::text[], $7::text[], $8::text[], $9::float8[], $10::text[], $11::text[], $12::bool[], "
    "$13::text[], $14::text[]) "
    "AS r(id, ns, kind, text, meta, path, lang, tags, at, hash, model, arch, head, body) "
    "ON CONFLICT (id) DO NOTHING RETURNING id"
)


def _columns(records: list[Record]) -> list[list[Any]]:
    """The records as the 14 column arrays :data:`_INSERT` takes."""
    rows = [_row(r) for r in records]
    return [list(column) for column in zip(*rows, strict=True)] if rows else [[]] * 14


def _row(r: Record) -> tuple[Any, ...]:
    return (
        r.id, r.namespace, r.kind, r.text, json.dumps(r.metadata), r.path, r.language,
        json.dumps(r.tags), r.created_at, r.content_hash, r.model, r.archived, r.head, r.body,
    )  # fmt: skip


_TERM_COUNTS = (
    "SELECT term, (SELECT count(*) FROM (SELECT 1 FROM items "
    "WHERE tsv @@ to_tsquery('english', term) LIMIT $2) AS m) AS n "
    "FROM unnest($1::text[]) AS term"
)


def _taken(records: list[Record], inserted: set[str]) -> list[bool]:
    """Per record, whether it was inserted (of two with one id, the first)."""
    created: list[bool] = []
    for r in records:
        created.append(r.id in inserted)
        inserted.discard(r.id)
    return created


def _record(row: asyncpg.Record) -> Record:
    return Record(
        id=row["id"],
        namespace=row["namespace"],
        kind=row["kind"],
        text=row["text"],
        metadata=json.loads(row["metadata"]),
        created_at=row["created_at"],
        content_hash=row["content_hash"],
        model=row["model"],
        archived=row["archived"],
    )


def where(query: Query, first: int) -> tuple[str, list[Any]]:
    """SQL conditions on ``items`` for ``query``; placeholders numbered from ``first``."""
    args: list[Any] = []
    sql: list[str] = []

    def add(condition: str, value: Any) -> None:
        args.append(value)
        sql.append(condition.format(f"${first + len(args) - 1}"))

    if query.namespace is not None:
        add("namespace = {}", query.namespace)
    if query.kinds:
        add("kind = ANY({})", list(query.kinds))
    if query.path and query.path.endswith("/"):
        add("starts_with(path, {})", query.path)
    elif query.path:
        add("path = {}", query.path)
    if query.language:
        add("language = {}", query.language)
    if query.tags:
        add("tags && {}::text[]", list(query.tags))
    if query.since is not None:
        add("created_at >= {}", query.since)
    if query.until is not None:
        add("created_at < {}", query.until)
    return " AND ".join(sql) or "TRUE", args


class PostgresFactTier(PostgresPool):
    """Facts in PostgreSQL; schema migrated at open under an advisory lock.

    Raises UnavailableError when the server cannot be reached at open.
    """

    name = "postgres"

    def __init__(
        self, dsn: str, *, timeout_s: float = 10.0, rank_budget: int = RANK_BUDGET
    ) -> None:
        super().__init__(dsn, timeout_s=timeout_s, what="l3", lock_id=_LOCK_ID)
        self.rank_budget = rank_budget

    async def _setup(self, conn: asyncpg.Connection) -> None:
        await conn.execute(
            "CREATE TABLE IF NOT EXISTS schema_migrations(version INTEGER PRIMARY KEY)"
        )
        done = await conn.fetchval("SELECT coalesce(max(version), 0) FROM schema_migrations")
        for number, script in enumerate(_MIGRATIONS[done:], start=done + 1):
            await conn.execute(script)
            await conn.execute("INSERT INTO schema_migrations(version) VALUES ($1)", number)

    # ---- RecordStore: records and their keyword index -------------------------------------------

    async def insert_many(self, records: list[Record]) -> list[bool]:
        if not records:
            return []
        rows = await self._p.fetch(_INSERT, *_columns(records))
        return _taken(records, {row["id"] for row in rows})

    async def get_many(self, ids: list[str]) -> dict[str, Record]:
        if not ids:
            return {}
        rows = await self._p.fetch(f"{_SELECT} FROM items WHERE id = ANY($1)", list(ids))
        return {row["id"]: _record(row) for row in rows}

    async def delete(self, ids: list[str]) -> int:
        if not ids:
            return 0
        rows = await self._p.fetch("DELETE FROM items WHERE id = ANY($1) RETURNING id", list(ids))
        return len(rows)

    async def keyword_search(
        self, terms: list[str], query: Query, k: int
    ) -> list[tuple[str, float]]:
        """``ts_rank`` over the terms, with bounded work: see :meth:`_affordable`.

        Ranking every match of an OR of common terms costs ~120 ms at 100k items (measured);
        as in the SQLite tier, at most ``rank_budget`` documents are ranked for one query.
        """
        if not terms:
            return []
        chosen, present = await self._affordable(terms)
        if not present:
            return []
        if chosen:
            tsquery, candidates = " | ".join(chosen), self.rank_budget
        else:  # every term is common: rank documents that have them all, at most 4 x budget
            tsquery, candidates = " & ".join(present), 4 * self.rank_budget
        cond, args = where(query, 3)
        sql = (
            "SELECT id, ts_rank(tsv, q) AS rank FROM ("
            f"SELECT id, tsv FROM items WHERE tsv @@ to_tsquery('english', $1) AND {cond} "
            "LIMIT $2) AS candidates, to_tsquery('english', $1) AS q "
            f"ORDER BY rank DESC LIMIT ${len(args) + 3}"
        )
        rows = await self._p.fetch(sql, tsquery, candidates, *args, k)
        return [(row["id"], float(row["rank"])) for row in rows]

    async def _affordable(self, terms: list[str]) -> tuple[list[str], list[str]]:
        """:func:`affordable_terms`, counted in one round trip (each count stops past the
        budget)."""
        budget = self.rank_budget
        rows = await self._p.fetch(_TERM_COUNTS, list(dict.fromkeys(terms)), budget + 1)
        return affordable_terms([(row["n"], row["term"]) for row in rows], budget)

    async def scan(self, after: str, limit: int) -> list[Record]:
        sql = f"{_SELECT} FROM items WHERE id > $1 ORDER BY id LIMIT $2"
        return [_record(row) for row in await self._p.fetch(sql, after, limit)]

    async def relabel(self, model: str) -> None:
        """Mark every embedded record as embedded by ``model`` (after a re-embed)."""
        await self._p.execute(
            "UPDATE items SET model = $1 WHERE model != '' AND model != $1", model
        )

    async def counts(self, namespace: str) -> dict[tuple[str, str], int]:
        sql = "SELECT namespace, kind, count(*) AS n FROM items"
        args: list[Any] = []
        if namespace:
            sql, args = sql + " WHERE namespace = $1", [namespace]
        rows = await self._p.fetch(sql + " GROUP BY 1, 2", *args)
        return {(row["namespace"], row["kind"]): row["n"] for row in rows}

    async def list_items(
        self, query: Query, after: tuple[float, str] | None, limit: int
    ) -> list[Record]:
        """Most recent first, a backward walk of ``items_created`` or ``items_ns_created``
        from ``after`` (a row comparison: one range on the index, not an OR)."""
        cond, args = where(query, 1)
        if after is not None:
            n = len(args)
            cond += f" AND (created_at, id) < (${n + 1}, ${n + 2})"
            args.extend(after)
        sql = (
            f"{_SELECT} FROM items WHERE {cond} "
            f"ORDER BY created_at DESC, id DESC LIMIT ${len(args) + 1}"
        )
        return [_record(row) for row in await self._p.fetch(sql, *args, limit)]

    # ---- MetaStore ------------------------------------------------------------------------------

    async def meta_get(self, key: str) -> str | None:
        return await self._p.fetchval("SELECT value FROM meta WHERE key = $1", key)

    async def meta_set(self, key: str, value: str) -> None:
        await self._p.execute(
            "INSERT INTO meta(key, value) VALUES ($1, $2) "
            "ON CONFLICT (key) DO UPDATE SET value = excluded.value",
            key,
            value,
        )

    # ---- FileHashStore --------------------------------------------------------------------------

    async def file_hashes(self, namespace: str) -> dict[str, str]:
        rows = await self._p.fetch("SELECT path, hash FROM files WHERE namespace = $1", namespace)
        return {row["path"]: row["hash"] for row in rows}

    async def set_file(self, namespace: str, path: str, content_hash: str) -> None:
        await self._p.execute(
            "INSERT INTO files(namespace, path, hash) VALUES ($1, $2, $3) "
            "ON CONFLICT (namespace, path) DO UPDATE SET hash = excluded.hash",
            namespace,
            path,
            content_hash,
        )

    async def drop_file(self, namespace: str, path: str) -> list[str]:
        async with self._p.acquire() as conn, conn.transaction():
            rows = await conn.fetch(
                "DELETE FROM items WHERE namespace = $1 AND path = $2 AND kind = 'code' "
                "RETURNING id",
                namespace,
                path,
            )
            await conn.execute(
                "DELETE FROM files WHERE namespace = $1 AND path = $2", namespace, path
            )
        return [row["id"] for row in rows]

    async def replace_files(self, batch: FileBatch) -> list[str]:
        ns = batch.namespace
        async with self._p.acquire() as conn, conn.transaction():
            dropped = await conn.fetch(
                "DELETE FROM items WHERE namespace = $1 AND path = ANY($2::text[]) "
                "AND kind = 'code' RETURNING id",
                ns,
                batch.drop,
            )
            await conn.execute(
                "DELETE FROM files WHERE namespace = $1 AND path = ANY($2::text[])", ns, batch.drop
            )
            if batch.records:
                await conn.execute(_INSERT, *_columns(batch.records))
            await conn.execute(
                "INSERT INTO files(namespace, path, hash) "
                "SELECT $1, p, h FROM unnest($2::text[], $3::text[]) AS f(p, h) "
                "ON CONFLICT (namespace, path) DO UPDATE SET hash = excluded.hash",
                ns,
                list(batch.hashes),
                list(batch.hashes.values()),
            )
        return [row["id"] for row in dropped]

    # ---- SessionStore ---------------------------------------------------------------------------

    async def session_put(self, namespace: str, session_id: str, body: str, at: float) -> int:
        return await self._p.fetchval(
            "INSERT INTO sessions(namespace, session_id, version, saved_at, body) "
            "VALUES ($1, $2, 1, $3, $4) ON CONFLICT (namespace, session_id) DO UPDATE SET "
            "version = sessions.version + 1, saved_at = excluded.saved_at, body = excluded.body "
            "RETURNING version",
            namespace,
            session_id,
            at,
            body,
        )

    async def session_get(self, namespace: str, session_id: str) -> tuple[str, int, float] | None:
        row = await self._p.fetchrow(
            "SELECT body, version, saved_at FROM sessions WHERE namespace = $1 AND session_id = $2",
            namespace,
            session_id,
        )
        return None if row is None else (row["body"], row["version"], row["saved_at"])

    async def session_latest(self, namespace: str | None) -> SavedSession | None:
        sql = "SELECT namespace, session_id, body, version, saved_at FROM sessions"
        args: list[Any] = []
        if namespace is not None:
            sql, args = sql + " WHERE namespace = $1", [namespace]
        sql += " ORDER BY saved_at DESC, namespace DESC, session_id DESC LIMIT 1"
        row = await self._p.fetchrow(sql, *args)
        if row is None:
            return None
        return SavedSession(
            row["namespace"], row["session_id"], row["body"], row["version"], row["saved_at"]
        )

    # ---- CacheStore -----------------------------------------------------------------------------

    async def cache_put(self, entry_id: str, call: CachedCall, expires_at: float) -> None:
        await self._p.execute(
            "INSERT INTO cache_entries(id, model, scope, prompt, response, expires_at) "
            "VALUES ($1, $2, $3, $4, $5, $6) ON CONFLICT (id) DO UPDATE SET "
            "response = excluded.response, expires_at = excluded.expires_at",
            entry_id,
            call.model,
            call.scope,
            call.prompt,
            call.response,
            expires_at,
        )

    async def cache_get(self, entry_id: str, now: float) -> CachedCall | None:
        row = await self._p.fetchrow(
            "SELECT model, scope, prompt, response FROM cache_entries "
            "WHERE id = $1 AND expires_at > $2",
            entry_id,
            now,
        )
        if row is None:
            return None
        return CachedCall(row["model"], row["scope"], row["prompt"], row["response"])
