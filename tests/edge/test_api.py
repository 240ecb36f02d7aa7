"""The HTTP API: POST /v1/{service}/{endpoint} is one bus request; errors map to statuses."""

from __future__ import annotations

import anyio
import httpx
import pytest

from bus import Settings
from edge.app import health
from edge.config import EdgeSettings
from edge.runtime import open_edge
from tests.edge.agents import EchoAgent
from tests.edge.conftest import RunningEdge, edge_settings_for_tests, start_edge, token_client

pytestmark = pytest.mark.anyio


async def test_api_call_returns_the_agent_reply(http: httpx.AsyncClient) -> None:
    response = await http.post("/v1/echo/say", json={"text": "ab", "times": 2})
    assert response.status_code == 200
    assert response.json() == {"text": "abab"}
    assert response.headers["content-type"] == "application/json"


@pytest.mark.parametrize(
    ("path", "body", "status", "fragment"),
    [
        ("/v1/echo/say", {"times": 2}, 400, "$.text: required field is missing"),
        ("/v1/echo/say", {"text": 5}, 400, "$.text: must be string"),
        ("/v1/echo/say", {"text": "a", "tmes": 2}, 400, "$.tmes: unknown field"),
        ("/v1/echo/say", {"text": "a", "times": -1}, 400, "times: must be 0 or more"),
        ("/v1/echo/find", {"query": "zz"}, 404, "nothing matches 'zz'"),
        ("/v1/echo/crash", {"text": "a"}, 500, "internal error"),
        ("/v1/echo/hidden", {}, 404, "no such public endpoint"),
        ("/v1/nobody/home", {}, 404, "no such public endpoint"),
    ],
    ids=[
        "missing-field",
        "wrong-type",
        "misspelled-field",
        "agent-400",
        "agent-404",
        "agent-500",
        "not-public",
        "unknown",
    ],
)
async def test_api_errors_map_to_status_and_body(
    http: httpx.AsyncClient, path: str, body: dict[str, object], status: int, fragment: str
) -> None:
    response = await http.post(path, json=body)
    assert response.status_code == status
    assert response.json()["code"] == status
    assert fragment in response.json()["error"]
    assert "hunter2" not in response.text


async def test_api_error_texts_never_echo_the_request(http: httpx.AsyncClient) -> None:
    secret = "sk-live-abcdefghijklmnopqrstuvwxyz"
    unknown = await http.post(f"/v1/{secret}/x", json={})
    bad_type = await http.post("/v1/echo/say", json={"text": "a", "times": secret})
    assert unknown.status_code == 404 and bad_type.status_code == 400
    assert secret not in unknown.text and secret not in bad_type.text


@pytest.mark.parametrize(
    ("method", "path", "status"),
    [("GET", "/nowhere", 404), ("GET", "/v1/echo/say", 405), ("PUT", "/mcp", 405)],
    ids=["unknown-path", "wrong-method", "wrong-method-mcp"],
)
async def test_router_refusals_are_the_json_error_body(
    http: httpx.AsyncClient, method: str, path: str, status: int
) -> None:
    response = await http.request(method, path)
    assert response.status_code == status
    assert response.headers["content-type"] == "application/json"
    assert response.json() == {
        "error": "not found" if status == 404 else "method not allowed",
        "code": status,
    }


async def test_api_malformed_json_is_400(http: httpx.AsyncClient) -> None:
    response = await http.post("/v1/echo/say", content=b"{not json")
    assert response.status_code == 400
    assert response.json()["error"].startswith("body: JSON is malformed")


async def test_a_call_naming_a_longer_timeout_s_is_waited_for(
    settings: Settings, echo: EchoAgent, token: str
) -> None:
    """SOPHIA_EDGE_CALL_TIMEOUT_S bounds a call, unless the call asks for longer itself (as
    ``tasks_wait`` does): then the edge waits that long, and a few seconds for the reply."""
    async with anyio.create_task_group() as tg:
        edge = await start_edge(tg, settings, edge_settings_for_tests(edge_call_timeout_s=0.5))
        async with token_client(edge.url, token) as client:
            cut = await client.post("/v1/echo/slow", json={"steps": 0, "wait_s": 1.5})
            waited = await client.post(
                "/v1/echo/slow", json={"steps": 0, "wait_s": 1.5, "timeout_s": 2}
            )
        tg.cancel_scope.cancel()
    assert cut.status_code == 504, cut.text
    assert "echo_slow did not answer in time" in cut.json()["error"]
    assert waited.status_code == 200, waited.text


async def test_health_and_readiness(edge: RunningEdge) -> None:
    async with httpx.AsyncClient(base_url=edge.url) as client:
        health = await client.get("/healthz")
        ready = await client.get("/readyz")
    assert health.status_code == 200
    assert health.json() == {"status": "ok", "nats": "connected"}
    assert ready.status_code == 200
    assert ready.json() == {"status": "ready", "nats": True, "services": ["echo"]}


async def test_health_says_down_once_the_bus_connection_has_ended(
    settings: Settings, edge_settings: EdgeSettings
) -> None:
    async with open_edge(settings, edge_settings) as edge:
        before = health(edge)
        await edge.bus.nc.close()  # as when nats-py gives reconnecting up
        with anyio.fail_after(5):
            await edge.lost.wait()
        after = health(edge)
    assert before == (200, {"status": "ok", "nats": "connected"})
    assert after == (503, {"status": "down", "nats": "closed"})
