"""The call ledger on both L3 databases: idempotent rows, totals per model, task, project, day."""

from __future__ import annotations

import calendar
import sqlite3
import uuid
from collections.abc import AsyncIterator
from pathlib import Path

import asyncpg
import pytest

from adapters.llm.ledger import CallLedger, CallRecord, Total, open_ledger
from adapters.llm.ledger_postgres import PostgresCallLedger
from adapters.llm.ledger_sqlite import SqliteCallLedger
from bus.errors import UnavailableError
from memory.config import MemorySettings
from memory.tiers.base import Record
from memory.tiers.facts_sqlite import SqliteFactTier
from tests.fixtures.stores import Postgres

pytestmark = pytest.mark.anyio

DAY1 = calendar.timegm((2024, 3, 1, 23, 59, 59))  # the last second of 1 March, UTC
DAY2 = DAY1 + 2  # early on 2 March, UTC


async def fresh_database(pg: Postgres) -> str:
    """A new, empty database on the session's server, so tests never see each other's rows."""
    name = f"t{uuid.uuid4().hex[:12]}"
    conn = await asyncpg.connect(pg.dsn)
    try:
        await conn.execute(f'CREATE DATABASE "{name}"')
    finally:
        await conn.close()
    return pg.dsn.rsplit("/", 1)[0] + "/" + name


@pytest.fixture(params=["sqlite", "postgres"])
async def ledger(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[CallLedger]:
    """An open ledger on each backend, chosen by ``open_ledger`` as the gateway does."""
    if request.param == "postgres":
        dsn = await fresh_database(request.getfixturevalue("postgres"))
        settings = MemorySettings(home=str(tmp_path / "home"), postgres_dsn=dsn)
    else:
        settings = MemorySettings(home=str(tmp_path / "home"))
    store = open_ledger(settings)
    await store.open()
    yield store
    await store.close()


def call(n: int, **fields: object) -> CallRecord:
    values: dict[str, object] = {
        "id": f"c{n}",
        "at": DAY1,
        "model": "small",
        "provider": "p1",
        "task": "chat",
        "input_tokens": 100,
        "output_tokens": 10,
        "cost_usd": 0.001,
        **fields,
    }
    return CallRecord(**values)  # type: ignore[arg-type]


CALLS = [
    call(1, model="big", task="plan", project="web", cost_usd=0.5, at=DAY2),
    call(2, model="big", task="code", project="web", cost_usd=0.25, cached="exact"),
    call(3, model="small", task="code", project="api", cost_usd=0.002, at=DAY2),
    call(4, model="small", task="review", cost_usd=0.0, cached="semantic", outcome="error"),
]


async def test_ledger_put_is_idempotent_on_id(ledger: CallLedger) -> None:
    first = await ledger.put(call(1))
    again = await ledger.put(call(1, cost_usd=9.0))  # a retried write of the same call
    totals = await ledger.totals("model", 0.0)
    assert (first, again) == (True, False)
    assert totals == [Total(key="small", calls=1, input_tokens=100, output_tokens=10,
                            cost_usd=0.001, cached_calls=0)]  # fmt: skip


@pytest.mark.parametrize(
    ("by", "expected"),
    [
        ("model", [("big", 2, 0.75, 1), ("small", 2, 0.002, 1)]),
        ("task", [("plan", 1, 0.5, 0), ("code", 2, 0.252, 1), ("review", 1, 0.0, 1)]),
        ("project", [("web", 2, 0.75, 1), ("api", 1, 0.002, 0), ("", 1, 0.0, 1)]),
        ("day", [("2024-03-02", 2, 0.502, 0), ("2024-03-01", 2, 0.25, 2)]),
    ],
    ids=["model", "task", "project", "day"],
)
async def test_ledger_totals_group_and_sort_by_cost(
    ledger: CallLedger, by: str, expected: list[tuple[str, int, float, int]]
) -> None:
    for record in CALLS:
        await ledger.put(record)
    totals = await ledger.totals(by, 0.0)  # type: ignore[arg-type]
    assert [(t.key, t.calls, t.cost_usd, t.cached_calls) for t in totals] == expected
    assert sum(t.input_tokens for t in totals) == 400
    assert sum(t.output_tokens for t in totals) == 40


async def test_ledger_totals_since_leaves_out_older_calls(ledger: CallLedger) -> None:
    for record in CALLS:
        await ledger.put(record)
    totals = await ledger.totals("day", DAY2)
    nothing = await ledger.totals("model", DAY2 + 1)
    assert [(t.key, t.calls) for t in totals] == [("2024-03-02", 2)]
    assert nothing == []


async def test_ledger_totals_refuse_an_unknown_grouping(ledger: CallLedger) -> None:
    with pytest.raises(ValueError, match="by: must be"):
        await ledger.totals("prompt; DROP TABLE llm_calls", 0.0)  # type: ignore[arg-type]


def test_ledger_record_has_figures_only() -> None:
    assert set(CallRecord.__struct_fields__) == {
        "id", "at", "model", "provider", "task", "task_id", "project", "input_tokens",
        "output_tokens", "cost_usd", "latency_ms", "cached", "outcome", "attempts", "degraded",
    }  # fmt: skip


def test_open_ledger_picks_backend_like_l3(tmp_path: Path) -> None:
    embedded = open_ledger(MemorySettings(home=str(tmp_path)))
    server = open_ledger(MemorySettings(home=str(tmp_path), postgres_dsn="postgresql://h/db"))
    assert isinstance(embedded, SqliteCallLedger)
    assert embedded.path == tmp_path / "memory" / "l3" / "facts.sqlite3"
    assert isinstance(server, PostgresCallLedger)


async def test_ledger_sqlite_shares_the_file_with_the_facts_tier(tmp_path: Path) -> None:
    path = tmp_path / "l3" / "facts.sqlite3"
    ledger, facts = SqliteCallLedger(path), SqliteFactTier(path)
    await ledger.open()  # first: the facts tier must still migrate its own tables after it
    await facts.open()
    record = Record(
        id="r1",
        namespace="n",
        kind="note",
        text="hi",
        metadata={},
        created_at=1.0,
        content_hash="h",
    )
    created = await facts.insert_many([record])
    await ledger.put(call(1))
    totals = await ledger.totals("model", 0.0)
    await facts.close()
    await ledger.close()
    db = sqlite3.connect(path)
    mode = db.execute("PRAGMA journal_mode").fetchone()[0]
    db.close()
    assert created == [True]
    assert [t.calls for t in totals] == [1]
    assert mode == "wal"


async def test_ledger_postgres_unreachable_is_unavailable() -> None:
    store = PostgresCallLedger("postgresql://postgres@127.0.0.1:1/none", timeout_s=2)
    with pytest.raises(UnavailableError):
        await store.open()
