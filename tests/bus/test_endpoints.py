"""Request/reply endpoints: round trip, errors as service-error replies, codecs."""

from __future__ import annotations

import json

import anyio
import msgspec
import pytest

from bus import Bus, NotFoundError
from bus.errors import BadRequestError, InternalError, UnavailableError
from tests.bus.agents import EchoAgent, EchoReply, EchoRequest, HeaderReply, HeaderRequest

pytestmark = pytest.mark.anyio


async def test_endpoint_round_trip(echo: EchoAgent, bus: Bus) -> None:
    reply = await bus.request("echo", "say", EchoRequest(text="ab", times=2), EchoReply)
    assert reply == EchoReply(text="abab")


async def test_handler_reads_its_own_requests_headers(echo: EchoAgent, bus: Bus) -> None:
    subject = bus.subjects.endpoint("echo", "header")
    values: dict[int, str] = {}

    async def ask(i: int) -> None:
        payload = msgspec.json.encode(HeaderRequest(name="X-Caller", wait_s=0.05))
        msg = await bus.request_raw(subject, payload, {"X-Caller": f"c{i}"})
        values[i] = msgspec.json.decode(msg.data, type=HeaderReply).value

    async with anyio.create_task_group() as tg:  # interleaved: each must see its own
        for i in range(8):
            tg.start_soon(ask, i)
    assert values == {i: f"c{i}" for i in range(8)}
    bare = await bus.request_raw(subject, b'{"name": "X-Caller"}')
    assert msgspec.json.decode(bare.data, type=HeaderReply).value == ""


async def test_endpoint_answers_plain_json_like_nats_req(echo: EchoAgent, bus: Bus) -> None:
    subject = f"{bus.settings.prefix}.echo.say"
    msg = await bus.nc.request(subject, b'{"text": "hi"}', timeout=5)
    assert json.loads(msg.data) == {"text": "hi"}
    assert not msg.headers or "Nats-Service-Error-Code" not in msg.headers


async def test_endpoint_empty_payload_counts_as_empty_object(echo: EchoAgent, bus: Bus) -> None:
    msg = await bus.nc.request(f"{bus.settings.prefix}.echo.health", b"", timeout=5)
    body = json.loads(msg.data)
    assert body["service"] == "echo"
    assert body["nats_connected"] is True


async def test_endpoint_msgpack_round_trip(echo: EchoAgent, bus: Bus) -> None:
    reply = await bus.request(
        "echo", "say", EchoRequest(text="x", times=3), EchoReply, msgpack=True
    )
    assert reply.text == "xxx"
    raw = await bus.nc.request(
        f"{bus.settings.prefix}.echo.say",
        msgspec.msgpack.encode({"text": "m"}),
        headers={"Content-Type": "application/msgpack"},
        timeout=5,
    )
    assert msgspec.msgpack.decode(raw.data) == {"text": "m"}
    assert raw.headers and raw.headers["Content-Type"] == "application/msgpack"


@pytest.mark.parametrize(
    ("payload", "expected"),
    [
        (b'{"text": 5}', "Expected `str`, got `int` - at `$.text`"),
        (b'{"times": 1}', "Object missing required field `text`"),
        (b"{not json", "JSON is malformed"),
        (b'{"text": "a", "times": "2"}', "at `$.times`"),
    ],
    ids=["wrong-type", "missing-field", "malformed", "nested-path"],
)
async def test_endpoint_bad_payload_gets_400_with_field_path(
    echo: EchoAgent, bus: Bus, payload: bytes, expected: str
) -> None:
    msg = await bus.nc.request(f"{bus.settings.prefix}.echo.say", payload, timeout=5)
    assert msg.headers is not None
    assert msg.headers["Nats-Service-Error-Code"] == "400"
    assert expected in msg.headers["Nats-Service-Error"]
    assert json.loads(msg.data) == {"error": msg.headers["Nats-Service-Error"], "code": 400}


