"""Secrets never reach a tier or a log: canary values are stored, then looked for everywhere."""

from __future__ import annotations

import logging
from pathlib import Path

import asyncpg
import pytest
import redis.asyncio as aioredis

from bus.schemas import memory as s
from memory.engine import MemoryEngine
from memory.redact import redact, redact_value

pytestmark = pytest.mark.anyio

CANARIES = {
    "aws-access-key": "AKIACANARY0000000042",
    "aws-secret": "wJalrXUtnFEMIcanaryK7MDENGbPxRfiCYEXAMPLE",
    "github-token": "ghp_canaryAAAABBBBCCCCDDDDEEEEFFFFGGGG1234",
    "openai-key": "sk-proj-canaryZZZZYYYYXXXXWWWWVVVV",
    "slack-token": "xoxb-canary-1234567890-abcdefghij",
    "url-password": "CanaryPassw0rd",
    "env-secret": "canary-env-value-77",
    "private-key": "MIIEcanaryPRIVATEkeyMATERIAL",
    "bearer": "canaryBearerTokenValue0123456789",
    "jwt": "eyJhbGciOiJIUzI1NiJ9.eyJjYW5hcnkiOiJ5ZXMifQ.c2lnbmF0dXJlY2FuYXJ5",
}

SECRET_TEXT = f"""Deploy notes for the billing service.
export AWS_ACCESS_KEY_ID={CANARIES["aws-access-key"]}
AWS_SECRET_ACCESS_KEY={CANARIES["aws-secret"]}
GITHUB_TOKEN="{CANARIES["github-token"]}"
client = OpenAI(api_key="{CANARIES["openai-key"]}")
slack: {CANARIES["slack-token"]}
DATABASE_URL=postgres://billing:{CANARIES["url-password"]}@db.internal:5432/billing
STRIPE_WEBHOOK_SECRET={CANARIES["env-secret"]}
-----BEGIN OPENSSH PRIVATE KEY-----
{CANARIES["private-key"]}
-----END OPENSSH PRIVATE KEY-----
curl -H "Authorization: Bearer {CANARIES["bearer"]}" https://api.internal/
session cookie {CANARIES["jwt"]}
The retry policy keeps three attempts.
"""


@pytest.mark.parametrize("label", sorted(CANARIES), ids=sorted(CANARIES))
def test_redact_removes_each_kind_of_secret(label: str) -> None:
    clean, count = redact(SECRET_TEXT)
    assert CANARIES[label] not in clean
    assert count >= len(CANARIES) - 1  # the key id and secret share one env block
    assert "The retry policy keeps three attempts." in clean


@pytest.mark.parametrize(
    "code",
    [
        "token = get_token()",
        "def password_hash(pw: str) -> str: ...",
        "if api_key is None:\n    raise ValueError('api_key: missing')",
        "url = 'https://example.com/path?page=2'",
    ],
    ids=["call", "def", "check", "url-without-password"],
)
def test_redact_leaves_code_without_secrets_alone(code: str) -> None:
    assert redact(code) == (code, 0)


def test_redact_value_cleans_nested_metadata() -> None:
    value, count = redact_value({"notes": [f"key {CANARIES['aws-access-key']}"], "n": 3})
    assert CANARIES["aws-access-key"] not in str(value)
    assert (count, value["n"]) == (1, 3)


async def _write_everywhere(engine: MemoryEngine, tmp_path: Path) -> None:
    meta = {"note": f"token {CANARIES['github-token']}", "path": "deploy/notes.md"}
    stored = await engine.store(s.StoreRequest(text=SECRET_TEXT, kind="doc", metadata=meta))
    assert stored.redactions >= len(CANARIES)
    big = SECRET_TEXT + "filler line about retries\n" * 2000  # archived in L4
    await engine.store(s.StoreRequest(text=big, kind="session"))
    await engine.get(s.GetRequest(id=stored.id))
    await engine.search(s.SearchRequest(query=f"aws key {CANARIES['aws-access-key']}"))
    await engine.session_save(
        s.SessionSaveRequest(session_id="c1", summary=SECRET_TEXT, context={"env": SECRET_TEXT})
    )
    await engine.session_save(s.SessionSaveRequest(session_id="c1", summary="again", context={}))
    await engine.session_load(s.SessionLoadRequest(session_id="c1"))
    await engine.cache_put(s.CachePutRequest(model="m", prompt=SECRET_TEXT, response=SECRET_TEXT))
    await engine.cache_lookup(s.CacheLookupRequest(model="m", prompt=SECRET_TEXT))
    repo = tmp_path / "repo"
    repo.mkdir()
    (repo / ".env").write_text(SECRET_TEXT)
    (repo / "settings.py").write_text(f'API_KEY = "{CANARIES["openai-key"]}"\n')
    await engine.index(s.IndexRequest(path=str(repo), namespace="repo"))


async def _server_dump(engine: MemoryEngine) -> bytes:
    cfg = engine.settings
    out = bytearray()
    r = aioredis.from_url(cfg.redis_url)
    async for key in r.scan_iter(match="*"):
        out += key + (await r.get(key) or b"")
    await r.aclose()
    conn = await asyncpg.connect(cfg.postgres_dsn)
    for table in ("items", "sessions", "cache_entries", "files", "meta"):
        for row in await conn.fetch(f"SELECT * FROM {table}"):
            out += repr(tuple(row)).encode()
    await conn.close()
    archive = engine.tiers.archive
    paginator = archive._client.get_paginator("list_objects_v2")  # type: ignore[attr-defined]
    async for page in paginator.paginate(Bucket=cfg.s3_bucket):
        for obj in page.get("Contents", []):
            out += await archive.get(obj["Key"][len(cfg.s3_prefix) :]) or b""
    return bytes(out)


def _files_dump(root: Path) -> bytes:
    return b"".join(p.read_bytes() for p in root.rglob("*") if p.is_file())


async def test_canaries_are_unreadable_from_every_tier_and_log(
    engine: MemoryEngine, backend: str, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    await _write_everywhere(engine, tmp_path)
    payloads = repr(await _l2_payloads(engine)).encode()
    dump = (
        _files_dump(engine.settings.data_path)
        if backend == "embedded"
        else await _server_dump(engine)
    )
    await engine.close()
    dump += _files_dump(engine.settings.data_path) if engine.settings.data_path.exists() else b""
    leaked = [
        label
        for label, canary in CANARIES.items()
        if canary.encode() in dump + payloads or canary in caplog.text
    ]
    assert leaked == []
    assert len(dump) > 1000  # the dump did read the stores


async def _l2_payloads(engine: MemoryEngine) -> list[object]:
    return [*await engine.vectors.payloads(), *await engine.cache.vectors.payloads()]
