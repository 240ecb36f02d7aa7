"""Fixtures of the memory tests: one embedder per session, engines over each backend set."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator, Callable
from pathlib import Path

import asyncpg
import pytest
import redis.asyncio as aioredis

from memory.config import MemorySettings
from memory.embedder import Embedder
from memory.engine import MemoryEngine
from tests.fixtures.stores import Postgres

BACKENDS = ["embedded", "servers", "qdrant-local"]


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@pytest.fixture(scope="session")
def embedder(tmp_path_factory: pytest.TempPathFactory) -> Embedder:
    """The real ONNX embedder as the engine builds it (int8 on CPU), loaded once, two threads."""
    return Embedder(threads=2, quantize_dir=tmp_path_factory.mktemp("models"))


async def _fresh_database(pg: Postgres) -> str:
    name = f"t{uuid.uuid4().hex[:12]}"
    conn = await asyncpg.connect(pg.dsn)
    try:
        await conn.execute(f'CREATE DATABASE "{name}"')
    finally:
        await conn.close()
    return pg.dsn.rsplit("/", 1)[0] + "/" + name


@pytest.fixture(params=BACKENDS)
def backend(request: pytest.FixtureRequest) -> str:
    return request.param


@pytest.fixture
async def make_settings(
    backend: str, tmp_path: Path, request: pytest.FixtureRequest
) -> Callable[..., MemorySettings]:
    """Settings for the backend set under test; the server set gets a fresh db and bucket."""
    base: dict[str, object] = {"home": str(tmp_path / "home")}
    if backend in ("servers", "qdrant-local"):
        redis_url: str = request.getfixturevalue("redis_url")
        client = aioredis.from_url(redis_url)
        await client.flushdb()  # every test starts with an empty L1
        await client.aclose()
        pg: Postgres = request.getfixturevalue("postgres")
        s3: str = request.getfixturevalue("s3_endpoint")
        base.update(
            redis_url=redis_url,
            postgres_dsn=await _fresh_database(pg),
            s3_bucket=f"b{uuid.uuid4().hex[:12]}",
            s3_endpoint_url=s3,
            s3_access_key_id="test",
            s3_secret_access_key="test",
        )
    if backend == "qdrant-local":
        base["qdrant_url"] = ":memory:"

    def make(**overrides: object) -> MemorySettings:
        return MemorySettings(**{**base, **overrides})  # type: ignore[arg-type]

    return make


@pytest.fixture
async def engine(
    make_settings: Callable[..., MemorySettings], embedder: Embedder
) -> AsyncIterator[MemoryEngine]:
    async with MemoryEngine(make_settings(), embedder=embedder) as eng:
        yield eng
