"""memory.list: items most recent first, a keyset page at a time, on both L3 backends."""

from __future__ import annotations

import base64
import sqlite3
from collections.abc import AsyncIterator, Callable
from pathlib import Path

import asyncpg
import msgspec
import pytest

from agents.memory import MemoryAgent
from bus import Bus, Settings
from bus.errors import BadRequestError
from bus.schemas import memory as s
from memory import listing
from memory.config import MemorySettings
from memory.embedder import Embedder
from memory.engine import MemoryEngine
from memory.tiers import facts_postgres, facts_sqlite
from memory.tiers.base import Query, Record
from memory.tiers.facts_postgres import PostgresFactTier
from memory.tiers.facts_sqlite import SqliteFactTier
from tests.fixtures.nats_server import running
from tests.memory.conftest import _fresh_database

pytestmark = pytest.mark.anyio

Facts = SqliteFactTier | PostgresFactTier
INDEXES = {"items_created", "items_ns_created", "sessions_ns_saved"}


def record(i: int, created_at: float, namespace: str = "ns", kind: str = "doc") -> Record:
    return Record(
        id=f"r{i:02d}",
        namespace=namespace,
        kind=kind,
        text=f"item {i}",
        metadata={},
        created_at=created_at,
        content_hash=f"h{i}",
    )


#: three ties at 1.0, three at 2.0, one at 3.0, across two namespaces and two kinds
RECORDS = [
    record(0, 1.0),
    record(1, 2.0, kind="decision"),
    record(2, 1.0, namespace="other"),
    record(3, 3.0),
    record(4, 2.0, namespace="other", kind="decision"),
    record(5, 1.0, kind="decision"),
    record(6, 2.0),
]


def newest_first(records: list[Record]) -> list[str]:
    return [r.id for r in sorted(records, key=lambda r: (r.created_at, r.id), reverse=True)]


@pytest.fixture(params=["sqlite", "postgres"])
async def facts(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Facts]:
    tier: Facts
    if request.param == "sqlite":
        tier = SqliteFactTier(tmp_path / "facts.sqlite3")
    else:
        tier = PostgresFactTier(await _fresh_database(request.getfixturevalue("postgres")))
    await tier.open()
    await tier.insert_many(RECORDS)
    yield tier
    await tier.close()


async def every_page(facts: Facts, query: Query, limit: int) -> list[list[str]]:
    pages: list[list[str]] = []
    after: tuple[float, str] | None = None
    while True:
        page = await facts.list_items(query, after, limit)
        if not page:
            return pages
        pages.append([r.id for r in page])
        after = (page[-1].created_at, page[-1].id)


async def test_list_items_orders_most_recent_first_then_by_id(facts: Facts) -> None:
    listed = await facts.list_items(Query(namespace=None), None, 100)
    assert [r.id for r in listed] == ["r03", "r06", "r04", "r01", "r05", "r02", "r00"]
    assert [r.id for r in listed] == newest_first(RECORDS)
    assert listed[0].text == "item 3" and listed[0].namespace == "ns"


@pytest.mark.parametrize("limit", [1, 2, 3, 7], ids=["1", "2", "3", "7"])
async def test_list_items_pages_over_ties_in_created_at_once_each(facts: Facts, limit: int) -> None:
    pages = await every_page(facts, Query(namespace=None), limit)
    assert [i for page in pages for i in page] == newest_first(RECORDS)
    assert all(len(page) == limit for page in pages[:-1])


@pytest.mark.parametrize(
    ("query", "expected"),
    [
        (Query(namespace="ns"), ["r03", "r06", "r01", "r05", "r00"]),
        (Query(namespace="other"), ["r04", "r02"]),
        (Query(namespace=None, kinds=["decision"]), ["r04", "r01", "r05"]),
        (Query(namespace="ns", kinds=["decision", "code"]), ["r01", "r05"]),
        (Query(namespace="nowhere"), []),
    ],
    ids=["namespace", "other-namespace", "kind", "namespace-and-kinds", "empty"],
)
async def test_list_items_keeps_to_the_namespace_and_kinds(
    facts: Facts, query: Query, expected: list[str]
) -> None:
    pages = await every_page(facts, query, 2)
    assert [i for page in pages for i in page] == expected


async def test_list_items_after_the_last_item_is_empty(facts: Facts) -> None:
    last = (1.0, "r00")
    assert await facts.list_items(Query(namespace=None), last, 10) == []
    assert [r.id for r in await facts.list_items(Query(namespace=None), (1.0, "r01"), 10)] == [
        "r00"
    ]


