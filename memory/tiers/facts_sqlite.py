"""L3 embedded: SQLite (WAL) with an FTS5 keyword index, in one worker thread.

Guarantee: a call that returned is committed to the WAL, so it survives a kill -9 of
the process (``synchronous=NORMAL`` trades only power-loss durability for speed).
"""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from memory.tiers.base import (
    RANK_BUDGET,
    CachedCall,
    FileBatch,
    Query,
    Record,
    SavedSession,
    affordable_terms,
)
from memory.tiers.connections import SqliteConnection

_MIGRATIONS: list[str] = [
    """
    CREATE TABLE items(
        rowid INTEGER PRIMARY KEY,
        id TEXT UNIQUE NOT NULL,
        namespace TEXT NOT NULL,
        kind TEXT NOT NULL,
        text TEXT NOT NULL,
        metadata TEXT NOT NULL,
        path TEXT,
        language TEXT,
        tags TEXT NOT NULL DEFAULT '[]',
        created_at REAL NOT NULL,
        content_hash TEXT NOT NULL,
        model TEXT NOT NULL DEFAULT '',
        archived INTEGER NOT NULL DEFAULT 0,
        head TEXT NOT NULL DEFAULT '',
        body TEXT NOT NULL DEFAULT ''
    );
    CREATE INDEX items_ns_kind ON items(namespace, kind);
    CREATE INDEX items_ns_path ON items(namespace, path);
    CREATE VIRTUAL TABLE items_fts USING fts5(
        head, body, content='items', content_rowid='rowid', tokenize='porter unicode61'
    );
    CREATE TRIGGER items_ai AFTER INSERT ON items BEGIN
        INSERT INTO items_fts(rowid, head, body) VALUES (new.rowid, new.head, new.body);
    END;
    CREATE TRIGGER items_ad AFTER DELETE ON items BEGIN
        INSERT INTO items_fts(items_fts, rowid, head, body)
        VALUES ('delete', old.rowid, old.head, old.body);
    END;
    CREATE TABLE files(
        namespace TEXT NOT NULL, path TEXT NOT NULL, hash TEXT NOT NULL,
        PRIMARY KEY(namespace, path)
    );
    CREATE TABLE sessions(
        namespace TEXT NOT NULL, session_id TEXT NOT NULL, version INTEGER NOT NULL,
        saved_at REAL NOT NULL, body TEXT NOT NULL, PRIMARY KEY(namespace, session_id)
    );
    CREATE TABLE cache_entries(
        id TEXT PRIMARY KEY, model TEXT NOT NULL, response TEXT NOT NULL, expires_at REAL NOT NULL
    );
    CREATE TABLE meta(key TEXT PRIMARY KEY, value TEXT NOT NULL);
    """,
    # 2: a cache entry keeps its scope and (redacted) prompt, so a lookup by meaning can
    # check that the cached prompt asks the same question; older entries get "" for both
    """
    ALTER TABLE cache_entries ADD COLUMN scope TEXT NOT NULL DEFAULT '';
    ALTER TABLE cache_entries ADD COLUMN prompt TEXT NOT NULL DEFAULT '';
    """,
    # 3: memory.list pages by (created_at, id), within a namespace or across all of them;
    # context finds the session of a namespace saved last
    """
    CREATE INDEX items_created ON items(created_at, id);
    CREATE INDEX items_ns_created ON items(namespace, created_at, id);
    CREATE INDEX sessions_ns_saved ON sessions(namespace, saved_at);
    """,
]

_COLUMNS = (
    "id, namespace, kind, text, metadata, path, language, tags, created_at, "
    "content_hash, model, archived, head, body"
)
_SELECT = "SELECT id, namespace, kind, text, metadata, created_at, content_hash, model, archived"
MMAP_BYTES = 1 << 30  # address space for reads; pages stay the OS page cache's


def _row(record: Record) -> tuple[Any, ...]:
    return (
        record.id,
        record.namespace,
        record.kind,
        record.text,
        json.dumps(record.metadata),
        record.path,
        record.language,
        json.dumps(record.tags),
        record.created_at,
        record.content_hash,
        record.model,
        int(record.archived),
        record.head,
        record.body,
    )


