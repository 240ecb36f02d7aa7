"""Behaviour of the memory engine, the same suite over every backend set."""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path

import anyio
import pytest

from bus.errors import NotFoundError
from bus.schemas import memory as s
from memory.config import MemorySettings
from memory.embedder import Embedder
from memory.engine import MemoryEngine

pytestmark = pytest.mark.anyio

DECISION = "We chose NATS over Kafka for the agent bus because it gives request/reply for free"


async def test_store_then_search_finds_the_item(engine: MemoryEngine) -> None:
    stored = await engine.store(s.StoreRequest(text=DECISION, kind="decision", namespace="p"))
    result = await engine.search(
        s.SearchRequest(query="why did we pick nats for the bus", namespace="p")
    )
    assert stored.created
    assert set(stored.tiers) == {"l2", "l3"}
    assert [h.id for h in result.hits][:1] == [stored.id]
    assert result.hits[0].tier == "hybrid"


async def test_store_same_item_twice_returns_same_id_and_changes_nothing(
    engine: MemoryEngine,
) -> None:
    first = await engine.store(s.StoreRequest(text=DECISION, kind="decision"))
    before = await engine.stats()
    second = await engine.store(s.StoreRequest(text=DECISION, kind="decision", metadata={"x": 1}))
    after = await engine.stats()
    assert second.id == first.id
    assert not second.created
    assert after.items == before.items == 1
    assert [t.items for t in after.tiers if t.name == "l2"] == [1]


async def test_search_stays_in_its_namespace(engine: MemoryEngine) -> None:
    await engine.store(s.StoreRequest(text=DECISION, kind="decision", namespace="a"))
    result = await engine.search(s.SearchRequest(query="nats bus", namespace="b"))
    assert result.hits == []


async def test_search_filters_by_kind_path_language_tags_and_time(engine: MemoryEngine) -> None:
    t0 = time.time()
    items = [
        (
            "retry the upload with exponential backoff",
            "solution",
            {"tags": ["s3"], "path": "up/load.py", "language": "python"},
        ),
        (
            "upload failed with a timeout talking to S3",
            "error",
            {"tags": ["s3", "net"], "path": "up/net.go", "language": "go"},
        ),
        (
            "uploads go to S3 through the archive tier",
            "doc",
            {"tags": ["docs"], "path": "docs/s3.md", "language": "markdown"},
        ),
    ]
    ids = {}
    for text, kind, meta in items:
        ids[kind] = (await engine.store(s.StoreRequest(text=text, kind=kind, metadata=meta))).id

    async def found(**filters: object) -> set[str]:
        kinds = filters.pop("kinds", [])
        req = s.SearchRequest(query="s3 upload", kinds=kinds, filters=s.SearchFilters(**filters))  # type: ignore[arg-type]
        return {h.id for h in (await engine.search(req)).hits}

    assert await found() == set(ids.values())
    assert await found(kinds=["error", "solution"]) == {ids["error"], ids["solution"]}
    assert await found(path="up/") == {ids["error"], ids["solution"]}
    assert await found(path="docs/s3.md") == {ids["doc"]}
    assert await found(language="go") == {ids["error"]}
    assert await found(tags=["net", "docs"]) == {ids["error"], ids["doc"]}
    assert await found(since=t0 - 60, until=time.time() + 60) == set(ids.values())
    assert await found(since=time.time() + 60) == set()


async def test_search_modes_report_their_tier(engine: MemoryEngine) -> None:
    await engine.store(s.StoreRequest(text=DECISION, kind="decision"))
    vector = await engine.search(s.SearchRequest(query="message bus choice", mode="vector"))
    keyword = await engine.search(s.SearchRequest(query="kafka", mode="keyword"))
    assert {h.tier for h in vector.hits} == {"l2"}
    assert {h.tier for h in keyword.hits} == {"l3"}


async def test_search_sees_writes_made_after_a_cached_search(engine: MemoryEngine) -> None:
    query = s.SearchRequest(query="flaky integration test fix")
    assert (await engine.search(query)).hits == []
    stored = await engine.store(
        s.StoreRequest(
            text="Fixed the flaky integration test by waiting for readiness", kind="solution"
        )
    )
    assert [h.id for h in (await engine.search(query)).hits] == [stored.id]


async def test_get_returns_the_item_and_then_serves_it_from_l1(engine: MemoryEngine) -> None:
    stored = await engine.store(
        s.StoreRequest(text=DECISION, kind="decision", metadata={"by": "lead"})
    )
    first = await engine.get(s.GetRequest(id=stored.id))
    hits_before = (await engine.stats()).l1_hits
    second = await engine.get(s.GetRequest(id=stored.id))
    assert first.text == second.text == DECISION
    assert first.metadata == {"by": "lead"}
    assert first.model == engine.embedder.model_id
    assert (await engine.stats()).l1_hits == hits_before + 1


async def test_large_body_is_archived_in_l4_and_read_back_whole(
    make_settings: Callable[..., MemorySettings], embedder: Embedder
) -> None:
    body = "\n".join(
        f"line {i}: the transcript of a long session about retries" for i in range(400)
    )
    async with MemoryEngine(make_settings(archive_bytes=2048), embedder=embedder) as engine:
        stored = await engine.store(s.StoreRequest(text=body, kind="doc"))
        item = await engine.get(s.GetRequest(id=stored.id))
        stats = await engine.stats()
    assert "l4" in stored.tiers
    assert item.text == body
    assert item.tier == "l4"
    assert [t.items for t in stats.tiers if t.name == "l4"] == [1]


