"""``sophia req``: one request with trace context; the reply, or the service error's exit."""

from __future__ import annotations

import json
import re
from collections.abc import AsyncIterator

import nats
import pytest
from nats.aio.msg import Msg

from bus import Settings
from tests.bus.agents import EchoAgent
from tests.ops.conftest import Sophia

pytestmark = pytest.mark.anyio

TRACEPARENT = re.compile(r"^00-([0-9a-f]{32})-[0-9a-f]{16}-[0-9a-f]{2}$")


@pytest.fixture
async def recorder(settings: Settings) -> AsyncIterator[list[dict[str, str]]]:
    """A responder on ``<prefix>.rec.headers`` that replies with the headers it got."""
    seen: list[dict[str, str]] = []
    nc = await nats.connect(settings.nats_url)

    async def reply(msg: Msg) -> None:
        seen.append(dict(msg.headers or {}))
        await msg.respond(json.dumps({"headers": msg.headers, "body": msg.data.decode()}).encode())

    await nc.subscribe(f"{settings.prefix}.rec.headers", cb=reply)
    yield seen
    await nc.drain()


async def test_req_prints_the_reply_as_json(
    echo: EchoAgent, sophia: Sophia, settings: Settings
) -> None:
    run = await sophia("req", f"{settings.prefix}.echo.say", '{"text": "ab", "times": 2}')
    assert run.status == 0, run.err
    assert json.loads(run.out) == {"text": "abab"}


async def test_req_sends_trace_context_and_extra_headers(
    recorder: list[dict[str, str]], sophia: Sophia, settings: Settings
) -> None:
    run = await sophia("req", f"{settings.prefix}.rec.headers", '{"a": 1}', "-H", "X-Test: yes")
    assert run.status == 0, run.err
    [headers] = recorder
    match = TRACEPARENT.match(headers["traceparent"])
    assert match is not None, headers
    assert headers["X-Test"] == "yes"
    assert f"trace {match.group(1)}" in run.err  # the id to look up in the trace backend
    assert json.loads(run.out)["body"] == '{"a": 1}'


@pytest.mark.parametrize(
    ("endpoint", "body", "status", "message"),
    [
        ("lookup.one", '{"text": "x"}', 2, "sophia: 404: no item named 'x'"),
        ("say", '{"text": 5}', 2, "sophia: 400: Expected `str`, got `int` - at `$.text`"),
        ("crash", '{"text": "x"}', 1, "sophia: 500: internal error"),
        ("nobody", "{}", 3, "no service answers"),
    ],
    ids=["not-found", "bad-request", "internal", "no-responders"],
)
async def test_req_service_error_prints_code_and_exits_non_zero(
    echo: EchoAgent,
    sophia: Sophia,
    settings: Settings,
    endpoint: str,
    body: str,
    status: int,
    message: str,
) -> None:
    run = await sophia("req", f"{settings.prefix}.echo.{endpoint}", body)
    assert run.status == status
    assert message in run.err
    assert run.out == ""


async def test_req_refuses_a_body_that_is_not_json(
    recorder: list[dict[str, str]], sophia: Sophia, settings: Settings
) -> None:
    run = await sophia("req", f"{settings.prefix}.rec.headers", "{nope")
    assert run.status == 2
    assert "body is not valid JSON" in run.err
    assert recorder == []  # nothing was sent