def _record(row: tuple[Any, ...]) -> Record:
    return Record(
        id=row[0],
        namespace=row[1],
        kind=row[2],
        text=row[3],
        metadata=json.loads(row[4]),
        created_at=row[5],
        content_hash=row[6],
        model=row[7],
        archived=bool(row[8]),
    )


@contextmanager
def _transaction(db: sqlite3.Connection) -> Iterator[sqlite3.Connection]:
    db.execute("BEGIN IMMEDIATE")
    try:
        yield db
    except BaseException:
        db.execute("ROLLBACK")
        raise
    db.execute("COMMIT")


def where(query: Query) -> tuple[str, list[Any]]:
    """SQL conditions on ``items`` for ``query``, with their parameters."""
    sql: list[str] = []
    args: list[Any] = []
    if query.namespace is not None:
        sql.append("items.namespace = ?")
        args.append(query.namespace)
    if query.kinds:
        sql.append(f"items.kind IN ({','.join('?' * len(query.kinds))})")
        args.extend(query.kinds)
    if query.path and query.path.endswith("/"):
        escaped = query.path.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
        sql.append("items.path LIKE ? ESCAPE '\\'")
        args.append(escaped + "%")
    elif query.path:
        sql.append("items.path = ?")
        args.append(query.path)
    if query.language:
        sql.append("items.language = ?")
        args.append(query.language)
    if query.tags:
        marks = ",".join("?" * len(query.tags))
        sql.append(f"EXISTS (SELECT 1 FROM json_each(items.tags) WHERE value IN ({marks}))")
        args.extend(query.tags)
    if query.since is not None:
        sql.append("items.created_at >= ?")
        args.append(query.since)
    if query.until is not None:
        sql.append("items.created_at < ?")
        args.append(query.until)
    return " AND ".join(sql) or "1", args


