"""The call ledger in SQLite: table ``llm_calls`` in the embedded L3 tier's file.

Guarantee: a ``put`` that returned is committed to the WAL (it survives a kill -9). The file
is shared with the memory agent's L3 tier, which may have it open too: this store opens its
own connection (WAL, so readers never block; a busy timeout, so two writers wait their turn
instead of failing) and never touches the tier's tables or its ``user_version``.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import anyio
import anyio.to_thread

from adapters.llm.ledger import (
    COLUMNS,
    TABLE,
    CallRecord,
    GroupBy,
    Total,
    as_row,
    as_total,
    group_expression,
    totals_sql,
)

T = TypeVar("T")

BUSY_TIMEOUT_MS = 5000
_SCHEMA = f"""
CREATE TABLE IF NOT EXISTS {TABLE}(
    id TEXT PRIMARY KEY,
    at REAL NOT NULL,
    model TEXT NOT NULL,
    provider TEXT NOT NULL,
    task TEXT NOT NULL,
    task_id TEXT NOT NULL DEFAULT '',
    project TEXT NOT NULL DEFAULT '',
    input_tokens INTEGER NOT NULL DEFAULT 0,
    output_tokens INTEGER NOT NULL DEFAULT 0,
    cost_usd REAL NOT NULL DEFAULT 0,
    latency_ms REAL NOT NULL DEFAULT 0,
    cached TEXT NOT NULL DEFAULT '',
    outcome TEXT NOT NULL DEFAULT 'ok',
    attempts INTEGER NOT NULL DEFAULT 1,
    degraded INTEGER NOT NULL DEFAULT 0
);
CREATE INDEX IF NOT EXISTS {TABLE}_at ON {TABLE}(at);
CREATE INDEX IF NOT EXISTS {TABLE}_task_id ON {TABLE}(task_id, at);
"""
_INSERT = f"INSERT INTO {TABLE}({COLUMNS}) VALUES ({','.join('?' * 15)}) ON CONFLICT(id) DO NOTHING"
_DAY = "strftime('%Y-%m-%d', at, 'unixepoch')"  # SQLite's unixepoch dates are UTC


class SqliteCallLedger:
    """Call rows in ``path``; every call runs in one worker thread, in order."""

    name = "sqlite"

    def __init__(self, path: Path) -> None:
        self.path = path
        self._db: sqlite3.Connection | None = None
        self._lock = anyio.CapacityLimiter(1)

    async def _call(self, fn: Callable[..., T], *args: Any) -> T:
        return await anyio.to_thread.run_sync(fn, *args, limiter=self._lock)

    @property
    def _c(self) -> sqlite3.Connection:
        if self._db is None:
            raise RuntimeError("llm ledger: sqlite is not open")
        return self._db

    async def open(self) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        await self._call(self._open)

    def _open(self) -> None:
        db = sqlite3.connect(self.path, check_same_thread=False, isolation_level=None)
        db.execute(f"PRAGMA busy_timeout={BUSY_TIMEOUT_MS}")
        db.execute("PRAGMA journal_mode=WAL")
        db.execute("PRAGMA synchronous=NORMAL")
        db.executescript(f"BEGIN IMMEDIATE; {_SCHEMA} COMMIT;")
        self._db = db

    async def close(self) -> None:
        if self._db is not None:
            db, self._db = self._db, None
            await anyio.to_thread.run_sync(db.close, limiter=self._lock)

    async def put(self, record: CallRecord) -> bool:
        row = as_row(record)
        return await self._call(lambda: self._c.execute(_INSERT, row).rowcount == 1)

    async def totals(self, by: GroupBy, since: float) -> list[Total]:
        sql = totals_sql(group_expression(by, _DAY), "?")
        rows = await self._call(lambda: self._c.execute(sql, (since,)).fetchall())
        return [as_total(row) for row in rows]