async def test_endpoint_typed_error_keeps_its_code(echo: EchoAgent, bus: Bus) -> None:
    with pytest.raises(NotFoundError) as caught:
        await bus.request("echo", "lookup.one", EchoRequest(text="zz"), EchoReply)
    assert caught.value.code == 404
    assert "zz" in caught.value.description


async def test_endpoint_handler_error_in_payload_value_gets_400(echo: EchoAgent, bus: Bus) -> None:
    with pytest.raises(BadRequestError) as caught:
        await bus.request("echo", "say", EchoRequest(text="a", times=-1), EchoReply)
    assert caught.value.description == "times: must be 0 or more"


async def test_endpoint_unexpected_error_is_500_without_internals_and_agent_keeps_serving(
    echo: EchoAgent, bus: Bus
) -> None:
    with pytest.raises(InternalError) as caught:
        await bus.request("echo", "crash", EchoRequest(text="a"), EchoReply)
    assert caught.value.code == 500
    assert caught.value.description == "internal error"
    assert "hunter2" not in caught.value.description
    reply = await bus.request("echo", "say", EchoRequest(text="still"), EchoReply)
    assert reply.text == "still"


async def test_request_without_responder_is_503(bus: Bus) -> None:
    with pytest.raises(UnavailableError) as caught:
        await bus.request("nobody", "home", None, EchoReply, timeout=1)
    assert caught.value.code == 503


async def test_endpoint_stats_count_requests_and_errors(echo: EchoAgent, bus: Bus) -> None:
    await bus.request("echo", "say", EchoRequest(text="a"), EchoReply)
    with pytest.raises(InternalError):
        await bus.request("echo", "crash", EchoRequest(text="a"), EchoReply)
    msg = await bus.nc.request("$SRV.STATS.echo", b"", timeout=5)
    stats = json.loads(msg.data)
    by_name = {e["name"]: e for e in stats["endpoints"]}
    assert by_name["say"]["num_requests"] == 1
    assert by_name["crash"]["num_errors"] == 1
    assert by_name["crash"]["last_error"] == "internal error"


@pytest.mark.parametrize("msgpack", [False, True], ids=["json", "msgpack"])
@pytest.mark.parametrize("endpoint", ["health", "say"])
async def test_nesting_deeper_than_the_limit_is_a_400_from_every_endpoint(
    echo: EchoAgent, bus: Bus, endpoint: str, msgpack: bool
) -> None:
    # {"text": "a", "extra": [[[…"x"…]]]} written by hand: no encoder nests 10,000 deep
    map2, one_item, x = b"\x82", b"\x91", b"\xa1x"
    payload = (
        map2 + msgspec.msgpack.encode("text") + msgspec.msgpack.encode("a")
        + msgspec.msgpack.encode("extra") + one_item * 10_000 + x
        if msgpack
        else b'{"text": "a", "extra": ' + b"[" * 10_000 + b"]" * 10_000 + b"}"
    )  # fmt: skip
    headers = {"Content-Type": "application/msgpack"} if msgpack else None
    msg = await bus.request_raw(bus.subjects.endpoint("echo", endpoint), payload, headers)
    assert msg.headers is not None and msg.headers["Nats-Service-Error-Code"] == "400"
    after = await bus.request("echo", "say", EchoRequest(text="ok"), EchoReply)
    assert after.text == "ok"


async def test_error_texts_and_stats_never_echo_the_request(echo: EchoAgent, bus: Bus) -> None:
    secret = "sk-live-0123456789abcdefghij"
    subject = bus.subjects.endpoint("echo", "pick")
    msg = await bus.request_raw(subject, json.dumps({"colour": secret}).encode())
    assert msg.headers is not None and msg.headers["Nats-Service-Error-Code"] == "400"
    assert msg.headers["Nats-Service-Error"] == "Invalid enum value - at `$.colour`"
    assert secret not in msg.data.decode()
    stats = await bus.nc.request(f"$SRV.STATS.echo.{echo.id}", b"", timeout=5)
    assert secret not in stats.data.decode()
    assert "Invalid enum value - at `$.colour`" in stats.data.decode()  # the problem, not the value
