"""The production backends for a benchmark: PostgreSQL 15 and redis-server on 127.0.0.1.

Started the way the tests start them (``tests/fixtures/stores.py``: the same binaries, trust
auth, fsync off, no Redis persistence) and stopped on exit. A missing binary raises with the
Debian package to install (``scripts/bootstrap bench`` installs both).
"""

from __future__ import annotations

import shutil
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import asyncpg

from tests.fixtures.stores import PG_BIN, require, run_postgres, run_redis


@contextmanager
def postgres() -> Iterator[str]:
    """A throwaway PostgreSQL 15 cluster; yields its DSN."""
    initdb = require(PG_BIN / "initdb", "postgresql-15")
    server = require(PG_BIN / "postgres", "postgresql-15")
    base = Path(tempfile.mkdtemp(prefix="sophia-bench-pg-"))
    try:
        with contextmanager(run_postgres)(initdb, server, base) as pg:
            yield pg.dsn
    finally:
        shutil.rmtree(base, ignore_errors=True)


@contextmanager
def redis() -> Iterator[str]:
    """A redis-server without persistence; yields its URL."""
    with tempfile.TemporaryDirectory(prefix="sophia-bench-redis-") as workdir:
        with contextmanager(run_redis)(Path(workdir)) as url:
            yield url


async def settle(dsn: str) -> float:
    """``VACUUM ANALYZE`` after a bulk load, as PostgreSQL's docs advise and autovacuum does
    within a minute or so; returns its seconds. Without statistics the planner guesses, and
    a keyword search right after 3k inserts took 85 ms instead of 8 (measured)."""
    started = time.perf_counter()
    conn = await asyncpg.connect(dsn)
    try:
        await conn.execute("VACUUM ANALYZE")
    finally:
        await conn.close()
    return round(time.perf_counter() - started, 1)
