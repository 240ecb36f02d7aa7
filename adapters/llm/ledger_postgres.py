"""The call ledger in PostgreSQL: table ``llm_calls`` in L3's database, through asyncpg.

Guarantee: a ``put`` that returned is committed. The table is created at open with
``CREATE TABLE IF NOT EXISTS`` under an advisory lock of its own, so replicas starting
together do not race each other, and the L3 tier's tables and migrations are left alone.
"""

from __future__ import annotations

import asyncpg

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
from memory.tiers.connections import PostgresPool

_LOCK_ID = 0x11C0575  # advisory lock: one creator of the ledger's table at a time
_SCHEMA = f"""
CREATE TABLE IF NOT EXISTS {TABLE}(
    id TEXT PRIMARY KEY,
    at DOUBLE PRECISION NOT NULL,
    model TEXT NOT NULL,
    provider TEXT NOT NULL,
    task TEXT NOT NULL,
    task_id TEXT NOT NULL DEFAULT '',
    project TEXT NOT NULL DEFAULT '',
    input_tokens BIGINT NOT NULL DEFAULT 0,
    output_tokens BIGINT NOT NULL DEFAULT 0,
    cost_usd DOUBLE PRECISION NOT NULL DEFAULT 0,
    latency_ms DOUBLE PRECISION NOT NULL DEFAULT 0,
    cached TEXT NOT NULL DEFAULT '',
    outcome TEXT NOT NULL DEFAULT 'ok',
    attempts INTEGER NOT NULL DEFAULT 1,
    degraded BOOLEAN NOT NULL DEFAULT FALSE
);
CREATE INDEX IF NOT EXISTS {TABLE}_at ON {TABLE}(at);
CREATE INDEX IF NOT EXISTS {TABLE}_task_id ON {TABLE}(task_id, at);
"""
_INSERT = (
    f"INSERT INTO {TABLE}({COLUMNS}) VALUES "
    "($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15) "
    "ON CONFLICT (id) DO NOTHING RETURNING id"
)
_DAY = "to_char(to_timestamp(at) AT TIME ZONE 'UTC', 'YYYY-MM-DD')"


class PostgresCallLedger(PostgresPool):
    """Call rows in PostgreSQL. Raises UnavailableError when the server does not answer at
    open."""

    name = "postgres"

    def __init__(self, dsn: str, *, timeout_s: float = 10.0) -> None:
        super().__init__(dsn, timeout_s=timeout_s, what="llm ledger", lock_id=_LOCK_ID)

    async def _setup(self, conn: asyncpg.Connection) -> None:
        await conn.execute(_SCHEMA)

    async def put(self, record: CallRecord) -> bool:
        return await self._p.fetchval(_INSERT, *as_row(record)) is not None

    async def totals(self, by: GroupBy, since: float) -> list[Total]:
        sql = totals_sql(group_expression(by, _DAY), "$1")
        return [as_total(row) for row in await self._p.fetch(sql, since)]
