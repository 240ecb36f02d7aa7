"""GET /openapi.json: a valid OpenAPI 3.1 document generated from the endpoints' schemas."""

from __future__ import annotations

import httpx
import msgspec
import pytest
from openapi_spec_validator import validate

from tests.edge.agents import FindRequest, SayReply, SayRequest
from tests.edge.conftest import MakeToken, RunningEdge, token_client

pytestmark = pytest.mark.anyio


async def test_openapi_document_validates_and_matches_the_endpoints(
    http: httpx.AsyncClient,
) -> None:
    spec = (await http.get("/openapi.json")).json()
    validate(spec)
    public = {"say", "find", "crash", "traced", "slow"}
    assert set(spec["paths"]) == {f"/v1/echo/{name}" for name in public} | {"/healthz", "/readyz"}
    say = spec["paths"]["/v1/echo/say"]["post"]
    assert say["operationId"] == "echo_say"
    assert say["summary"] == "Return the text repeated ``times`` times."
    schemas = spec["components"]["schemas"]
    request = say["requestBody"]["content"]["application/json"]["schema"]
    reply = say["responses"]["200"]["content"]["application/json"]["schema"]
    assert request == {"$ref": "#/components/schemas/echo.SayRequest"}
    closed = {"additionalProperties": False}  # request types refuse unknown fields
    assert schemas["echo.SayRequest"] == {
        **msgspec.json.schema(SayRequest)["$defs"]["SayRequest"],
        **closed,
    }
    assert reply == {"$ref": "#/components/schemas/echo.SayReply"}
    assert schemas["echo.SayReply"] == msgspec.json.schema(SayReply)["$defs"]["SayReply"]
    nested = msgspec.json.schema(FindRequest)["$defs"]
    assert (
        schemas["echo.FindRequest"]["properties"]["filters"]["$ref"]
        == "#/components/schemas/echo.Filters"
    )
    assert schemas["echo.Filters"] == {**nested["Filters"], **closed}
    slow = schemas["echo.SlowRequest"]["properties"]
    assert "progress_subject" not in slow  # the edge's own field


async def test_openapi_lists_exactly_what_the_token_may_call(
    edge: RunningEdge, make_token: MakeToken
) -> None:
    token = await make_token("narrow", scopes=["echo:say", "echo:find"], tools=["echo_s*"])
    async with token_client(edge.url, token) as client:
        spec = (await client.get("/openapi.json")).json()
        refused = await client.post("/v1/echo/find", json={"query": "x"})
    validate(spec)
    assert set(spec["paths"]) == {"/v1/echo/say", "/healthz", "/readyz"}
    assert refused.status_code == 403  # the token's tool list holds on the HTTP API too
    assert "outside its tools" in refused.json()["error"]


async def test_openapi_needs_a_token(http: httpx.AsyncClient) -> None:
    async with httpx.AsyncClient(base_url=str(http.base_url)) as anonymous:
        response = await anonymous.get("/openapi.json")
    assert response.status_code == 401
