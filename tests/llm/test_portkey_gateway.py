"""The Portkey SDK through the real Portkey gateway to the scripted upstream.

Skipped when node or ``@portkey-ai/gateway`` is missing (see tests/fixtures/portkey_gateway.py).
"""

from __future__ import annotations

from pathlib import Path

import pytest
from nats.aio.msg import Msg
from portkey_ai import AsyncPortkey

from bus import Bus
from bus.config import Settings
from tests.fixtures.openai_upstream import Fault, OpenAIUpstream, Reply
from tests.llm.harness import ask, complete, llm_agent, model, write_toml

pytestmark = pytest.mark.anyio


def client_for(gateway: str, upstream: OpenAIUpstream) -> AsyncPortkey:
    """An SDK client that the gateway sends on to ``upstream`` as an OpenAI provider."""
    return AsyncPortkey(
        base_url=gateway,
        api_key="unused-by-the-oss-gateway",
        provider="openai",
        custom_host=upstream.base_url,
        Authorization="Bearer sk-test",
    )


async def test_portkey_gateway_relays_plain_and_streamed_completions(
    portkey_gateway: str, upstream: OpenAIUpstream
) -> None:
    upstream.script("gw-model", Reply("plain answer"), Reply("streamed answer here"))
    client = client_for(portkey_gateway, upstream)
    try:
        await relay_both(client)
    finally:
        await client.close()
        await client.openai_client.close()

    first, second = upstream.calls("gw-model")
    assert first.path == "/v1/chat/completions"
    assert first.headers["authorization"] == "Bearer sk-test"
    assert not first.stream and second.stream


async def relay_both(client: AsyncPortkey) -> None:
    messages = [{"role": "user", "content": "hi"}]
    plain = await client.chat.completions.create(model="gw-model", messages=messages)
    assert plain.choices[0].message.content == "plain answer"
    assert plain.usage is not None and plain.usage.completion_tokens == 2

    stream = await client.chat.completions.create(
        model="gw-model", messages=messages, stream=True, stream_options={"include_usage": True}
    )
    text, finish, usage = "", None, None
    async for chunk in stream:
        if chunk.choices:
            text += chunk.choices[0].delta.content or ""
            finish = chunk.choices[0].finish_reason or finish
        if chunk.usage is not None:
            usage = chunk.usage
    assert (text, finish) == ("streamed answer here", "stop")
    assert usage is not None and usage.total_tokens == 1 + 3


async def test_llm_agent_through_the_portkey_gateway_retries_and_streams(
    portkey_gateway: str,
    upstream: OpenAIUpstream,
    bus: Bus,
    settings: Settings,
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
) -> None:
    """Sophia's gateway with PORTKEY_GATEWAY_URL: custom_host, its key, our retries."""
    toml = write_toml(
        tmp_path / "sophia.toml",
        [model("gw", upstream.base_url, api_key_env="GW_UPSTREAM_KEY")],
    )
    env = {"PORTKEY_GATEWAY_URL": portkey_gateway.removesuffix("/v1"), "GW_UPSTREAM_KEY": "sk-up"}
    upstream.script("gw", Fault(500), Reply(text="after a retry"), Reply(text="streamed reply"))
    inbox = bus.nc.new_inbox()
    deltas: list[bytes] = []

    async def collect(msg: Msg) -> None:
        deltas.append(msg.data)

    sub = await bus.nc.subscribe(inbox, cb=collect)
    async with llm_agent(settings, monkeypatch, toml, env):
        retried = await complete(bus, ask("one", temperature=0.5))
        streamed = await complete(bus, ask("two", temperature=0.5, stream_subject=inbox))
    await sub.unsubscribe()
    first, second, third = upstream.calls("gw")
    assert [a.outcome for a in retried.attempts] == ["server_error", "ok"]
    assert retried.text == "after a retry" and streamed.text == "streamed reply"
    assert first.headers["authorization"] == "Bearer sk-up"
    assert second.headers.get("x-portkey-cache-force-refresh") is None  # consumed by the gateway
    assert third.stream and deltas
