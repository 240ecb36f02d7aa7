"""Keyword search ranks a bounded number of documents, on both L3 backends, and still finds
what the rarest terms point at."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from memory.tiers.base import Query, Record, affordable_terms
from memory.tiers.facts_postgres import PostgresFactTier
from memory.tiers.facts_sqlite import SqliteFactTier
from tests.memory.conftest import _fresh_database

pytestmark = pytest.mark.anyio
BUDGET = 10


def record(i: int, words: list[str]) -> Record:
    body = " ".join([*words, f"filler{i}"])
    return Record(
        id=f"r{i:02d}",
        namespace="ns",
        kind="doc",
        text=body,
        metadata={},
        created_at=float(i),
        content_hash=f"h{i}",
        body=body,
    )


@pytest.fixture(params=["sqlite", "postgres"])
async def facts(
    request: pytest.FixtureRequest, tmp_path: Path
) -> AsyncIterator[SqliteFactTier | PostgresFactTier]:
    tier: SqliteFactTier | PostgresFactTier
    if request.param == "sqlite":
        tier = SqliteFactTier(tmp_path / "facts.sqlite3", rank_budget=BUDGET)
    else:
        dsn = await _fresh_database(request.getfixturevalue("postgres"))
        tier = PostgresFactTier(dsn, rank_budget=BUDGET)
    await tier.open()
    # "message" in all 30 documents, "broker" in 15, "kafka" in 2: the budget is 10
    await tier.insert_many(
        [
            record(i, ["message", *(["broker"] if i < 15 else []), *(["kafka"] if i < 2 else [])])
            for i in range(30)
        ]
    )
    yield tier
    await tier.close()


async def ids(tier: SqliteFactTier | PostgresFactTier, terms: list[str]) -> set[str]:
    return {i for i, _ in await tier.keyword_search(terms, Query(namespace="ns"), 50)}


async def test_common_terms_are_left_out_when_a_rare_one_fits_the_budget(
    facts: SqliteFactTier | PostgresFactTier,
) -> None:
    assert await ids(facts, ["message", "kafka"]) == {"r00", "r01"}


async def test_only_common_terms_rank_documents_that_have_them_all(
    facts: SqliteFactTier | PostgresFactTier,
) -> None:
    assert await ids(facts, ["message", "broker"]) == {f"r{i:02d}" for i in range(15)}


async def test_a_term_no_document_has_does_not_empty_the_result(
    facts: SqliteFactTier | PostgresFactTier,
) -> None:
    found = await ids(facts, ["broker", "zookeeper"])
    assert found == {f"r{i:02d}" for i in range(15)}
    assert await ids(facts, ["zookeeper"]) == set()


def test_affordable_terms_takes_the_rarest_first_within_the_budget() -> None:
    counts = [(30, "message"), (0, "zookeeper"), (2, "kafka"), (7, "queue"), (5, "topic")]
    assert affordable_terms(counts, 10) == (
        ["kafka", "topic"],
        ["kafka", "topic", "queue", "message"],
    )
    assert affordable_terms(counts, 1) == ([], ["kafka", "topic", "queue", "message"])
    assert affordable_terms([(0, "x")], 10) == ([], [])
