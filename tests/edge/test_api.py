"""The HTTP API: POST /v1/{service}/{endpoint} is one bus request; errors map to statuses."""

from __future__ import annotations

import httpx
import pytest

from tests.edge.conftest import RunningEdge

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
        ("/v1/echo/say", {"text": 5}, 400, "$.text: 5 is not of type 'string'"),
        ("/v1/echo/say", {"text": "a", "times": -1}, 400, "times: must be 0 or more"),
        ("/v1/echo/find", {"query": "zz"}, 404, "nothing matches 'zz'"),
        ("/v1/echo/crash", {"text": "a"}, 500, "internal error"),
        ("/v1/echo/hidden", {}, 404, "no public endpoint echo/hidden"),
        ("/v1/nobody/home", {}, 404, "no public endpoint nobody/home"),
    ],
    ids=[
        "missing-field",
        "wrong-type",
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


async def test_api_malformed_json_is_400(http: httpx.AsyncClient) -> None:
    response = await http.post("/v1/echo/say", content=b"{not json")
    assert response.status_code == 400
    assert response.json()["error"].startswith("body: JSON is malformed")


async def test_health_and_readiness(edge: RunningEdge) -> None:
    async with httpx.AsyncClient(base_url=edge.url) as client:
        health = await client.get("/healthz")
        ready = await client.get("/readyz")
    assert health.status_code == 200
    assert ready.status_code == 200
    assert ready.json() == {"status": "ready", "nats": True, "services": ["echo"]}
