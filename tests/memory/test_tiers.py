"""L3 is split by job: both backends do every job, each consumer asks for the one it uses, and
a backend of one job alone is enough for that consumer."""

from __future__ import annotations

from pathlib import Path
from typing import Any, get_type_hints

import anyio
import pytest

from bus.schemas import memory as s
from memory.budget import ReplyBudget
from memory.cache import SemanticCache
from memory.indexer import Indexer
from memory.router import Router
from memory.sessions import Sessions
from memory.tiers.archive_local import LocalArchiveTier
from memory.tiers.base import (
    CacheStore,
    FileHashStore,
    MetaStore,
    RecordStore,
    SavedSession,
    SessionStore,
)
from memory.tiers.facts_postgres import PostgresFactTier
from memory.tiers.facts_sqlite import SqliteFactTier
from memory.tiers.hot_lru import LruHotTier

pytestmark = pytest.mark.anyio

JOBS = [RecordStore, MetaStore, SessionStore, CacheStore, FileHashStore]


@pytest.mark.parametrize("job", JOBS, ids=[j.__name__ for j in JOBS])
@pytest.mark.parametrize("backend", ["sqlite", "postgres"])
def test_fact_backend_does_every_job(backend: str, job: type, tmp_path: Path) -> None:
    tier = (
        SqliteFactTier(tmp_path / "facts.sqlite3")
        if backend == "sqlite"
        else PostgresFactTier("postgresql://nowhere/none")  # not opened: nothing connects
    )
    assert isinstance(tier, job)


@pytest.mark.parametrize(
    ("consumer", "job"),
    [
        (Router.__init__, RecordStore),
        (Indexer.__init__, FileHashStore),
        (SemanticCache.__init__, CacheStore),
    ],
    ids=["router", "indexer", "cache"],
)
def test_each_consumer_asks_only_for_the_job_it_uses(consumer: Any, job: type) -> None:
    assert get_type_hints(consumer)["facts"] is job


def test_sessions_ask_only_for_a_session_store() -> None:
    assert get_type_hints(Sessions.__init__)["store"] is SessionStore


class DictSessions:
    """A whole SessionStore backend in a few lines: where a new backend starts."""

    def __init__(self) -> None:
        self.rows: dict[tuple[str, str], tuple[str, int, float]] = {}

    async def session_put(self, namespace: str, session_id: str, body: str, at: float) -> int:
        version = self.rows.get((namespace, session_id), ("", 0, 0.0))[1] + 1
        self.rows[(namespace, session_id)] = (body, version, at)
        return version

    async def session_get(self, namespace: str, session_id: str) -> tuple[str, int, float] | None:
        return self.rows.get((namespace, session_id))

    async def session_latest(self, namespace: str | None) -> SavedSession | None:
        saved = [
            (at, ns, sid, body, version)
            for (ns, sid), (body, version, at) in self.rows.items()
            if namespace in (None, ns)
        ]
        if not saved:
            return None
        at, ns, sid, body, version = max(saved)
        return SavedSession(ns, sid, body, version, at)


async def test_sessions_work_over_a_backend_of_that_one_job(tmp_path: Path) -> None:
    store = DictSessions()
    archive = LocalArchiveTier(tmp_path / "l4")
    await archive.open()

    def fresh() -> Sessions:  # over the same store and archive, with an L1 of its own
        hot = LruHotTier()
        return Sessions(
            store=store, hot=hot, archive=archive, budget=ReplyBudget(), ttl_s=60.0,
            max_text_bytes=1000,
        )  # fmt: skip

    sessions = fresh()
    await sessions.save(s.SessionSaveRequest(session_id="c", summary="one", context={"n": 1}))
    saved = await sessions.save(s.SessionSaveRequest(session_id="c", summary="two"))
    loaded = await fresh().load(s.SessionLoadRequest(session_id="c"))
    assert isinstance(store, SessionStore)
    assert saved.version == 2
    assert (loaded.summary, loaded.context, loaded.version) == ("two", {}, 2)
    assert await archive.count() == 1  # version 1, replaced


async def test_lru_writes_drop_expired_entries_instead_of_keeping_them_to_the_cap() -> None:
    hot = LruHotTier(max_items=1000)
    for n in range(20):
        await hot.set(f"old-{n}", b"x", ttl_s=0.001)
    await anyio.sleep(0.05)  # every old entry is past its TTL now
    for n in range(3):
        await hot.set(f"new-{n}", b"y", ttl_s=60.0)
    assert await hot.count() == 3  # 3 writes x 8 dropped each: none of the 20 left
    assert [await hot.get(f"new-{n}") for n in range(3)] == [b"y"] * 3


async def test_lru_drops_expired_entries_behind_a_long_lived_one() -> None:
    # a cached model answer keeps a day; the searches written after it must still leave on time
    # (the soak found L1 growing ~250 entries a minute past its TTL behind one such entry)
    hot = LruHotTier(max_items=1000)
    await hot.set("cached-answer", b"day", ttl_s=86_400.0)
    for n in range(20):
        await hot.set(f"search-{n}", b"x", ttl_s=0.001)
    await anyio.sleep(0.05)
    for n in range(3):
        await hot.set(f"new-{n}", b"y", ttl_s=60.0)
    assert await hot.count() == 4  # the day-long entry and the 3 new ones
    assert await hot.get("cached-answer") == b"day"


async def test_lru_expiry_records_stay_bounded_when_entries_are_rewritten() -> None:
    hot = LruHotTier(max_items=10)
    for n in range(1000):
        await hot.set(f"key-{n % 3}", b"v", ttl_s=3600.0)  # each rewrite leaves a stale record
        await hot.set(f"evicted-{n}", b"v", ttl_s=3600.0)  # the cap evicts these
    assert await hot.count() == 10
    assert len(hot._expiries) <= 2 * hot.max_items
    assert [await hot.get(f"key-{n}") for n in range(3)] == [b"v"] * 3  # rewritten: kept


async def test_lru_keeps_live_entries_when_it_sweeps() -> None:
    hot = LruHotTier(max_items=1000)
    await hot.set("live", b"a", ttl_s=60.0)
    await hot.set("next", b"b", ttl_s=60.0)
    assert (await hot.get("live"), await hot.count()) == (b"a", 2)
