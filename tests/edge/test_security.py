"""Refusals at the edge: 401, 403, 413, 429, bad JSON-RPC, foreign origins; serving goes on."""

from __future__ import annotations

from collections.abc import AsyncIterator

import anyio
import httpx
import pytest

from bus import Bus, Settings
from edge.tokens import revoke_token
from tests.edge.agents import EchoAgent
from tests.edge.clients import INITIALIZE, MCP_HEADERS
from tests.edge.conftest import (
    MakeToken,
    RunningEdge,
    edge_settings_for_tests,
    start_edge,
    token_client,
)

pytestmark = pytest.mark.anyio


async def still_serves(http: httpx.AsyncClient) -> None:
    response = await http.post("/v1/echo/say", json={"text": "still"})
    assert response.json() == {"text": "still"}


@pytest.mark.parametrize(
    ("authorization", "error"),
    [
        (None, "bearer token required"),
        ("Bearer sph_not-a-real-token", "bearer token not recognised (unknown or revoked)"),
        ("Bearer not-even-our-format", "bearer token not recognised (unknown or revoked)"),
        ("Basic dXNlcjpwYXNz", "bearer token required"),
        ("Bearer", "bearer token required"),
    ],
    ids=["missing", "unknown", "foreign", "not-bearer", "empty"],
)
@pytest.mark.parametrize(
    "path", ["/v1/echo/say", "/mcp", "/openapi.json"], ids=["api", "mcp", "doc"]
)
async def test_no_valid_token_is_401_saying_which(
    edge: RunningEdge, http: httpx.AsyncClient, authorization: str | None, error: str, path: str
) -> None:
    headers = {"Authorization": authorization} if authorization else {}
    async with httpx.AsyncClient(base_url=edge.url) as anonymous:
        response = await anonymous.request(
            "GET" if path == "/openapi.json" else "POST",
            path,
            json=INITIALIZE,
            headers={**headers, **MCP_HEADERS},
        )
    assert response.status_code == 401
    assert response.json() == {"error": error, "code": 401}
    assert response.headers["www-authenticate"].startswith("Bearer")
    await still_serves(http)


async def test_scope_outside_is_403_and_inside_is_served(
    edge: RunningEdge, make_token: MakeToken
) -> None:
    token = await make_token("sayer", scopes=["echo:say"])
    async with token_client(edge.url, token) as c:
        refused = await c.post("/v1/echo/find", json={"query": "x"})
        served = await c.post("/v1/echo/say", json={"text": "ok"})
    assert refused.status_code == 403
    assert refused.json() == {"error": "token 'sayer' may not call echo/find", "code": 403}
    assert served.json() == {"text": "ok"}


async def test_body_over_limit_is_413(edge: RunningEdge, http: httpx.AsyncClient) -> None:
    big = {"text": "x" * (2 * 1_048_576)}
    api = await http.post("/v1/echo/say", json=big)
    mcp = await http.post(
        "/mcp",
        json={**INITIALIZE, "params": {**INITIALIZE["params"], "pad": big}},
        headers=MCP_HEADERS,
    )
    assert api.status_code == 413
    assert mcp.status_code == 413
    assert api.json()["code"] == 413
    await still_serves(http)


async def test_body_over_limit_without_content_length_is_413(
    edge: RunningEdge, http: httpx.AsyncClient
) -> None:
    async def chunks() -> AsyncIterator[bytes]:
        yield b'{"text": "'
        for _ in range(40):
            yield b"x" * 65_536
        yield b'"}'

    response = await http.post("/v1/echo/say", content=chunks())
    assert response.status_code == 413
    await still_serves(http)


async def test_over_rate_is_429_with_retry_after_per_token(
    settings: Settings, echo: EchoAgent, make_token: MakeToken
) -> None:
    limits = edge_settings_for_tests(edge_rate_per_s=0.05, edge_rate_burst=5)
    first, other = await make_token("first"), await make_token("other")
    async with anyio.create_task_group() as tg:
        running = await start_edge(tg, settings, limits)
        async with (
            httpx.AsyncClient(
                base_url=running.url, headers={"Authorization": f"Bearer {first}"}
            ) as c1,
            httpx.AsyncClient(
                base_url=running.url, headers={"Authorization": f"Bearer {other}"}
            ) as c2,
        ):
            statuses = [
                (await c1.post("/v1/echo/say", json={"text": "a"})).status_code for _ in range(6)
            ]
            limited = await c1.post("/v1/echo/say", json={"text": "a"})
            served = await c2.post("/v1/echo/say", json={"text": "b"})
        tg.cancel_scope.cancel()
    assert statuses == [200] * 5 + [429]  # the burst, then the limit
    assert limited.status_code == 429
    assert int(limited.headers["retry-after"]) >= 1
    assert limited.json() == {"error": "rate limit exceeded", "code": 429}
    assert served.status_code == 200  # limits are per token


