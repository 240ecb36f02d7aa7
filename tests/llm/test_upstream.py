"""The scripted OpenAI-compatible upstream, exercised with plain httpx."""

from __future__ import annotations

import json
import threading
import time
from typing import Any

import httpx
import pytest

from tests.fixtures.openai_upstream import (
    CutStream,
    Fault,
    Garbage,
    Hang,
    OpenAIUpstream,
    Reply,
    serving,
)

pytestmark = pytest.mark.anyio


def chat(model: str = "m", text: str = "hello there", **extra: Any) -> dict[str, Any]:
    return {"model": model, "messages": [{"role": "user", "content": text}], **extra}


def events(body: str) -> list[str]:
    """The ``data:`` payloads of an SSE body, in order."""
    return [line[len("data: ") :] for line in body.split("\n\n") if line.startswith("data: ")]


async def test_upstream_default_reply_echoes_last_user_message(upstream: OpenAIUpstream) -> None:
    body = {
        "model": "m",
        "messages": [
            {"role": "system", "content": "be brief"},
            {"role": "user", "content": "first"},
            {"role": "assistant", "content": "ok"},
            {"role": "user", "content": "second question"},
        ],
    }
    async with httpx.AsyncClient(base_url=upstream.base_url) as client:
        response = await client.post("/chat/completions", json=body)
    assert response.status_code == 200
    data = response.json()
    assert data["object"] == "chat.completion"
    assert data["model"] == "m"
    assert data["id"].startswith("chatcmpl-")
    assert isinstance(data["created"], int)
    choice = data["choices"][0]
    assert choice["message"]["role"] == "assistant"
    assert choice["message"]["content"] == "echo: second question"
    assert choice["finish_reason"] == "stop"
    # words of every prompt message: 2 + 1 + 1 + 2; of "echo: second question": 3
    assert data["usage"] == {"prompt_tokens": 6, "completion_tokens": 3, "total_tokens": 9}


async def test_upstream_default_reply_is_json_for_response_format(
    upstream: OpenAIUpstream,
) -> None:
    schema = {"type": "json_schema", "json_schema": {"name": "a", "schema": {"type": "object"}}}
    async with httpx.AsyncClient(base_url=upstream.base_url) as client:
        for fmt in (schema, {"type": "json_object"}):
            response = await client.post("/chat/completions", json=chat(response_format=fmt))
            content = response.json()["choices"][0]["message"]["content"]
            assert json.loads(content) == {"answer": "hello there"}
    assert upstream.calls()[0].body["response_format"] == schema


async def test_upstream_scripted_reply_sets_text_reason_and_tokens(
    upstream: OpenAIUpstream,
) -> None:
    upstream.script("m", Reply("scripted", finish_reason="length", prompt_tokens=7))
    async with httpx.AsyncClient(base_url=upstream.base_url) as client:
        first = (await client.post("/chat/completions", json=chat())).json()
        second = (await client.post("/chat/completions", json=chat())).json()
    assert first["choices"][0]["message"]["content"] == "scripted"
    assert first["choices"][0]["finish_reason"] == "length"
    assert first["usage"] == {"prompt_tokens": 7, "completion_tokens": 1, "total_tokens": 8}
    assert second["choices"][0]["message"]["content"] == "echo: hello there"


async def test_upstream_script_is_per_model_and_fifo(upstream: OpenAIUpstream) -> None:
    upstream.script("a", Reply("a1"), Reply("a2"))
    upstream.script("b", Reply("b1"))
    order = ["b", "a", "a", "b", "a"]
    async with httpx.AsyncClient(base_url=upstream.base_url) as client:
        texts = [
            (await client.post("/chat/completions", json=chat(m, "x"))).json()["choices"][0][
                "message"
            ]["content"]
            for m in order
        ]
    assert texts == ["b1", "a1", "a2", "echo: x", "echo: x"]
    assert upstream.pending("a") == upstream.pending("b") == 0


