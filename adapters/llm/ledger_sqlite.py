"""The call ledger in SQLite: table ``llm_calls`` in the embedded L3 tier's file.

Guarantee: a ``put`` that returned is committed to the WAL (it survives a kill -9). The file
is shared with the memory agent's L3 tier, which may have it open too: this store opens its
own connection (WAL, so readers never block; a busy timeout, so two writers wait their turn
instead of failing) and never touches the tier's tables or its ``user_version``.
"""

from __future__ import annotations

import sqlite3
from pathlib import Path

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
from memory.tiers.connections import SqliteConnection

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


class SqliteCallLedger(SqliteConnection):
    """Call rows in ``path``; every call runs in one worker thread, in order."""

    name = "sqlite"

    def __init__(self, path: Path) -> None:
        super().__init__(path, "llm ledger")

    def _setup(self, db: sqlite3.Connection) -> None:
        db.executescript(f"BEGIN IMMEDIATE; {_SCHEMA} COMMIT;")

    async def put(self, record: CallRecord) -> bool:
        row = as_row(record)
        return await self._call(lambda: self._c.execute(_INSERT, row).rowcount == 1)

    async def totals(self, by: GroupBy, since: float) -> list[Total]:
        sql = totals_sql(group_expression(by, _DAY), "?")
        rows = await self._call(lambda: self._c.execute(sql, (since,)).fetchall())
        return [as_total(row) for row in rows]
