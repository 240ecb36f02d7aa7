"""The connection handling L3 stores share: SQLite from one worker thread, a PostgreSQL pool.

Both are bases: a store subclasses one and sets up its schema in ``_setup``, which runs once
at :meth:`open` (for PostgreSQL inside a transaction that holds the store's advisory lock, so
two processes opening the same database at once do not both migrate it).
"""

from __future__ import annotations

import sqlite3
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import anyio
import anyio.to_thread

from bus.errors import UnavailableError

T = TypeVar("T")

BUSY_TIMEOUT_MS = 5000  # another process (the memory agent, the llm agent) may be writing


class SqliteConnection:
    """One SQLite database in WAL mode; every call runs in one worker thread, in order."""

    def __init__(self, path: Path, what: str) -> None:
        self.path = path
        self._what = what
        self._db: sqlite3.Connection | None = None
        self._lock = anyio.CapacityLimiter(1)

    async def _call(self, fn: Callable[..., T], *args: Any) -> T:
        return await anyio.to_thread.run_sync(fn, *args, limiter=self._lock)

    @property
    def _c(self) -> sqlite3.Connection:
        if self._db is None:
            raise RuntimeError(f"{self._what}: sqlite is not open")
        return self._db

    async def open(self) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        await self._call(self._open)

    def _open(self) -> None:
        db = sqlite3.connect(self.path, check_same_thread=False, isolation_level=None)
        db.execute(f"PRAGMA busy_timeout={BUSY_TIMEOUT_MS}")
        db.execute("PRAGMA journal_mode=WAL")
        db.execute("PRAGMA synchronous=NORMAL")
        self._setup(db)
        self._db = db

    def _setup(self, db: sqlite3.Connection) -> None:
        """Create or migrate the store's tables (runs in the worker thread)."""

    async def close(self) -> None:
        if self._db is not None:
            db, self._db = self._db, None
            await anyio.to_thread.run_sync(db.close, limiter=self._lock)


class PostgresPool:
    """A small asyncpg pool. Raises UnavailableError at open when the server does not answer."""

    def __init__(self, dsn: str, *, timeout_s: float, what: str, lock_id: int) -> None:
        self._dsn = dsn
        self._timeout_s = timeout_s
        self._what = what
        self._lock_id = lock_id
        self._pool: Any = None  # asyncpg.Pool, imported only when PostgreSQL is configured

    @property
    def _p(self) -> Any:
        if self._pool is None:
            raise RuntimeError(f"{self._what}: postgres is not open")
        return self._pool

    async def open(self) -> None:
        import asyncpg

        try:
            self._pool = await asyncpg.create_pool(
                self._dsn,
                min_size=1,
                max_size=4,
                timeout=self._timeout_s,
                command_timeout=self._timeout_s,
            )
        except (OSError, asyncpg.PostgresError, TimeoutError):
            raise UnavailableError(f"{self._what}: postgres does not answer") from None
        async with self._p.acquire() as conn, conn.transaction():
            await conn.execute("SELECT pg_advisory_xact_lock($1)", self._lock_id)
            await self._setup(conn)

    async def _setup(self, conn: Any) -> None:
        """Create or migrate the store's tables, holding the store's advisory lock."""

    async def close(self) -> None:
        if self._pool is not None:
            pool, self._pool = self._pool, None
            await pool.close()
