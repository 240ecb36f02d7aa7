"""Secrets never reach a tier or a log: canary values are stored, then looked for everywhere.

The shapes redaction must catch and the look-alikes it must keep are data
(``tests/data/secret_shapes.json``); ``bench/redaction.py`` reports the same rates and the speed.
"""

from __future__ import annotations

import json
import logging
import os
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any
from urllib.parse import quote

import asyncpg
import pytest
import redis.asyncio as aioredis

from bus.errors import BadRequestError
from bus.schemas import memory as s
from memory.chunking import chunk_file
from memory.engine import MemoryEngine
from memory.redact import find_secret, redact, redact_identifier, redact_value
from memory.secret_env import refresh_environment

pytestmark = pytest.mark.anyio

SHAPES = json.loads((Path(__file__).parents[1] / "data" / "secret_shapes.json").read_text())
SECRETS: list[dict[str, Any]] = SHAPES["secrets"]
LOOKALIKES: list[dict[str, Any]] = SHAPES["lookalikes"]


def _ids(samples: list[dict[str, Any]]) -> list[str]:
    return [f"{i:02d}-{x['label']}-{x['context']}" for i, x in enumerate(samples)]


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

#: a canary shaped like the issue's report: a secret's name mid-line, in prose
MID_LINE = "Zr8Qm2kP9vXy4Lt7Wn1Bc5Hd3Fg6Js0Ka2Vb8Nm"
KEY_ID = "AKIAQ4CANARYZZ7PLMN2"


# -- the shapes and the look-alikes ---------------------------------------------------------


@pytest.mark.parametrize("sample", SECRETS, ids=_ids(SECRETS))
def test_redact_replaces_every_secret_shape(sample: dict[str, Any]) -> None:
    clean, count = redact(sample["text"])
    assert [v for v in sample["secrets"] if v in clean] == []
    assert count >= 1
    assert clean.count("\n") == sample["text"].count("\n")  # later lines keep their numbers


@pytest.mark.parametrize("sample", LOOKALIKES, ids=_ids(LOOKALIKES))
def test_redact_keeps_every_lookalike(sample: dict[str, Any]) -> None:
    assert redact(sample["text"]) == (sample["text"], 0)


def test_redact_rates_over_the_shape_set_are_total() -> None:
    caught = [s for s in SECRETS if not any(v in redact(s["text"])[0] for v in s["secrets"])]
    kept = [s for s in LOOKALIKES if redact(s["text"])[0] == s["text"]]
    assert len(SECRETS) >= 60
    assert len(LOOKALIKES) >= 40
    assert (len(caught) / len(SECRETS), len(kept) / len(LOOKALIKES)) == (1.0, 1.0)


@pytest.mark.parametrize("sample", SECRETS, ids=_ids(SECRETS))
def test_redact_twice_changes_nothing_more(sample: dict[str, Any]) -> None:
    clean, _ = redact(sample["text"])
    assert redact(clean) == (clean, 0)


def test_redact_a_key_split_across_chunks_leaves_no_key_line() -> None:
    pem = next(x for x in SECRETS if x["context"] == "pem")
    source = "# deploy key, do not commit\n" + pem["text"] + "def load():\n    return KEY\n"
    chunks = chunk_file("deploy/id_rsa.txt", source, lines=10, overlap=2)
    redacted = "\n".join(redact(c.text)[0] for c in chunks)
    assert len(chunks) >= 3  # the key's lines are spread over several chunks
    assert [line for line in pem["secrets"] if line in redacted] == []
    assert "def load():" in redacted


def test_redact_takes_bare_64_column_base64_for_key_material() -> None:
    # A decision: a run of 64-column base64 lines with no header is what a chunk from the
    # middle of a PEM key looks like, so it goes; 76-column MIME and one-line blobs stay.
    block = next(x for x in SECRETS if x["context"] == "pem-middle")["text"]
    clean, count = redact("fixture = '''\n" + block + "'''\n")
    assert (clean, count) == ("fixture = '''\n[REDACTED:private-key]" + "\n" * 20 + "'''\n", 1)


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