async def test_session_latest_is_the_last_saved_in_its_namespace(facts: Facts) -> None:
    empty = await facts.session_latest(None)
    await facts.session_put("ns", "a", "A1", 10.0)
    await facts.session_put("ns", "b", "B1", 20.0)
    await facts.session_put("other", "c", "C1", 30.0)
    await facts.session_put("ns", "a", "A2", 40.0)  # saved again: latest, version 2
    await facts.session_put("tie", "x", "X", 50.0)
    await facts.session_put("tie", "y", "Y", 50.0)
    ns = await facts.session_latest("ns")
    every = await facts.session_latest(None)
    other = await facts.session_latest("other")
    tie = await facts.session_latest("tie")
    assert empty is None and await facts.session_latest("nowhere") is None
    assert ns is not None and (ns.namespace, ns.session_id, ns.body, ns.version) == (
        "ns",
        "a",
        "A2",
        2,
    )
    assert ns.saved_at == 40.0
    assert other is not None and other.session_id == "c"
    assert every is not None and every.session_id == "y"  # of a tie, the greater id
    assert tie is not None and tie.session_id == "y"


# ---- an existing database gets the indexes --------------------------------------------------


async def test_sqlite_database_of_an_older_version_gets_the_indexes(tmp_path: Path) -> None:
    path = tmp_path / "facts.sqlite3"
    db = sqlite3.connect(path)
    db.executescript("".join(facts_sqlite._MIGRATIONS[:2]) + "; PRAGMA user_version = 2;")
    db.close()
    tier = SqliteFactTier(path)
    await tier.open()
    try:
        await tier.insert_many(RECORDS)
        listed = await tier.list_items(Query(namespace="other"), None, 10)
    finally:
        await tier.close()
    db = sqlite3.connect(path)
    names = {row[0] for row in db.execute("SELECT name FROM sqlite_master WHERE type='index'")}
    plan = " ".join(
        row[3]
        for row in db.execute(
            "EXPLAIN QUERY PLAN SELECT id FROM items WHERE namespace = ? "
            "AND (created_at, id) < (?, ?) ORDER BY created_at DESC, id DESC LIMIT 3",
            ("ns", 2.0, "r06"),
        )
    )
    version = db.execute("PRAGMA user_version").fetchone()[0]
    db.close()
    assert INDEXES <= names
    assert "items_ns_created" in plan and "TEMP B-TREE" not in plan  # a walk, no sort
    assert version == len(facts_sqlite._MIGRATIONS)
    assert [r.id for r in listed] == ["r04", "r02"]


async def test_postgres_database_of_an_older_version_gets_the_indexes(
    request: pytest.FixtureRequest,
) -> None:
    dsn = await _fresh_database(request.getfixturevalue("postgres"))
    conn = await asyncpg.connect(dsn)
    try:
        for script in facts_postgres._MIGRATIONS[:2]:
            await conn.execute(script)
        await conn.execute("CREATE TABLE schema_migrations(version INTEGER PRIMARY KEY)")
        await conn.execute("INSERT INTO schema_migrations(version) VALUES (1), (2)")
    finally:
        await conn.close()
    tier = PostgresFactTier(dsn)
    await tier.open()
    try:
        await tier.insert_many(RECORDS)
        listed = await tier.list_items(Query(namespace="other"), None, 10)
    finally:
        await tier.close()
    conn = await asyncpg.connect(dsn)
    try:
        names = {row["indexname"] for row in await conn.fetch("SELECT indexname FROM pg_indexes")}
        done = await conn.fetchval("SELECT max(version) FROM schema_migrations")
    finally:
        await conn.close()
    assert INDEXES <= names
    assert done == len(facts_postgres._MIGRATIONS)
    assert [r.id for r in listed] == ["r04", "r02"]


# ---- cursors ------------------------------------------------------------------------------


def test_cursor_stands_for_the_position_it_was_made_of() -> None:
    cursor = listing.cursor_at(1_700_000_000.123456, "4f1c-id")
    assert listing.position(cursor) == (1_700_000_000.123456, "4f1c-id")
    assert listing.position("") is None
    assert len(listing.cursor_at(1e300, "x" * 64)) <= s.CURSOR_CHARS // 2 + 16
    assert "=" not in cursor and "+" not in cursor and "/" not in cursor


