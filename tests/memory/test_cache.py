"""The model-call cache through the real engine: scopes, exact-only lookups, near-misses
refused however similar, paraphrases served, and L3 tables of older versions upgraded."""

from __future__ import annotations

import sqlite3
import time
import uuid
from pathlib import Path

import asyncpg
import pytest

from bus.schemas import memory as s
from memory.cache import entry_id, space
from memory.engine import MemoryEngine
from memory.tiers import facts_postgres, facts_sqlite
from memory.tiers.base import CachedCall, VectorPoint
from memory.tiers.facts_postgres import PostgresFactTier
from memory.tiers.facts_sqlite import SqliteFactTier
from tests.fixtures.stores import Postgres

pytestmark = pytest.mark.anyio

COLUMN = "How do I rename a column in PostgreSQL?"
COLUMN_AGAIN = "How to rename a column in Postgres?"
TABLE = "How do I rename a table in PostgreSQL?"


async def put(engine: MemoryEngine, prompt: str, response: str, scope: str = "") -> None:
    await engine.cache_put(
        s.CachePutRequest(model="m", prompt=prompt, response=response, scope=scope)
    )


async def lookup(engine: MemoryEngine, prompt: str, **fields: object) -> s.CacheLookupResult:
    return await engine.cache_lookup(s.CacheLookupRequest(model="m", prompt=prompt, **fields))  # type: ignore[arg-type]


async def test_cache_lookup_sees_only_entries_of_its_own_scope(engine: MemoryEngine) -> None:
    await put(engine, COLUMN, "ALTER TABLE … RENAME COLUMN", scope="a1")
    same = await lookup(engine, COLUMN, scope="a1")
    other = await lookup(engine, COLUMN, scope="b2")
    other_by_meaning = await lookup(engine, COLUMN_AGAIN, scope="b2")
    unscoped = await lookup(engine, COLUMN)
    assert (same.hit, same.exact) == (True, True)
    assert not other.hit
    assert not other_by_meaning.hit
    assert not unscoped.hit


async def test_cache_lookup_with_semantic_off_takes_the_exact_prompt_only(
    engine: MemoryEngine,
) -> None:
    await put(engine, COLUMN, "RENAME COLUMN")
    reworded = await lookup(engine, COLUMN_AGAIN, semantic=False)
    exact = await lookup(engine, COLUMN, semantic=False)
    assert not reworded.hit
    assert (exact.hit, exact.exact, exact.response) == (True, True, "RENAME COLUMN")


async def test_cache_serves_a_paraphrase_by_meaning(engine: MemoryEngine) -> None:
    await put(engine, COLUMN, "RENAME COLUMN")
    result = await lookup(engine, COLUMN_AGAIN)
    assert (result.hit, result.exact, result.response) == (True, False, "RENAME COLUMN")
    assert result.similarity >= engine.settings.cache_threshold


async def test_cache_refuses_a_near_miss_however_low_the_threshold(engine: MemoryEngine) -> None:
    await put(engine, COLUMN, "RENAME COLUMN")
    result = await lookup(engine, TABLE, threshold=0.01)
    stats = await engine.stats()
    assert not result.hit
    assert stats.cache_misses == 1


async def test_cache_passes_over_a_nearer_near_miss_to_the_same_question(
    engine: MemoryEngine,
) -> None:
    await put(engine, TABLE, "RENAME TO")
    await put(engine, COLUMN, "RENAME COLUMN")
    result = await lookup(engine, "How do I rename a column in Postgres?")
    assert (result.hit, result.response) == (True, "RENAME COLUMN")


async def _plant(engine: MemoryEngine, ns_scope: str, call: CachedCall, like: str) -> None:
    """An L3 entry and an L2 point for it in ``ns_scope``'s namespace, near ``like``."""
    ident = str(uuid.uuid4())
    await engine.tiers.facts.cache_put(ident, call, time.time() + 60)
    vector = await engine.embedder.embed_one(like)
    payload = {"ns": space(call.model, ns_scope), "kind": "cache", "created_at": time.time()}
    await engine.cache.vectors.upsert([VectorPoint(ident, vector, payload)])