async def test_upstream_stream_sends_role_words_finish_usage_done(
    upstream: OpenAIUpstream,
) -> None:
    upstream.script("m", Reply("one two three"))
    body = chat(stream=True, stream_options={"include_usage": True})
    async with httpx.AsyncClient(base_url=upstream.base_url) as client:
        response = await client.post("/chat/completions", json=body)
    assert response.headers["content-type"].startswith("text/event-stream")
    payloads = events(response.text)
    assert payloads[-1] == "[DONE]"
    chunks = [json.loads(p) for p in payloads[:-1]]
    assert all(c["object"] == "chat.completion.chunk" for c in chunks)
    assert chunks[0]["choices"][0]["delta"]["role"] == "assistant"
    words = [c["choices"][0]["delta"]["content"] for c in chunks[1:-2]]
    assert words == ["one ", "two ", "three"]
    assert chunks[-2]["choices"][0]["finish_reason"] == "stop"
    assert chunks[-1]["choices"] == []
    assert chunks[-1]["usage"] == {"prompt_tokens": 2, "completion_tokens": 3, "total_tokens": 5}


async def test_upstream_stream_without_include_usage_has_no_usage_chunk(
    upstream: OpenAIUpstream,
) -> None:
    async with httpx.AsyncClient(base_url=upstream.base_url) as client:
        response = await client.post("/chat/completions", json=chat(stream=True))
    chunks = [json.loads(p) for p in events(response.text)[:-1]]
    assert chunks[-1]["choices"][0]["finish_reason"] == "stop"
    assert all(c["choices"] and "usage" not in c for c in chunks)


async def test_upstream_fault_429_has_retry_after_and_openai_error(
    upstream: OpenAIUpstream,
) -> None:
    upstream.script("m", Fault(429, retry_after=1.5), Fault(500))
    async with httpx.AsyncClient(base_url=upstream.base_url) as client:
        limited = await client.post("/chat/completions", json=chat())
        failed = await client.post("/chat/completions", json=chat())
    assert limited.status_code == 429
    assert limited.headers["retry-after"] == "1.5"
    error = limited.json()["error"]
    assert error["code"] == "rate_limit_exceeded"
    assert {"message", "type", "code"} <= error.keys()
    assert failed.status_code == 500
    assert "retry-after" not in failed.headers
    assert failed.json()["error"]["type"] == "server_error"


async def test_upstream_fault_body_replaces_error(upstream: OpenAIUpstream) -> None:
    upstream.script("m", Fault(400, body={"error": {"message": "bad", "type": "x", "code": "y"}}))
    async with httpx.AsyncClient(base_url=upstream.base_url) as client:
        response = await client.post("/chat/completions", json=chat())
    assert response.status_code == 400
    assert response.json() == {"error": {"message": "bad", "type": "x", "code": "y"}}


async def test_upstream_hang_outlasts_client_timeout(upstream: OpenAIUpstream) -> None:
    upstream.script("m", Hang(5.0))
    started = time.monotonic()
    async with httpx.AsyncClient(base_url=upstream.base_url, timeout=0.3) as client:
        with pytest.raises(httpx.ReadTimeout):
            await client.post("/chat/completions", json=chat())
        # the server is not blocked: the next request is answered at once
        response = await client.post("/chat/completions", json=chat())
    assert response.status_code == 200
    assert time.monotonic() - started < 2.0


async def test_upstream_hang_ends_with_504_when_it_elapses(upstream: OpenAIUpstream) -> None:
    upstream.script("m", Hang(0.2))
    async with httpx.AsyncClient(base_url=upstream.base_url) as client:
        response = await client.post("/chat/completions", json=chat())
    assert response.status_code == 504


