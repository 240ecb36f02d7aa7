"""Search latency of one loaded engine: end to end through ``MemoryEngine.search``, one client
and many, and each piece of a search alone (see bench/memory.py for how L1 is kept out).

Every phase walks the queries in order and stops after its time once it has ``MIN_SAMPLES``
timings, so a slow backend costs minutes, not hours; ``samples`` says how many it took. The
machine's load average before and after is reported: on a shared machine it explains a lot.
"""

from __future__ import annotations

import os
import time
from collections.abc import Awaitable, Callable, Iterable
from typing import Any, TypeVar

import anyio
import numpy as np

from bench.bulk import Store
from bus.schemas import memory as s
from memory import keys, keywords
from memory.engine import MemoryEngine
from memory.tiers.base import Query

T = TypeVar("T")

NAMESPACE = "bench"
DEPTH = 40  # the candidates router._search asks each side for at k=10: max(4 * k, 40)
MIN_SAMPLES = 10
ONE_CLIENT_PHASES = 4  # the one-client phase runs seven kinds of call: it gets four phases' time
TARGETS_MS = {"search_p50_ms": 12.0, "search_p95_ms": 25.0, "concurrent_p95_ms": 60.0}


def summary(times: list[float], prefix: str = "") -> dict[str, Any]:
    """p50 and p95 in milliseconds, and the number of samples."""
    return {
        f"{prefix}p50_ms": float(np.percentile(times, 50)),
        f"{prefix}p95_ms": float(np.percentile(times, 95)),
        f"{prefix}samples": len(times),
    }


async def timed(
    items: Iterable[T],
    call: Callable[[T], Awaitable[Any]],
    seconds: float,
    min_samples: int = MIN_SAMPLES,
) -> list[float]:
    """Milliseconds of ``await call(item)`` for each item, one at a time, time-bounded."""
    times: list[float] = []
    started = time.perf_counter()
    for item in items:
        t0 = time.perf_counter()
        await call(item)
        times.append(1000 * (time.perf_counter() - t0))
        if len(times) >= min_samples and time.perf_counter() - started >= seconds:
            break
    return times


def request(query: str, mode: str = "hybrid") -> s.SearchRequest:
    return s.SearchRequest(query=query, namespace=NAMESPACE, k=10, mode=mode)


async def fresh_l1(engine: MemoryEngine) -> None:
    """Make every search cached so far stale, as a write to the namespace does."""
    await engine.tiers.hot.incr(keys.generation(NAMESPACE))


async def measure(
    engine: MemoryEngine, store: Store, clients: int, seconds: float
) -> dict[str, Any]:
    """Every latency figure of one engine loaded with ``store``."""
    queries = store.queries
    out: dict[str, Any] = {
        "backends": {
            "l1": engine.tiers.hot.name,
            "l2": engine.vectors.name,
            "l3": engine.tiers.facts.name,
        },
        "load_average_1m_before": os.getloadavg()[0],
    }
    warm = (request(f"warm-up: {q}") for q in queries)
    await timed(warm, engine.search, min(seconds, 10.0), min_samples=3)
    hits_before = engine.router.l1_hits
    vectors = engine.embedder.embedder.embed(queries)
    await fresh_l1(engine)
    out.update(await one_client(engine, store, vectors, ONE_CLIENT_PHASES * seconds))
    await fresh_l1(engine)
    out.update(await concurrent(engine, queries, clients, seconds))
    out["l1_hits_while_measured"] = engine.router.l1_hits - hits_before
    out["recall_at_10"] = await recall(engine, store, vectors, seconds)
    out["l1_hit_p50_us"] = await l1_latency(engine, store.ids[0])
    out["load_average_1m_after"] = os.getloadavg()[0]
    out["targets_met"] = {key: out[key] <= limit for key, limit in TARGETS_MS.items()}
    return out