async def test_cache_entry_without_a_prompt_never_hits_by_meaning(engine: MemoryEngine) -> None:
    # what entries cached before prompts were kept look like once L3 is upgraded
    await _plant(engine, "", CachedCall("m", "", "", "old answer"), like=COLUMN)
    result = await lookup(engine, COLUMN_AGAIN, threshold=0.01)
    assert not result.hit


async def test_cache_trusts_the_entry_not_the_index_for_model_and_scope(
    engine: MemoryEngine,
) -> None:
    await _plant(engine, "a1", CachedCall("m", "b2", COLUMN, "b2's answer"), like=COLUMN)
    await _plant(engine, "a1", CachedCall("other", "a1", COLUMN, "other's answer"), like=COLUMN)
    result = await lookup(engine, COLUMN_AGAIN, scope="a1", threshold=0.01)
    assert not result.hit


def test_cache_entry_id_separates_model_scope_and_prompt() -> None:
    ids = {entry_id("m", "", "a\x00b"), entry_id("m\x00a", "", "b"), entry_id("m", "a", "b")}
    assert len(ids) == 3
    assert space("m", "") != space("m", "x") != space("#m", "x")


# ---- L3 tables of the version before scopes and prompts ------------------------------------

OLD = ("old-id", "m", "old answer", 4_000_000_000.0)  # expires in 2096


async def test_sqlite_upgrades_an_old_cache_table_and_keeps_its_entries(tmp_path: Path) -> None:
    path = tmp_path / "facts.sqlite3"
    db = sqlite3.connect(path)
    db.executescript(facts_sqlite._MIGRATIONS[0] + "; PRAGMA user_version = 1;")
    db.execute("INSERT INTO cache_entries(id, model, response, expires_at) VALUES (?,?,?,?)", OLD)
    db.commit()
    db.close()
    tier = SqliteFactTier(path)
    await tier.open()
    try:
        old = await tier.cache_get("old-id", time.time())
        await tier.cache_put("new-id", CachedCall("m", "s1", "p", "r"), time.time() + 60)
        new = await tier.cache_get("new-id", time.time())
    finally:
        await tier.close()
    version = sqlite3.connect(path).execute("PRAGMA user_version").fetchone()[0]
    assert old == CachedCall("m", "", "", "old answer")
    assert new == CachedCall("m", "s1", "p", "r")
    assert version == len(facts_sqlite._MIGRATIONS)


async def test_postgres_upgrades_an_old_cache_table_and_keeps_its_entries(
    postgres: Postgres,
) -> None:
    name = f"t{uuid.uuid4().hex[:12]}"
    admin = await asyncpg.connect(postgres.dsn)
    try:
        await admin.execute(f'CREATE DATABASE "{name}"')
    finally:
        await admin.close()
    dsn = postgres.dsn.rsplit("/", 1)[0] + "/" + name
    conn = await asyncpg.connect(dsn)
    try:
        await conn.execute(facts_postgres._MIGRATIONS[0])
        await conn.execute("CREATE TABLE schema_migrations(version INTEGER PRIMARY KEY)")
        await conn.execute("INSERT INTO schema_migrations(version) VALUES (1)")
        await conn.execute("INSERT INTO cache_entries VALUES ($1, $2, $3, $4)", *OLD)
    finally:
        await conn.close()
    tier = PostgresFactTier(dsn)
    await tier.open()
    try:
        old = await tier.cache_get("old-id", time.time())
        await tier.cache_put("new-id", CachedCall("m", "s1", "p", "r"), time.time() + 60)
        new = await tier.cache_get("new-id", time.time())
    finally:
        await tier.close()
    assert old == CachedCall("m", "", "", "old answer")
    assert new == CachedCall("m", "s1", "p", "r")


async def test_cache_put_for_exact_lookups_only_is_not_embedded(engine: MemoryEngine) -> None:
    await engine.cache_put(
        s.CachePutRequest(model="m", prompt=COLUMN, response="ALTER TABLE", semantic=False)
    )
    exact = await lookup(engine, COLUMN, semantic=False)
    by_meaning = await lookup(engine, COLUMN_AGAIN, threshold=0.01)
    assert exact.hit and exact.response == "ALTER TABLE"
    assert not by_meaning.hit  # no vector was stored for it