async def test_delete_forgets_the_item_in_every_tier(engine: MemoryEngine) -> None:
    stored = await engine.store(s.StoreRequest(text=DECISION, kind="decision"))
    await engine.get(s.GetRequest(id=stored.id))
    result = await engine.delete(s.DeleteRequest(id=stored.id))
    again = await engine.delete(s.DeleteRequest(id=stored.id))
    with pytest.raises(NotFoundError):
        await engine.get(s.GetRequest(id=stored.id))
    assert result.deleted
    assert not again.deleted
    assert (await engine.search(s.SearchRequest(query="nats kafka bus"))).hits == []
    assert (await engine.stats()).items == 0


async def test_session_save_then_load_restores_context_and_counts_versions(
    engine: MemoryEngine,
) -> None:
    first = await engine.session_save(
        s.SessionSaveRequest(session_id="cursor-1", summary="auth work", context={"open": ["a.py"]})
    )
    second = await engine.session_save(
        s.SessionSaveRequest(
            session_id="cursor-1", summary="auth tests", context={"open": ["t.py"]}
        )
    )
    loaded = await engine.session_load(s.SessionLoadRequest(session_id="cursor-1"))
    missing = await engine.session_load(s.SessionLoadRequest(session_id="nope"))
    assert (first.version, second.version) == (1, 2)
    assert (loaded.summary, loaded.context, loaded.version) == ("auth tests", {"open": ["t.py"]}, 2)
    assert loaded.found
    assert not missing.found


async def test_cache_hits_exact_and_by_meaning_and_misses_other_models(
    engine: MemoryEngine,
) -> None:
    await engine.cache_put(
        s.CachePutRequest(model="m1", prompt="What is the capital of France?", response="Paris")
    )
    exact = await engine.cache_lookup(
        s.CacheLookupRequest(model="m1", prompt="What is the capital of France?")
    )
    close = await engine.cache_lookup(
        s.CacheLookupRequest(model="m1", prompt="what's France's capital?", threshold=0.9)
    )
    other_model = await engine.cache_lookup(
        s.CacheLookupRequest(model="m2", prompt="What is the capital of France?")
    )
    unrelated = await engine.cache_lookup(
        s.CacheLookupRequest(model="m1", prompt="How do I rebase a git branch?")
    )
    assert (exact.hit, exact.exact, exact.response) == (True, True, "Paris")
    assert (close.hit, close.exact, close.response) == (True, False, "Paris")
    assert close.similarity >= 0.9
    assert not other_model.hit
    assert not unrelated.hit


async def test_cache_entry_expires_after_its_ttl(engine: MemoryEngine) -> None:
    await engine.cache_put(
        s.CachePutRequest(model="m", prompt="ping?", response="pong", ttl_s=0.05)
    )
    await anyio.sleep(0.3)
    result = await engine.cache_lookup(s.CacheLookupRequest(model="m", prompt="ping?"))
    assert not result.hit


async def test_stats_counts_items_by_kind_and_names_backends(
    engine: MemoryEngine, backend: str
) -> None:
    await engine.store(s.StoreRequest(text=DECISION, kind="decision"))
    await engine.store(
        s.StoreRequest(text="TypeError: 'NoneType' object is not iterable", kind="error")
    )
    stats = await engine.stats()
    backends = {t.name: t.backend for t in stats.tiers}
    assert stats.by_kind == {"decision": 1, "error": 1}
    assert stats.model == engine.embedder.model_id
    expected = {
        "embedded": {"l1": "lru", "l2": "qdrant-edge", "l3": "sqlite", "l4": "local"},
        "servers": {"l1": "redis", "l2": "qdrant-edge", "l3": "postgres", "l4": "s3"},
        "qdrant-local": {"l1": "redis", "l2": "qdrant", "l3": "postgres", "l4": "s3"},
    }[backend]
    assert backends == expected


async def test_index_then_search_returns_code_hits_with_path_and_lines(
    engine: MemoryEngine, tmp_path: Path
) -> None:
    repo = tmp_path / "repo"
    repo.mkdir()
    (repo / "billing.py").write_text(
        '"""Billing."""\n\n\ndef compute_invoice_total(lines):\n'
        '    """Sum the invoice lines including tax."""\n'
        "    return sum(l.amount * (1 + l.tax_rate) for l in lines)\n"
    )
    await engine.index(s.IndexRequest(path=str(repo), namespace="repo"))
    result = await engine.search(
        s.SearchRequest(
            query="how is the invoice total computed", namespace="repo", kinds=["code"], k=1
        )
    )
    hit = result.hits[0]
    assert hit.metadata["path"] == "billing.py"
    assert (hit.metadata["start_line"], hit.metadata["end_line"]) == (4, 6)
    assert hit.metadata["symbol"] == "compute_invoice_total"


async def test_concurrent_stores_of_one_item_create_it_once(engine: MemoryEngine) -> None:
    results: list[s.StoreResult] = []

    async def store() -> None:
        results.append(await engine.store(s.StoreRequest(text=DECISION, kind="decision")))

    async with anyio.create_task_group() as tg:
        for _ in range(5):
            tg.start_soon(store)
    assert len({r.id for r in results}) == 1
    assert sum(r.created for r in results) == 1
    assert (await engine.stats()).items == 1