def test_redact_time_stays_linear_on_hostile_input() -> None:
    hostile = [
        "password=" * 20_000,
        "%3A%2F%2F" * 20_000,
        "-----BEGIN RSA PRIVATE KEY-----\n" + "A" * 200_000,
        ("Ab1" * 21 + "C\n") * 3_000,
        "a" * 200_000,
    ]
    started = time.perf_counter()
    for text in hostile:
        redact(text)
    assert time.perf_counter() - started < 5.0  # about 0.5 s here; quadratic would be minutes


# -- values and identifiers -----------------------------------------------------------------


def test_redact_value_cleans_nested_metadata() -> None:
    value, count = redact_value({"notes": [f"key {CANARIES['aws-access-key']}"], "n": 3})
    assert CANARIES["aws-access-key"] not in str(value)
    assert (count, value["n"]) == (1, 3)


def test_redact_value_cleans_keys_and_values_under_secret_names() -> None:
    value, count = redact_value(
        {f"k_{KEY_ID}": 1, "db_password": "hunter2!x", "title": "Retry policy", "n": 2}
    )
    assert value == {
        "k_[REDACTED:aws-access-key]": 1,
        "db_password": "[REDACTED:assigned-secret]",
        "title": "Retry policy",
        "n": 2,
    }
    assert count == 2


def test_redact_value_keeps_both_keys_that_redact_alike() -> None:
    other = "AKIAQ4CANARYZZ7PLMN3"
    value, count = redact_value({f"k_{KEY_ID}": 1, f"k_{other}": 2})
    assert sorted(value.values()) == [1, 2]
    assert count == 2


@pytest.mark.parametrize(
    ("value", "label"),
    [
        (f"repo-{KEY_ID}", "aws-access-key"),
        ("sess_ghp_canaryAAAABBBBCCCCDDDDEEEEFFFFGGGG1234", "github-token"),
        ("token=Zr8Qm2kP9vXy4Lt7", "assigned-secret"),
        ("billing", None),
        ("3fa85f64-5717-4562-b3fc-2c963f66afa6", None),
        ("9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08", None),
    ],
    ids=["key-id", "github", "assignment", "word", "uuid", "sha256"],
)
def test_find_secret_names_what_an_identifier_holds(value: str, label: str | None) -> None:
    assert find_secret(value) == label


def test_redact_identifier_replaces_the_secret_in_a_path_only() -> None:
    path = f"deploy/{KEY_ID}.json"
    assert redact_identifier(path) == "deploy/[REDACTED:aws-access-key].json"
    assert redact_identifier("memory/redact.py") == "memory/redact.py"


# -- through the engine ---------------------------------------------------------------------


async def test_store_redacts_a_secret_assigned_mid_line(engine: MemoryEngine) -> None:
    text = f"note: AWS_SECRET_ACCESS_KEY={MID_LINE} for the billing export job"
    stored = await engine.store(s.StoreRequest(text=text, namespace="ops", kind="doc"))
    found = await engine.search(s.SearchRequest(query="billing export job key", namespace="ops"))
    item = await engine.get(s.GetRequest(id=stored.id))
    assert stored.redactions > 0
    assert [h.id for h in found.hits][:1] == [stored.id]
    assert MID_LINE not in repr(found) + repr(item)


async def test_store_redacts_metadata_keys(engine: MemoryEngine) -> None:
    meta = {f"k_{KEY_ID}": "v", "db_password": "hunter2hunter2"}
    stored = await engine.store(s.StoreRequest(text="export notes", metadata=meta))
    item = await engine.get(s.GetRequest(id=stored.id))
    assert KEY_ID not in repr(item)
    assert "hunter2hunter2" not in repr(item)
    assert stored.redactions == 2


_CANARY_ID = f"team-{KEY_ID}"