async def test_upstream_cut_stream_is_an_incomplete_stream(upstream: OpenAIUpstream) -> None:
    upstream.script("m", CutStream(after_chunks=2))
    received: list[str] = []
    body = chat(text="a b c d e f", stream=True)
    async with httpx.AsyncClient(base_url=upstream.base_url) as client:
        with pytest.raises(httpx.RemoteProtocolError):
            async with client.stream("POST", "/chat/completions", json=body) as response:
                assert response.status_code == 200
                async for line in response.aiter_lines():
                    if line.startswith("data: "):
                        received.append(line[len("data: ") :])
    assert "[DONE]" not in received
    chunks = [json.loads(p) for p in received]
    assert len(chunks) == 3  # the role chunk and two content chunks
    assert all(c["choices"][0]["finish_reason"] is None for c in chunks)


async def test_upstream_cut_stream_truncates_a_plain_reply(upstream: OpenAIUpstream) -> None:
    upstream.script("m", CutStream())
    async with httpx.AsyncClient(base_url=upstream.base_url) as client:
        with pytest.raises(httpx.RemoteProtocolError):
            await client.post("/chat/completions", json=chat())


async def test_upstream_garbage_is_not_json(upstream: OpenAIUpstream) -> None:
    upstream.script("m", Garbage())
    async with httpx.AsyncClient(base_url=upstream.base_url) as client:
        response = await client.post("/chat/completions", json=chat())
    assert response.status_code == 200
    with pytest.raises(json.JSONDecodeError):
        response.json()


async def test_upstream_records_requests_and_reset_clears(upstream: OpenAIUpstream) -> None:
    before = time.monotonic()
    async with httpx.AsyncClient(base_url=upstream.url) as client:
        await client.post(
            "/v1/chat/completions", json=chat("m1"), headers={"Authorization": "Bearer sk-1"}
        )
        await client.post("/chat/completions", json=chat("m2", stream=True))
        models = (await client.get("/v1/models")).json()
    first, second, listing = upstream.requests
    assert (first.path, first.model, second.path, second.model) == (
        "/v1/chat/completions",
        "m1",
        "/chat/completions",
        "m2",
    )
    assert first.headers["authorization"] == "Bearer sk-1"
    assert first.body == chat("m1")
    assert json.loads(first.raw) == first.body
    assert second.stream and not first.stream
    assert before <= first.at <= second.at <= listing.at
    assert listing.path == "/v1/models"
    assert [c.model for c in upstream.calls()] == ["m1", "m2"]
    assert {"m1", "m2"} <= {m["id"] for m in models["data"]}
    upstream.script("m1", Reply("left over"))
    upstream.reset()
    assert upstream.requests == []
    assert upstream.pending("m1") == 0


async def test_upstream_rejects_a_request_without_model(upstream: OpenAIUpstream) -> None:
    async with httpx.AsyncClient(base_url=upstream.base_url) as client:
        missing = await client.post("/chat/completions", json={"messages": []})
        broken = await client.post("/chat/completions", content=b"{not json")
    assert missing.status_code == broken.status_code == 400
    assert "error" in missing.json()
    assert upstream.requests[1].raw == b"{not json"


def test_upstream_serving_stops_promptly_during_a_hang() -> None:
    outcome: list[int | str] = []

    def hung_client(url: str) -> None:
        try:
            outcome.append(httpx.post(url, json=chat(), timeout=30.0).status_code)
        except httpx.TransportError as exc:
            outcome.append(type(exc).__name__)

    with serving() as server:
        server.script("m", Hang(60.0))
        caller = threading.Thread(target=hung_client, args=(f"{server.base_url}/chat/completions",))
        caller.start()
        deadline = time.monotonic() + 5.0
        while not server.requests and time.monotonic() < deadline:
            time.sleep(0.01)
        assert server.requests, "the hanging request never arrived"
        started = time.monotonic()
    assert time.monotonic() - started < 3.0
    caller.join(5.0)
    assert outcome == [503]  # the hang ends when the server stops
    with pytest.raises(httpx.ConnectError):
        httpx.post(f"{server.base_url}/chat/completions", json=chat(), timeout=1.0)
