"""``sophia token``: the token on stdout alone, stored hashed, revoked by name."""

from __future__ import annotations

import hashlib

import anyio
import msgspec
import nats
import pytest

from bus import Settings
from bus.schemas.edge import TokenRecord
from ops.cli import main
from tests.edge.conftest import MakeToken, RunningEdge, token_client


@pytest.fixture
def env(settings: Settings, monkeypatch: pytest.MonkeyPatch) -> Settings:
    monkeypatch.setenv("SOPHIA_NATS_URL", settings.nats_url)
    monkeypatch.setenv("SOPHIA_PREFIX", settings.prefix)
    monkeypatch.setenv("SOPHIA_HOME", settings.home)
    return settings


def stored(settings: Settings, name: str) -> bytes:
    async def read() -> bytes:
        nc = await nats.connect(settings.nats_url)
        try:
            kv = await nc.jetstream().key_value(f"{settings.prefix}_config")
            return (await kv.get(f"edge.tokens.{name}")).value or b""
        finally:
            await nc.close()

    return anyio.run(read)


def test_token_create_prints_the_token_alone_and_stores_its_hash(
    env: Settings, capsys: pytest.CaptureFixture[str]
) -> None:
    status = main(["token", "create", "ci", "--scope", "echo", "--scope", "memory:read"])
    out = capsys.readouterr().out
    token = out.strip()
    record = msgspec.json.decode(stored(env, "ci"), type=TokenRecord)
    assert status == 0
    assert out == token + "\n"
    assert token.startswith("sph_") and len(token) > 40
    assert record.sha256 == hashlib.sha256(token.encode()).hexdigest()
    assert record.scopes == ["echo", "memory:read"]
    assert token not in stored(env, "ci").decode()


def test_token_ls_shows_names_never_tokens(
    env: Settings, capsys: pytest.CaptureFixture[str]
) -> None:
    main(["token", "create", "viewer", "--tools", "memory_*"])
    token = capsys.readouterr().out.strip()
    status = main(["token", "ls"])
    out, err = capsys.readouterr()
    assert status == 0
    assert err == ""  # nats-py's "Server may ignore filters" and the like never reach a user
    assert "viewer" in out and "memory_*" in out
    assert token not in out and hashlib.sha256(token.encode()).hexdigest() not in out


@pytest.mark.parametrize(
    ("argv", "status", "message"),
    [
        (["token", "create", "bad name"], 2, "token name"),
        (["token", "create", "ok", "--scope", "a:b:c"], 2, "scope: must be"),
        (["token", "revoke", "nobody"], 2, "no token named 'nobody'"),
    ],
    ids=["bad-name", "bad-scope", "revoke-unknown"],
)
def test_token_refusals_exit_2(
    env: Settings, capsys: pytest.CaptureFixture[str], argv: list[str], status: int, message: str
) -> None:
    assert main(argv) == status
    captured = capsys.readouterr()
    assert captured.out == ""
    assert message in captured.err


def test_token_create_twice_then_revoke(env: Settings, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["token", "create", "dup"]) == 0
    assert main(["token", "create", "dup"]) == 2
    assert "exists" in capsys.readouterr().err
    assert main(["token", "revoke", "dup"]) == 0
    assert main(["token", "revoke", "dup"]) == 2
    assert main(["token", "create", "dup"]) == 0


@pytest.mark.anyio
async def test_token_scopes_are_checked_against_running_services(
    env: Settings, echo: object, capsys: pytest.CaptureFixture[str]
) -> None:
    async def cli(*argv: str) -> int:
        return await anyio.to_thread.run_sync(main, list(argv))

    assert await cli("token", "create", "typo", "--scope", "echo:sya") == 2
    refused = capsys.readouterr()
    assert await cli("token", "create", "later", "--scope", "nosuchservice") == 0
    noted = capsys.readouterr()
    assert await cli("token", "create", "sayer", "--scope", "echo:say") == 0
    said = capsys.readouterr()
    assert await cli("token", "create", "reader", "--scope", "echo:read") == 2
    unread = capsys.readouterr()
    assert "echo has no endpoint sya (it has: " in refused.err and refused.out == ""
    assert "'nosuchservice', which is not running now" in noted.err
    assert noted.out.startswith("sph_")
    assert said.out.startswith("sph_") and said.err == ""
    assert "echo has no read-only endpoints" in unread.err


@pytest.mark.anyio
async def test_token_revoke_returns_once_every_edge_refuses_it(
    env: Settings, edge: RunningEdge, make_token: MakeToken
) -> None:

    for attempt in range(5):
        name = f"brief{attempt}"
        token = await make_token(name)
        async with token_client(edge.url, token) as client:
            assert await anyio.to_thread.run_sync(main, ["token", "revoke", name]) == 0
            after = await client.post("/v1/echo/say", json={"text": "a"})
        assert after.status_code == 401, f"attempt {attempt}: one call got through"