class SqliteFactTier(SqliteConnection):
    """Facts in ``<root>/facts.sqlite3``; every call runs in one worker thread, in order."""

    name = "sqlite"

    def __init__(self, path: Path, *, rank_budget: int = RANK_BUDGET) -> None:
        super().__init__(path, "l3")
        self.rank_budget = rank_budget

    def _open(self) -> None:
        super()._open()
        # A keyword search reads a few thousand scattered pages (FTS doclists, then each
        # match's row for the join with items); mapped, no page costs a read() call: the same
        # hits in ~25% less time at 100k chunks (bench/memory.py's store and queries).
        self._c.execute(f"PRAGMA mmap_size={MMAP_BYTES}")

    def _setup(self, db: sqlite3.Connection) -> None:
        version = db.execute("PRAGMA user_version").fetchone()[0]
        for number, script in enumerate(_MIGRATIONS[version:], start=version + 1):
            db.executescript(f"BEGIN; {script}; PRAGMA user_version={number}; COMMIT;")

    # ---- RecordStore: records and their keyword index -------------------------------------------

    async def insert_many(self, records: list[Record]) -> list[bool]:
        return await self._call(self._insert_many, records)

    def _insert_many(self, records: list[Record]) -> list[bool]:
        created: list[bool] = []
        marks = ",".join("?" * 14)
        with _transaction(self._c):
            for record in records:
                cur = self._c.execute(
                    f"INSERT OR IGNORE INTO items({_COLUMNS}) VALUES ({marks})", _row(record)
                )
                created.append(cur.rowcount == 1)
        return created

    async def get_many(self, ids: list[str]) -> dict[str, Record]:
        if not ids:
            return {}
        sql = f"{_SELECT} FROM items WHERE id IN ({','.join('?' * len(ids))})"
        rows = await self._call(lambda: self._c.execute(sql, ids).fetchall())
        return {row[0]: _record(row) for row in rows}

    async def delete(self, ids: list[str]) -> int:
        if not ids:
            return 0
        sql = f"DELETE FROM items WHERE id IN ({','.join('?' * len(ids))})"
        return await self._call(lambda: self._c.execute(sql, ids).rowcount)

    async def keyword_search(
        self, terms: list[str], query: Query, k: int
    ) -> list[tuple[str, float]]:
        """BM25 over the terms, with bounded work: see :meth:`_affordable`."""
        if not terms:
            return []
        return await self._call(self._keyword_search, terms, query, k)

    def _keyword_search(self, terms: list[str], query: Query, k: int) -> list[tuple[str, float]]:
        chosen, present = self._affordable(terms)
        if not present:
            return []
        quoted = [f'"{t}"' for t in (chosen or present)]
        match = (" OR " if chosen else " AND ").join(quoted)
        cond, args = where(query)
        if not chosen:  # every term is common: rank the newest documents that have them all
            newest = self._c.execute("SELECT coalesce(max(rowid), 0) FROM items").fetchone()[0]
            cond += " AND items_fts.rowid > ?"
            args.append(newest - 4 * self.rank_budget)
        sql = (
            "SELECT items.id, bm25(items_fts, 4.0, 1.0) AS rank FROM items_fts "
            "JOIN items ON items.rowid = items_fts.rowid "
            f"WHERE items_fts MATCH ? AND {cond} ORDER BY rank LIMIT ?"
        )
        rows = self._c.execute(sql, [match, *args, k]).fetchall()
        return [(row[0], -float(row[1])) for row in rows]

    def _affordable(self, terms: list[str]) -> tuple[list[str], list[str]]:
        """:func:`affordable_terms` (BM25's cost grows with every matching document)."""
        sql = "SELECT count(*) FROM (SELECT 1 FROM items_fts WHERE items_fts MATCH ? LIMIT ?)"
        limit = self.rank_budget + 1
        counts = [(self._c.execute(sql, (f'"{t}"', limit)).fetchone()[0], t) for t in terms]
        return affordable_terms(counts, self.rank_budget)

    async def scan(self, after: str, limit: int) -> list[Record]:
        sql = f"{_SELECT} FROM items WHERE id > ? ORDER BY id LIMIT ?"
        rows = await self._call(lambda: self._c.execute(sql, (after, limit)).fetchall())
        return [_record(row) for row in rows]

    async def relabel(self, model: str) -> None:
        """Mark every embedded record as embedded by ``model`` (after a re-embed)."""
        sql = "UPDATE items SET model = ? WHERE model != '' AND model != ?"
        await self._call(lambda: self._c.execute(sql, (model, model)))

    async def counts(self, namespace: str) -> dict[tuple[str, str], int]:
        sql = "SELECT namespace, kind, count(*) FROM items"
        args: tuple[Any, ...] = ()
        if namespace:
            sql, args = sql + " WHERE namespace = ?", (namespace,)
        rows = await self._call(lambda: self._c.execute(sql + " GROUP BY 1, 2", args).fetchall())
        return {(row[0], row[1]): row[2] for row in rows}

    async def list_items(
        self, query: Query, after: tuple[float, str] | None, limit: int
    ) -> list[Record]:
        """Most recent first, a walk down ``items_created`` or ``items_ns_created`` from
        ``after`` (a row value: one range on the index, not an OR)."""
        cond, args = where(query)
        if after is not None:
            cond += " AND (items.created_at, items.id) < (?, ?)"
            args.extend(after)
        sql = f"{_SELECT} FROM items WHERE {cond} ORDER BY created_at DESC, id DESC LIMIT ?"
        rows = await self._call(lambda: self._c.execute(sql, [*args, limit]).fetchall())
        return [_record(row) for row in rows]

    # ---- MetaStore ------------------------------------------------------------------------------

    async def meta_get(self, key: str) -> str | None:
        row = await self._call(
            lambda: self._c.execute("SELECT value FROM meta WHERE key = ?", (key,)).fetchone()
        )
        return None if row is None else row[0]

    async def meta_set(self, key: str, value: str) -> None:
        sql = "INSERT INTO meta(key, value) VALUES (?, ?) ON CONFLICT(key) DO UPDATE SET value = ?"
        await self._call(lambda: self._c.execute(sql, (key, value, value)))

    # ---- FileHashStore --------------------------------------------------------------------------

    async def file_hashes(self, namespace: str) -> dict[str, str]:
        sql = "SELECT path, hash FROM files WHERE namespace = ?"
        return dict(await self._call(lambda: self._c.execute(sql, (namespace,)).fetchall()))

    async def set_file(self, namespace: str, path: str, content_hash: str) -> None:
        sql = (
            "INSERT INTO files(namespace, path, hash) VALUES (?, ?, ?) "
            "ON CONFLICT(namespace, path) DO UPDATE SET hash = excluded.hash"
        )
        await self._call(lambda: self._c.execute(sql, (namespace, path, content_hash)))

    async def drop_file(self, namespace: str, path: str) -> list[str]:
        return await self._call(self._drop_file, namespace, path)

    def _drop_file(self, namespace: str, path: str) -> list[str]:
        with _transaction(self._c):
            args = (namespace, path)
            ids = [
                r[0]
                for r in self._c.execute(
                    "SELECT id FROM items WHERE namespace = ? AND path = ? AND kind = 'code'", args
                )
            ]
            self._c.execute(
                "DELETE FROM items WHERE namespace = ? AND path = ? AND kind = 'code'", args
            )
            self._c.execute("DELETE FROM files WHERE namespace = ? AND path = ?", args)
        return ids

    async def replace_files(self, batch: FileBatch) -> list[str]:
        return await self._call(self._replace_files, batch)

    def _replace_files(self, batch: FileBatch) -> list[str]:
        ns = batch.namespace
        dropped: list[str] = []
        with _transaction(self._c):
            for path in batch.drop:
                dropped += [
                    r[0]
                    for r in self._c.execute(
                        "DELETE FROM items WHERE namespace = ? AND path = ? AND kind = 'code' "
                        "RETURNING id",
                        (ns, path),
                    )
                ]
            self._c.executemany(
                "DELETE FROM files WHERE namespace = ? AND path = ?", [(ns, p) for p in batch.drop]
            )
            marks = ",".join("?" * 14)
            self._c.executemany(
                f"INSERT OR IGNORE INTO items({_COLUMNS}) VALUES ({marks})",
                [_row(r) for r in batch.records],
            )
            self._c.executemany(
                "INSERT INTO files(namespace, path, hash) VALUES (?, ?, ?) "
                "ON CONFLICT(namespace, path) DO UPDATE SET hash = excluded.hash",
                [(ns, path, digest) for path, digest in batch.hashes.items()],
            )
        return dropped

    # ---- SessionStore ---------------------------------------------------------------------------

    async def session_put(self, namespace: str, session_id: str, body: str, at: float) -> int:
        sql = (
            "INSERT INTO sessions(namespace, session_id, version, saved_at, body) "
            "VALUES (?, ?, 1, ?, ?) ON CONFLICT(namespace, session_id) DO UPDATE SET "
            "version = version + 1, saved_at = excluded.saved_at, body = excluded.body "
            "RETURNING version"
        )
        row = await self._call(
            lambda: self._c.execute(sql, (namespace, session_id, at, body)).fetchone()
        )
        return int(row[0])

    async def session_get(self, namespace: str, session_id: str) -> tuple[str, int, float] | None:
        sql = "SELECT body, version, saved_at FROM sessions WHERE namespace = ? AND session_id = ?"
        row = await self._call(lambda: self._c.execute(sql, (namespace, session_id)).fetchone())
        return None if row is None else (row[0], int(row[1]), float(row[2]))

    async def session_latest(self, namespace: str | None) -> SavedSession | None:
        sql = "SELECT namespace, session_id, body, version, saved_at FROM sessions"
        args: tuple[Any, ...] = ()
        if namespace is not None:
            sql, args = sql + " WHERE namespace = ?", (namespace,)
        sql += " ORDER BY saved_at DESC, namespace DESC, session_id DESC LIMIT 1"
        row = await self._call(lambda: self._c.execute(sql, args).fetchone())
        if row is None:
            return None
        return SavedSession(row[0], row[1], row[2], int(row[3]), float(row[4]))

    # ---- CacheStore -----------------------------------------------------------------------------

    async def cache_put(self, entry_id: str, call: CachedCall, expires_at: float) -> None:
        sql = (
            "INSERT INTO cache_entries(id, model, scope, prompt, response, expires_at) "
            "VALUES (?, ?, ?, ?, ?, ?) ON CONFLICT(id) DO UPDATE SET "
            "response = excluded.response, expires_at = excluded.expires_at"
        )
        args = (entry_id, call.model, call.scope, call.prompt, call.response, expires_at)
        await self._call(lambda: self._c.execute(sql, args))

    async def cache_get(self, entry_id: str, now: float) -> CachedCall | None:
        sql = (
            "SELECT model, scope, prompt, response FROM cache_entries "
            "WHERE id = ? AND expires_at > ?"
        )
        row = await self._call(lambda: self._c.execute(sql, (entry_id, now)).fetchone())
        return None if row is None else CachedCall(*row)