def _refused_calls(engine: MemoryEngine, repo: Path) -> dict[str, Any]:
    ns, sid = {"namespace": _CANARY_ID}, {"session_id": _CANARY_ID}
    return {
        "store": lambda: engine.store(s.StoreRequest(text="x", **ns)),
        "search": lambda: engine.search(s.SearchRequest(query="x", **ns)),
        "index": lambda: engine.index(s.IndexRequest(path=str(repo), **ns)),
        "index-dir-name": lambda: engine.index(s.IndexRequest(path=str(repo / _CANARY_ID))),
        "stats": lambda: engine.stats(s.StatsRequest(**ns)),
        "session-save-namespace": lambda: engine.session_save(
            s.SessionSaveRequest(session_id="c1", **ns)
        ),
        "session-save-id": lambda: engine.session_save(s.SessionSaveRequest(**sid)),
        "session-load-id": lambda: engine.session_load(s.SessionLoadRequest(**sid)),
        "cache-put-scope": lambda: engine.cache_put(
            s.CachePutRequest(model="m", prompt="p", response="r", scope=_CANARY_ID)
        ),
        "cache-lookup-model": lambda: engine.cache_lookup(
            s.CacheLookupRequest(model=_CANARY_ID, prompt="p")
        ),
    }


_REFUSALS = {
    "store": "namespace",
    "search": "namespace",
    "index": "namespace",
    "index-dir-name": "namespace",
    "stats": "namespace",
    "session-save-namespace": "namespace",
    "session-save-id": "session_id",
    "session-load-id": "session_id",
    "cache-put-scope": "scope",
    "cache-lookup-model": "model",
}


# the check comes before any I/O, so one backend set says it for all
@pytest.mark.parametrize("backend", ["embedded"])
@pytest.mark.parametrize("call", sorted(_REFUSALS), ids=sorted(_REFUSALS))
async def test_identifier_holding_a_secret_is_refused_naming_the_field(
    engine: MemoryEngine, tmp_path: Path, call: str
) -> None:
    (tmp_path / _CANARY_ID).mkdir()
    with pytest.raises(BadRequestError) as info:
        await _refused_calls(engine, tmp_path)[call]()
    assert info.value.code == 400
    assert info.value.description.startswith(f"{_REFUSALS[call]}:")
    assert KEY_ID not in info.value.description


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


@contextmanager
def planted(name: str, value: str) -> Iterator[None]:
    """``name=value`` in this process's environment, read by redaction, then as it was."""
    before = os.environ.get(name)
    os.environ[name] = value
    refresh_environment()
    try:
        yield
    finally:
        if before is None:
            del os.environ[name]
        else:
            os.environ[name] = before
        refresh_environment()


def test_redact_replaces_a_bare_secret_of_the_environment() -> None:
    bare = "q7Vx2LmZp9Rt4Kw8Nc3Bf6Hd"  # no known shape: found only as the environment's
    with planted("SOPHIA_CANARY_TOKEN", bare):
        assert redact(f"the server said {bare} and stopped")[0] == (
            "the server said [REDACTED:environment-secret] and stopped"
        )
        assert bare not in redact(f"glued{bare}glued, in a URL: a?k={bare}")[0]
    assert redact(f"the server said {bare}")[0] == f"the server said {bare}"


def test_redact_finds_an_environment_secret_url_encoded() -> None:
    value = "pk/Zq+8wR2=mN4xT7vY1bC"
    with planted("PORTKEY_API_KEY", value):
        assert redact(f"GET /x?key={quote(value, safe='')} 200")[0] == (
            "GET /x?key=[REDACTED:environment-secret] 200"
        )


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("POSTGRES_PASSWORD", "postgres"),  # short: an ordinary word elsewhere
        ("SOPHIA_HOME", "/home/someone/.sophia-data"),  # not a secret's name
        ("API_TOKEN", "your-api-token-goes-here"),  # a placeholder
    ],
)
def test_redact_leaves_what_the_environment_holds_that_is_no_secret(name: str, value: str) -> None:
    text = f"the value {value} in prose"
    with planted(name, value):
        assert redact(text)[0] == text
