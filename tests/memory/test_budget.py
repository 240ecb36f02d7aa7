"""Whatever was accepted can be read, searched and deleted again: writes whose replies would not
fit the reply budget are refused (413 naming the field), searches answer within it."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from typing import Any

import msgspec
import pytest

from bus import codec
from bus.errors import PayloadTooLargeError
from bus.schemas import memory as s
from memory.budget import HIT_METADATA_NESTING, ReplyBudget, encoded_size
from memory.config import MemorySettings
from memory.embedder import Embedder
from memory.engine import MemoryEngine

pytestmark = pytest.mark.anyio
BUDGET = 20_000


def hit(i: int, size: int) -> s.Hit:
    return s.Hit(id=f"h{i}", text="x" * size, score=0.5, tier="l2")


def test_encoded_size_counts_json_escapes_and_msgpack_floats() -> None:
    assert encoded_size("\x01" * 10) == len('""') + 6 * 10  # JSON spells each as \u0001
    assert encoded_size([0.5] * 10) == 1 + 9 * 10  # MessagePack: 9 bytes per float


def test_best_hits_keeps_the_best_that_fit_and_says_it_left_some_out() -> None:
    budget = ReplyBudget(3_500)
    hits = [hit(i, 1_000) for i in range(5)]
    result = budget.best_hits(hits)
    everything = budget.best_hits(hits[:2])
    assert [h.id for h in result.hits] == ["h0", "h1", "h2"]
    assert result.truncated
    assert encoded_size(result) <= budget.max_bytes
    assert (len(everything.hits), everything.truncated) == (2, False)


def test_best_hits_stops_at_the_first_that_does_not_fit() -> None:
    result = ReplyBudget(3_000).best_hits([hit(0, 1_000), hit(1, 5_000), hit(2, 10)])
    assert ([h.id for h in result.hits], result.truncated) == (["h0"], True)


@pytest.fixture
async def small(
    make_settings: Callable[..., MemorySettings], embedder: Embedder
) -> AsyncIterator[MemoryEngine]:
    """An engine on the embedded backend whose replies may carry BUDGET bytes."""
    async with MemoryEngine(make_settings(), embedder=embedder, reply_bytes=BUDGET) as engine:
        yield engine


REFUSED: list[tuple[str, str, Any]] = [
    ("store-text", "text", s.StoreRequest(text="t" * BUDGET)),
    ("store-control-characters", "text", s.StoreRequest(text="a" + "\x01" * (BUDGET // 6))),
    ("store-metadata", "metadata", s.StoreRequest(text="t", metadata={"m": "x" * BUDGET})),
    ("session-summary", "summary", s.SessionSaveRequest(session_id="c", summary="x" * BUDGET)),
    (
        "session-context",
        "context",
        s.SessionSaveRequest(session_id="c", context={"x": ["y" * 100] * (BUDGET // 100)}),
    ),
    ("cache-response", "response", s.CachePutRequest(model="m", prompt="p", response="r" * BUDGET)),
]


@pytest.mark.parametrize(("case", "field", "request_"), REFUSED, ids=[c[0] for c in REFUSED])
@pytest.mark.parametrize("backend", ["embedded"], indirect=True)
async def test_write_whose_reply_would_not_fit_is_refused_with_413_naming_the_field(
    small: MemoryEngine, case: str, field: str, request_: Any
) -> None:
    write = {
        s.StoreRequest: small.store,
        s.SessionSaveRequest: small.session_save,
        s.CachePutRequest: small.cache_put,
    }[type(request_)]
    with pytest.raises(PayloadTooLargeError) as info:
        await write(request_)
    stats = await small.stats()
    assert info.value.code == 413
    assert info.value.description.startswith(f"{field}:")
    assert "x" * 10 not in info.value.description
    assert stats.items == 0


@pytest.mark.parametrize("backend", ["embedded"], indirect=True)
async def test_what_was_accepted_comes_back_within_the_budget(small: MemoryEngine) -> None:
    text = "retry with backoff " * ((BUDGET - 1_500) // 19)  # as large as fits, about
    stored = await small.store(s.StoreRequest(text=text, kind="solution"))
    item = await small.get(s.GetRequest(id=stored.id))
    found = await small.search(s.SearchRequest(query="retry with backoff"))
    session = await small.session_save(s.SessionSaveRequest(session_id="c", summary=text))
    loaded = await small.session_load(s.SessionLoadRequest(session_id="c"))
    assert item.text == text
    assert [h.id for h in found.hits] == [stored.id]
    assert session.version == loaded.version == 1
    for reply in (item, found, loaded):
        assert encoded_size(reply) <= BUDGET


@pytest.mark.parametrize("backend", ["embedded"], indirect=True)
async def test_search_answers_the_best_hits_that_fit_and_says_it_left_some_out(
    small: MemoryEngine,
) -> None:
    for i in range(10):
        await small.store(s.StoreRequest(text=f"note {i} about retries " + "r" * 3_000))
    result = await small.search(s.SearchRequest(query="note about retries", k=10))
    again = await small.search(s.SearchRequest(query="note about retries", k=10))  # from L1
    few = await small.search(s.SearchRequest(query="note about retries", k=2))
    assert 1 <= len(result.hits) < 10
    assert result.truncated
    assert encoded_size(result) <= BUDGET
    assert again == result
    assert (len(few.hits), few.truncated) == (2, False)


def deep(levels: int) -> dict[str, Any]:
    """Metadata of ``levels`` levels of its own, a list at the bottom."""
    value: Any = ["bottom"]
    for _ in range(levels - 1):
        value = {"a": value}
    return value


@pytest.mark.parametrize("backend", ["embedded"], indirect=True)
async def test_metadata_nested_to_the_limit_round_trips_store_get_search_delete(
    engine: MemoryEngine,
) -> None:
    metadata = deep(HIT_METADATA_NESTING)
    body = msgspec.json.encode({"text": "deeply nested metadata", "metadata": metadata})
    stored = await engine.store(codec.decode(body, s.StoreRequest))
    item = await engine.get(s.GetRequest(id=stored.id))
    found = await engine.search(s.SearchRequest(query="deeply nested metadata"))
    deleted = await engine.delete(s.DeleteRequest(id=stored.id))
    # what a caller decodes: the replies pass the codec's nesting limit too
    item_back = codec.decode(codec.encode(item), s.Item)
    found_back = codec.decode(codec.encode(found), s.SearchResult)
    assert item_back.metadata == metadata
    assert [h.metadata for h in found_back.hits] == [metadata]
    assert deleted.deleted
