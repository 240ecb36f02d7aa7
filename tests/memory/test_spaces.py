"""Durability across restarts, and a changed model re-embeds instead of mixing spaces."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest

from bus.schemas import memory as s
from memory.config import MemorySettings
from memory.embedder import Embedder, ModelSpec
from memory.engine import MemoryEngine

pytestmark = pytest.mark.anyio

NOTES = [
    ("Use exponential backoff for S3 uploads", "solution"),
    ("Decided: one NATS micro service per agent", "decision"),
    ("KeyError 'user' when the session expired", "error"),
]


@pytest.mark.parametrize("backend", ["embedded", "servers"], indirect=True)
async def test_everything_written_is_there_after_close_and_reopen(
    make_settings: Callable[..., MemorySettings], embedder: Embedder, tmp_path: Path
) -> None:
    repo = tmp_path / "repo"
    repo.mkdir()
    (repo / "a.py").write_text("def alpha():\n    return 'first letter'\n")
    async with MemoryEngine(make_settings(), embedder=embedder) as engine:
        ids = [(await engine.store(s.StoreRequest(text=t, kind=k))).id for t, k in NOTES]
        await engine.session_save(
            s.SessionSaveRequest(session_id="c", summary="notes", context={"n": 1})
        )
        await engine.cache_put(s.CachePutRequest(model="m", prompt="2+2?", response="4"))
        await engine.index(s.IndexRequest(path=str(repo)))
    async with MemoryEngine(make_settings(), embedder=embedder) as engine:
        items = [await engine.get(s.GetRequest(id=i)) for i in ids]
        hits = await engine.search(s.SearchRequest(query="retry uploads with backoff"))
        session = await engine.session_load(s.SessionLoadRequest(session_id="c"))
        cached = await engine.cache_lookup(s.CacheLookupRequest(model="m", prompt="2+2?"))
        again = await engine.index(s.IndexRequest(path=str(repo)))
    assert [i.text for i in items] == [t for t, _ in NOTES]
    assert hits.hits[0].id == ids[0]
    assert (session.found, session.context) == (True, {"n": 1})
    assert cached.response == "4"
    assert again.changed == 0


@pytest.mark.parametrize("backend", ["embedded", "servers"], indirect=True)
async def test_changed_model_reembeds_everything_into_a_fresh_space(
    make_settings: Callable[..., MemorySettings], embedder: Embedder
) -> None:
    old = embedder.model
    upgraded = Embedder(ModelSpec(old.name, old.version + "-next", old.path), threads=2)
    async with MemoryEngine(make_settings(), embedder=embedder) as engine:
        ids = [(await engine.store(s.StoreRequest(text=t, kind=k))).id for t, k in NOTES]
    async with MemoryEngine(make_settings(), embedder=upgraded) as engine:
        models = {p["model"] for p in await engine.vectors.payloads()}
        item = await engine.get(s.GetRequest(id=ids[1]))
        hits = await engine.search(s.SearchRequest(query="one micro service for each agent"))
        stats = await engine.stats()
        reembedded = engine.reembedded
        spaces = sorted(p.name for p in engine.tiers.vector_root.glob("sophia_items_*"))
    assert reembedded == len(NOTES)
    assert models == {upgraded.model_id}
    assert item.model == upgraded.model_id
    assert hits.hits[0].id == ids[1]
    assert [t.items for t in stats.tiers if t.name == "l2"] == [len(NOTES)]
    assert len(spaces) == 1


@pytest.mark.parametrize("backend", ["embedded"], indirect=True)
async def test_vectors_lost_from_l2_are_restored_from_l3_at_open(
    make_settings: Callable[..., MemorySettings], embedder: Embedder
) -> None:
    async with MemoryEngine(make_settings(), embedder=embedder) as engine:
        ids = [(await engine.store(s.StoreRequest(text=t, kind=k))).id for t, k in NOTES]
        await engine.vectors.delete(ids[:2])  # as if the process died between L3 and L2
    async with MemoryEngine(make_settings(), embedder=embedder) as engine:
        count = await engine.vectors.count()
        restored = engine.reembedded
    assert (count, restored) == (3, 2)