def b64(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


@pytest.mark.parametrize(
    "cursor",
    [
        "nope",
        "!!!!",
        b64(b'{"created_at": 1.0}'),
        b64(b"[1.0, 2]"),
        b64(b'[1.0,"a",3]'),
        b64(b'[1.0, "a"]'),  # the same position, spelled otherwise
        b64(b'[1.0,"a"]') + "==",
        b64(b'[1.0,"a"]') + ".",
    ],
    ids=["word", "not-base64", "object", "id-not-text", "three", "spaces", "padded", "stray"],
)
def test_cursor_that_was_not_given_is_refused(cursor: str) -> None:
    with pytest.raises(BadRequestError) as caught:
        listing.position(cursor)
    assert str(caught.value).startswith("cursor: ")


# ---- the engine and the agent ---------------------------------------------------------------


@pytest.fixture
def backend() -> str:
    return "embedded"


async def every_item(engine: MemoryEngine, **kw: object) -> list[list[s.ListedItem]]:
    pages: list[list[s.ListedItem]] = []
    cursor = ""
    while True:
        result = await engine.list_items(s.ListRequest(cursor=cursor, **kw))  # type: ignore[arg-type]
        pages.append(result.items)
        if not result.next_cursor:
            return pages
        cursor = result.next_cursor


async def test_engine_lists_titles_newest_first_and_refuses_a_bad_cursor(
    engine: MemoryEngine, tmp_path: Path
) -> None:
    repo = tmp_path / "proj"
    repo.mkdir()
    (repo / "tax.py").write_text("def rate_of(region):\n    return 0.2\n")
    long_line = "Use " + "very " * 40 + "long titles"
    await engine.index(s.IndexRequest(path=str(repo)))
    note = await engine.store(s.StoreRequest(text=f"\n{long_line}\nmore", kind="decision"))
    last = await engine.store(s.StoreRequest(text="Pin ruff", namespace="proj", kind="solution"))
    pages = await every_item(engine, limit=2)
    proj = await every_item(engine, namespace="proj", kinds=["code"])
    with pytest.raises(BadRequestError) as caught:
        await engine.list_items(s.ListRequest(cursor="nope"))
    listed = [i for page in pages for i in page]
    assert [len(page) for page in pages] == [2, 1]
    assert [i.id for i in listed[:2]] == [last.id, note.id]
    first = listed[0]
    assert (first.title, first.namespace, first.kind) == ("Pin ruff", "proj", "solution")
    assert listed[1].title == long_line[: s.TITLE_CHARS - 1] + "…"
    assert len(listed[1].title) == s.TITLE_CHARS
    assert [(i.title, i.kind) for page in proj for i in page] == [("tax.py:1-2", "code")]
    assert listed[0].created_at >= listed[1].created_at >= listed[2].created_at > 0
    assert "cursor: " in str(caught.value)


async def test_engine_pages_are_cut_to_what_one_reply_carries(
    make_settings: Callable[..., MemorySettings], embedder: Embedder
) -> None:
    async with MemoryEngine(make_settings(), embedder=embedder, reply_bytes=1500) as engine:
        stored = [
            (await engine.store(s.StoreRequest(text=f"Note {i} " + "x" * 110))).id
            for i in range(12)
        ]
        pages = await every_item(engine, limit=100)
    listed = [i for page in pages for i in page]
    assert sorted(i.id for i in listed) == sorted(stored)  # each once
    assert [i.created_at for i in listed] == sorted((i.created_at for i in listed), reverse=True)
    assert len(pages) > 1 and max(len(page) for page in pages) < 12
    for page in pages:
        assert len(msgspec.json.encode(s.ListResult(items=page, next_cursor="c" * 128))) <= 1500


@pytest.fixture
async def agent(settings: Settings) -> AsyncIterator[MemoryAgent]:
    async with running(MemoryAgent(settings)) as agent:
        yield agent


async def test_agent_serves_memory_list_and_answers_a_bad_cursor_with_400(
    agent: MemoryAgent, bus: Bus
) -> None:
    stored = await bus.request(
        "memory", "store", s.StoreRequest(text="Keep the list newest first"), s.StoreResult
    )
    page = await bus.request("memory", "list", s.ListRequest(limit=10), s.ListResult)
    bad = await bus.request_raw(bus.subjects.endpoint("memory", "list"), b'{"cursor": "nope"}')
    big = await bus.request_raw(bus.subjects.endpoint("memory", "list"), b'{"limit": 101}')
    assert [(i.id, i.title) for i in page.items] == [(stored.id, "Keep the list newest first")]
    assert page.next_cursor == ""
    assert bad.headers["Nats-Service-Error-Code"] == "400"
    assert "cursor: " in bad.headers["Nats-Service-Error"]
    assert big.headers["Nats-Service-Error-Code"] == "400"
    assert "`$.limit`" in big.headers["Nats-Service-Error"]
