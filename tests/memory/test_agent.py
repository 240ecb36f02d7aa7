"""The memory agent over the bus: endpoints, 400s that name the field, durability under kill -9."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from collections.abc import AsyncIterator
from pathlib import Path

import anyio
import msgspec
import pytest

from agents.memory import MemoryAgent
from bus import Bus, Settings, codec
from bus.errors import BadRequestError, NotFoundError, PayloadTooLargeError, UnavailableError
from bus.limits import HEADER_ROOM, MAX_NESTING
from bus.schemas import memory as s
from bus.schemas.common import Empty, Health
from bus.schemas.progress import Progress
from memory.budget import HIT_METADATA_NESTING
from tests.fixtures.nats_server import running

pytestmark = pytest.mark.anyio
ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture
async def agent(settings: Settings) -> AsyncIterator[MemoryAgent]:
    async with running(MemoryAgent(settings)) as agent:
        yield agent


async def test_agent_stores_and_searches_over_the_bus(agent: MemoryAgent, bus: Bus) -> None:
    stored = await bus.request(
        "memory",
        "store",
        s.StoreRequest(text="Use uvloop for lower latency", kind="decision"),
        s.StoreResult,
    )
    found = await bus.request(
        "memory", "search", s.SearchRequest(query="event loop speed"), s.SearchResult
    )
    item = await bus.request("memory", "get", s.GetRequest(id=stored.id), s.Item)
    assert [h.id for h in found.hits] == [stored.id]
    assert item.text == "Use uvloop for lower latency"


async def test_agent_serves_sessions_cache_stats_and_delete(agent: MemoryAgent, bus: Bus) -> None:
    save = s.SessionSaveRequest(session_id="c1", summary="refactor", context={"f": ["a.py"]})
    await bus.request("memory", "session.save", save, s.SessionSaveResult)
    session = await bus.request(
        "memory", "session.load", s.SessionLoadRequest(session_id="c1"), s.Session
    )
    await bus.request(
        "memory",
        "cache.put",
        s.CachePutRequest(model="m", prompt="hi", response="hello"),
        s.CachePutResult,
    )
    cached = await bus.request(
        "memory", "cache.lookup", s.CacheLookupRequest(model="m", prompt="hi"), s.CacheLookupResult
    )
    stored = await bus.request(
        "memory", "store", s.StoreRequest(text="temporary note"), s.StoreResult
    )
    deleted = await bus.request("memory", "delete", s.DeleteRequest(id=stored.id), s.DeleteResult)
    stats = await bus.request("memory", "stats", s.StatsRequest(), s.Stats)
    health = await bus.request("memory", "health", Empty(), Health)
    assert (session.summary, session.context) == ("refactor", {"f": ["a.py"]})
    assert (cached.hit, cached.response) == (True, "hello")
    assert deleted.deleted
    assert stats.items == 0
    assert health.details["model"] == stats.model


async def test_agent_indexes_with_progress_to_the_callers_inbox(
    agent: MemoryAgent, bus: Bus, tmp_path: Path
) -> None:
    repo = tmp_path / "repo"
    repo.mkdir()
    (repo / "a.py").write_text("def add(a, b):\n    return a + b\n")
    (repo / "b.md").write_text("# Notes\n")
    inbox = bus.nc.new_inbox()
    sub = await bus.nc.subscribe(inbox)
    req = s.IndexRequest(path=str(repo), namespace="t", progress_subject=inbox)
    result = await bus.request("memory", "index", req, s.IndexResult, timeout=60)
    events: list[Progress] = []
    with anyio.move_on_after(2):
        async for msg in sub.messages:
            events.append(msgspec.json.decode(msg.data, type=Progress))
            if len(events) == result.files:
                break
    assert (result.files, result.chunks) == (2, 2)
    assert all(isinstance(e, s.IndexProgress) for e in events)  # tagged "index" in the union
    assert [(e.done, e.total) for e in events] == [(1, 2), (2, 2)]  # type: ignore[union-attr]


BAD_REQUESTS = [
    ("store", b'{"text": ""}', "`$.text`"),
    ("store", b'{"text": 42}', "`$.text`"),
    ("store", b'{"text": "x", "kind": "recipe"}', "`$.kind`"),
    ("store", b'{"text": "' + b"x" * 600_000 + b'"}', "`$.text`"),
    ("search", b'{"query": "x", "k": 0}', "`$.k`"),
    ("search", b'{"query": "x", "k": 101}', "`$.k`"),
    ("search", b'{"query": ""}', "`$.query`"),
    ("get", b'{"id": "' + b"i" * 65 + b'"}', "`$.id`"),
    ("session.save", b'{"session_id": ""}', "`$.session_id`"),
    ("index", b'{"path": "/x", "progress_subject": "sophia.memory.store"}', "progress_subject:"),
    ("index", b'{"path": "/x", "progress_subject": "_INBOX.*"}', "progress_subject:"),
    ("index", b'{"path": "/tmp/a\\u0000b"}', "path:"),
    ("index", b'{"path": "/tmp/' + b"c" * 256 + b'"}', "path:"),
    ("index", b'{"path": "/' + b"p" * 4096 + b'"}', "`$.path`"),
    ("cache.lookup", b'{"model": "m", "prompt": "p", "scope": "a/b"}', "`$.scope`"),
    (
        "cache.put",
        b'{"model": "m", "prompt": "p", "response": "", "scope": "' + b"f" * 129 + b'"}',
        "`$.scope`",
    ),
    ("cache.lookup", b'{"model": "m", "prompt": "p", "semantic": "no"}', "`$.semantic`"),
]


@pytest.mark.parametrize(
    ("endpoint", "body", "names"),
    BAD_REQUESTS,
    ids=[
        "empty-text",
        "text-type",
        "unknown-kind",
        "text-too-long",
        "k-zero",
        "k-too-big",
        "empty-query",
        "id-too-long",
        "empty-session-id",
        "progress-subject",
        "progress-wildcard",
        "path-nul",
        "path-component-too-long",
        "path-too-long",
        "scope-charset",
        "scope-too-long",
        "semantic-type",
    ],
)
async def test_agent_answers_bad_input_with_400_naming_the_field_and_keeps_serving(
    agent: MemoryAgent, bus: Bus, endpoint: str, body: bytes, names: str
) -> None:
    reply = await bus.request_raw(bus.subjects.endpoint("memory", endpoint), body)
    health = await bus.request("memory", "health", Empty(), Health)
    assert reply.headers["Nats-Service-Error-Code"] == "400"
    assert names in reply.headers["Nats-Service-Error"]
    assert health.status == "ok"


async def test_agent_refuses_a_bad_scope_without_quoting_it(agent: MemoryAgent, bus: Bus) -> None:
    body = b'{"model": "m", "prompt": "p", "scope": "<evil scope>"}'
    reply = await bus.request_raw(bus.subjects.endpoint("memory", "cache.lookup"), body)
    assert reply.headers["Nats-Service-Error-Code"] == "400"
    assert "evil" not in reply.headers["Nats-Service-Error"]


async def test_agent_keeps_cache_scopes_apart_over_the_bus(agent: MemoryAgent, bus: Bus) -> None:
    digest = "9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08"
    put = s.CachePutRequest(model="m", prompt="How do I exit vim?", response=":q", scope=digest)
    await bus.request("memory", "cache.put", put, s.CachePutResult)

    async def ask(prompt: str, scope: str, semantic: bool = True) -> s.CacheLookupResult:
        req = s.CacheLookupRequest(model="m", prompt=prompt, scope=scope, semantic=semantic)
        return await bus.request("memory", "cache.lookup", req, s.CacheLookupResult)

    exact = await ask("How do I exit vim?", digest)
    reworded = await ask("How can I quit Vim?", digest)
    exact_only = await ask("How can I quit Vim?", digest, semantic=False)
    elsewhere = await ask("How do I exit vim?", "0" * 64)
    assert (exact.hit, exact.exact) == (True, True)
    assert (reworded.hit, reworded.exact, reworded.response) == (True, False, ":q")
    assert not exact_only.hit
    assert not elsewhere.hit


async def test_ten_megabytes_never_reach_the_agent_and_it_keeps_serving(
    agent: MemoryAgent, bus: Bus
) -> None:
    body = msgspec.json.encode(s.StoreRequest(text="x" * 10_000_000))
    with pytest.raises(PayloadTooLargeError, match=r"payload: \d+ bytes is over the bus's limit"):
        await bus.request_raw(bus.subjects.endpoint("memory", "store"), body)
    health = await bus.request("memory", "health", Empty(), Health)
    assert health.status == "ok"


async def test_agent_answers_unknown_id_with_404(agent: MemoryAgent, bus: Bus) -> None:
    with pytest.raises(NotFoundError):
        await bus.request("memory", "get", s.GetRequest(id="nope"), s.Item)
    with pytest.raises(BadRequestError):
        await bus.request("memory", "get", s.GetRequest(id=""), s.Item)


async def test_search_over_more_than_one_reply_holds_answers_the_best_that_fit(
    agent: MemoryAgent, bus: Bus
) -> None:
    for i in range(60):
        text = f"note {i}: how the uploader retries with backoff. " + "retry " * 5_000
        await bus.request("memory", "store", s.StoreRequest(text=text), s.StoreResult, timeout=30)
    request = s.SearchRequest(query="uploader retries with backoff", k=100)
    subject = bus.subjects.endpoint("memory", "search")
    with anyio.fail_after(10):
        reply = await bus.request_raw(subject, codec.encode(request))
    result = codec.decode(reply.data, s.SearchResult)
    assert 10 < len(result.hits) < 60
    assert result.truncated
    assert len(reply.data) <= bus.nc.max_payload - HEADER_ROOM


def _nested(levels: int) -> dict[str, object]:
    value: object = ["bottom"]
    for _ in range(levels - 1):
        value = {"a": value}
    return value  # type: ignore[return-value]


async def test_metadata_nested_to_the_limit_round_trips_over_the_bus(
    agent: MemoryAgent, bus: Bus
) -> None:
    metadata = _nested(HIT_METADATA_NESTING)
    store = s.StoreRequest(text="nested metadata survives the trip", metadata=metadata)
    stored = await bus.request("memory", "store", store, s.StoreResult)
    item = await bus.request("memory", "get", s.GetRequest(id=stored.id), s.Item)
    found = await bus.request(
        "memory", "search", s.SearchRequest(query="nested metadata survives"), s.SearchResult
    )
    deleted = await bus.request("memory", "delete", s.DeleteRequest(id=stored.id), s.DeleteResult)
    assert item.metadata == metadata
    assert [h.metadata for h in found.hits] == [metadata]
    assert deleted.deleted


@pytest.mark.parametrize(
    "levels",
    [HIT_METADATA_NESTING + 1, MAX_NESTING],
    ids=["deeper-than-a-hit-carries", "deeper-than-the-codec-takes"],
)
async def test_metadata_nested_deeper_is_a_400_naming_metadata(
    agent: MemoryAgent, bus: Bus, levels: int
) -> None:
    body = msgspec.json.encode({"text": "too deep", "metadata": _nested(levels)})
    reply = await bus.request_raw(bus.subjects.endpoint("memory", "store"), body)
    assert reply.headers["Nats-Service-Error-Code"] == "400"
    assert "metadata" in reply.headers["Nats-Service-Error"]


CANARY = "s3cr3t-canary-value"
ECHOES = [
    ("get", s.GetRequest(id=CANARY)),
    ("delete", s.DeleteRequest(id=CANARY * 4)),
    ("index", s.IndexRequest(path=f"/nowhere/{CANARY}")),
    ("index", s.IndexRequest(path=f"/nowhere/{CANARY}\0")),
    ("store", s.StoreRequest(text="x", kind=CANARY)),  # type: ignore[arg-type]
    ("search", s.SearchRequest(query="x", mode=CANARY)),  # type: ignore[arg-type]
    ("session.load", s.SessionLoadRequest(session_id="c", namespace=CANARY * 10)),
]


@pytest.mark.parametrize(
    ("endpoint", "request_"),
    ECHOES,
    ids=["get", "delete", "index", "index-nul", "store-kind", "search-mode", "namespace"],
)
async def test_error_text_never_echoes_the_request(
    agent: MemoryAgent, bus: Bus, endpoint: str, request_: msgspec.Struct
) -> None:
    reply = await bus.request_raw(bus.subjects.endpoint("memory", endpoint), codec.encode(request_))
    assert reply.headers["Nats-Service-Error-Code"] in {"400", "404"}
    assert CANARY not in reply.headers["Nats-Service-Error"]
    assert CANARY.encode() not in reply.data


def _spawn(settings: Settings) -> subprocess.Popen[bytes]:
    env = {
        **os.environ,
        "SOPHIA_NATS_URL": settings.nats_url,
        "SOPHIA_PREFIX": settings.prefix,
        "SOPHIA_HOME": settings.home,
        "SOPHIA_EMBED_THREADS": "1",
        "PYTHONPATH": str(ROOT),
    }
    return subprocess.Popen(
        [sys.executable, "-m", "agents.memory"], env=env, cwd=ROOT, stderr=subprocess.DEVNULL
    )


async def _until_up(bus: Bus, proc: subprocess.Popen[bytes]) -> None:
    with anyio.fail_after(60):
        while True:
            assert proc.poll() is None, "the memory agent exited"
            try:
                await bus.request("memory", "health", Empty(), Health, timeout=1)
                return
            except UnavailableError:
                await anyio.sleep(0.1)


@pytest.mark.slow
@pytest.mark.chaos
async def test_writes_acknowledged_before_kill_9_are_there_after_restart(
    settings: Settings, bus: Bus
) -> None:
    proc = _spawn(settings)
    try:
        await _until_up(bus, proc)
        acked = []
        for i in range(40):
            text = f"lesson {i}: retry number {i} needs a jittered backoff of {i * 10} ms"
            acked.append(
                (
                    await bus.request(
                        "memory", "store", s.StoreRequest(text=text, kind="solution"), s.StoreResult
                    )
                ).id
            )
        await bus.request(
            "memory",
            "session.save",
            s.SessionSaveRequest(session_id="k", summary="before"),
            s.SessionSaveResult,
        )
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(timeout=10)
        proc = _spawn(settings)
        await _until_up(bus, proc)
        items = [await bus.request("memory", "get", s.GetRequest(id=i), s.Item) for i in acked]
        found = await bus.request(
            "memory",
            "search",
            s.SearchRequest(query="lesson 17 retry number 17", k=3, mode="vector"),
            s.SearchResult,
        )
        stats = await bus.request("memory", "stats", s.StatsRequest(), s.Stats)
        session = await bus.request(
            "memory", "session.load", s.SessionLoadRequest(session_id="k"), s.Session
        )
    finally:
        proc.kill()
        proc.wait(timeout=10)
    assert [i.id for i in items] == acked
    assert acked[17] in {h.id for h in found.hits}
    assert {t.name: t.items for t in stats.tiers}["l2"] == 40
    assert session.summary == "before"