@pytest.mark.parametrize(
    ("body", "code"),
    [
        (b"{not json", -32700),
        (b'[{"jsonrpc": "2.0", "id": 1, "method": "ping"}]', -32600),
        (b'{"jsonrpc": "1.0", "id": 1, "method": "ping"}', -32600),
        (b'{"jsonrpc": "2.0", "id": 1}', -32600),
        (b'{"jsonrpc": "2.0", "id": 1, "method": "ping", "params": [1]}', -32600),
    ],
    ids=["not-json", "batch", "wrong-version", "no-method", "positional-params"],
)
async def test_malformed_json_rpc_is_400_and_serving_goes_on(
    edge: RunningEdge, http: httpx.AsyncClient, body: bytes, code: int
) -> None:
    response = await http.post(
        "/mcp", content=body, headers={**MCP_HEADERS, "Content-Type": "application/json"}
    )
    assert response.status_code == 400
    assert response.json()["error"]["code"] == code
    assert response.json()["jsonrpc"] == "2.0"
    initialized = await http.post("/mcp", json=INITIALIZE, headers=MCP_HEADERS)
    assert initialized.status_code == 200
    assert "mcp-session-id" in initialized.headers


async def test_unknown_session_is_404_and_missing_session_is_400(
    edge: RunningEdge, http: httpx.AsyncClient
) -> None:
    ping = {"jsonrpc": "2.0", "id": 2, "method": "ping"}
    unknown = await http.post(
        "/mcp", json=ping, headers={**MCP_HEADERS, "Mcp-Session-Id": "0" * 32}
    )
    missing = await http.post("/mcp", json=ping, headers=MCP_HEADERS)
    assert unknown.status_code == 404
    assert missing.status_code == 400


async def test_session_of_another_token_is_404(
    edge: RunningEdge, http: httpx.AsyncClient, make_token: MakeToken
) -> None:
    opened = await http.post("/mcp", json=INITIALIZE, headers=MCP_HEADERS)
    session = opened.headers["mcp-session-id"]
    other = await make_token("intruder")
    async with token_client(edge.url, other) as c:
        response = await c.post(
            "/mcp",
            json={"jsonrpc": "2.0", "id": 2, "method": "ping"},
            headers={**MCP_HEADERS, "Mcp-Session-Id": session},
        )
    assert response.status_code == 404


async def test_foreign_origin_is_403_without_cors(
    edge: RunningEdge, http: httpx.AsyncClient
) -> None:
    response = await http.post(
        "/v1/echo/say", json={"text": "a"}, headers={"Origin": "https://evil.example"}
    )
    assert response.status_code == 403
    assert "access-control-allow-origin" not in response.headers


async def test_configured_origin_gets_cors_headers(
    settings: Settings, echo: EchoAgent, make_token: MakeToken
) -> None:
    origin = "https://app.example"
    async with anyio.create_task_group() as tg:
        running = await start_edge(tg, settings, edge_settings_for_tests(edge_cors_origins=origin))
        token = await make_token()
        async with token_client(running.url, token) as c:
            preflight = await c.options(
                "/v1/echo/say",
                headers={"Origin": origin, "Access-Control-Request-Method": "POST"},
            )
            response = await c.post("/v1/echo/say", json={"text": "a"}, headers={"Origin": origin})
        tg.cancel_scope.cancel()
    assert preflight.status_code == 200
    assert response.status_code == 200
    assert response.headers["access-control-allow-origin"] == origin


async def test_revoked_token_is_refused_at_once(
    edge: RunningEdge, bus: Bus, make_token: MakeToken
) -> None:
    token = await make_token("short-lived")
    async with token_client(edge.url, token) as c:
        before = await c.post("/v1/echo/say", json={"text": "a"})
        await revoke_token(await bus.js.key_value(bus.subjects.config_bucket), "short-lived")
        with anyio.fail_after(5):
            while (await c.post("/v1/echo/say", json={"text": "a"})).status_code != 401:  # noqa: ASYNC110
                await anyio.sleep(0.02)
    assert before.status_code == 200


async def test_a_body_of_the_edge_limit_is_a_413_and_the_edge_stays_on_the_bus(
    edge: RunningEdge, make_token: MakeToken
) -> None:
    token = await make_token("reader", scopes=["echo:say"])
    limit = 1_048_576  # the edge's default body limit, and the bus's max_payload
    body = b'{"text": "' + b"x" * (limit - 12) + b'"}'
    assert len(body) == limit
    async with token_client(edge.url, token, timeout=30) as c:
        api = await c.post("/v1/echo/say", content=body)
        mcp = await c.post("/mcp", content=body, headers=MCP_HEADERS)
        fits = await c.post("/v1/echo/say", json={"text": "x" * (limit - 8192)})
        health = await c.get("/healthz")
        after = await c.post("/v1/echo/say", json={"text": "still"})
    assert api.status_code == 413 and mcp.status_code == 413
    assert api.json()["error"].startswith("body: over the limit of")
    assert fits.status_code == 200  # under the limit, headers and all: the bus carries it
    assert health.json() == {"status": "ok", "nats": "connected"}
    assert after.json() == {"text": "still"}


async def test_token_tool_limit_holds_on_every_transport(
    edge: RunningEdge, make_token: MakeToken
) -> None:
    token = await make_token("sayer-only", tools=["echo_say"])
    async with token_client(edge.url, token) as c:
        api = await c.post("/v1/echo/find", json={"query": "x"})
        allowed = await c.post("/v1/echo/say", json={"text": "ok"})
    assert api.status_code == 403
    assert allowed.json() == {"text": "ok"}