async def one_client(
    engine: MemoryEngine, store: Store, vectors: np.ndarray, seconds: float
) -> dict[str, Any]:
    """One caller: per query, each search mode end to end and each piece of a hybrid search
    alone (embedding, L2 query, L3 keyword query, fetch of 10 hits), in an order that rotates
    from query to query, so that every figure sees the same load from the rest of the machine.
    """
    query = Query(namespace=NAMESPACE)
    facts = engine.tiers.facts
    ids = store.ids
    step = max(10, len(ids) // len(store.queries))

    def calls(i: int, text: str, vector: np.ndarray) -> dict[str, Callable[[], Awaitable[Any]]]:
        return {
            "alone.embed_": lambda: engine.embedder.embed_one(text),
            "alone.vector_": lambda: engine.vectors.search(vector, query, DEPTH),
            "alone.keyword_": lambda: facts.keyword_search(
                keywords.query_terms(text), query, DEPTH
            ),
            "alone.fetch_10_": lambda: facts.get_many(ids[i * step : i * step + 10]),
            "search_": lambda: engine.search(request(text)),
            "search_vector_": lambda: engine.search(request(text, "vector")),
            "search_keyword_": lambda: engine.search(request(text, "keyword")),
        }

    times: dict[str, list[float]] = {}
    started = time.perf_counter()
    for i, (text, vector) in enumerate(zip(store.queries, vectors, strict=True)):
        todo = calls(i, text, vector)
        names = list(todo)
        for name in names[i % len(names) :] + names[: i % len(names)]:
            t0 = time.perf_counter()
            await todo[name]()
            times.setdefault(name, []).append(1000 * (time.perf_counter() - t0))
        if i + 1 >= MIN_SAMPLES and time.perf_counter() - started >= seconds:
            break
    out: dict[str, Any] = {"alone": {}}
    for name, values in times.items():
        if name.startswith("alone."):
            out["alone"].update(summary(values, name.removeprefix("alone.")))
        else:
            out.update(summary(values, name))
    return out


async def concurrent(
    engine: MemoryEngine, queries: list[str], clients: int, seconds: float
) -> dict[str, Any]:
    """``clients`` callers searching at once, each taking the next distinct query."""
    times: list[float] = []
    pending = iter(queries)
    started = time.perf_counter()

    async def client() -> None:
        for query in pending:
            t0 = time.perf_counter()
            await engine.search(request(query))
            times.append(1000 * (time.perf_counter() - t0))
            enough = len(times) >= max(MIN_SAMPLES, clients)
            if enough and time.perf_counter() - started >= seconds:
                return

    async with anyio.create_task_group() as tg:
        for _ in range(clients):
            tg.start_soon(client)
    elapsed = time.perf_counter() - started
    return {
        "concurrent_clients": clients,
        **summary(times, "concurrent_"),
        "concurrent_searches_per_s": len(times) / elapsed,
    }


async def recall(engine: MemoryEngine, store: Store, vectors: np.ndarray, seconds: float) -> float:
    """Mean overlap of L2's top 10 with exact brute force over the same vectors."""
    matrix, ids = store.matrix, store.ids
    query = Query(namespace=NAMESPACE)
    overlaps: list[float] = []

    async def one(vector: np.ndarray) -> None:
        exact = {ids[i] for i in np.argsort(-(matrix @ vector))[:10]}
        found = {d for d, _ in await engine.vectors.search(vector, query, 10)}
        overlaps.append(len(exact & found) / 10)

    await timed(vectors, one, seconds)
    return float(np.mean(overlaps))


async def l1_latency(engine: MemoryEngine, ident: str) -> float:
    """Median microseconds of a ``get`` that L1 answers."""
    req = s.GetRequest(id=ident)
    await engine.get(req)
    times: list[float] = []
    for _ in range(2000):
        started = time.perf_counter()
        await engine.get(req)
        times.append(1e6 * (time.perf_counter() - started))
    return float(np.percentile(times, 50))
