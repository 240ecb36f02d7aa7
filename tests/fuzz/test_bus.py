"""Fuzzing every endpoint of every agent over the bus (nats-py requests, no Sophia client).

Each endpoint gets values drawn from the request schema it publishes in ``$SRV.INFO`` —
valid ones and ones with one thing wrong — then raw junk (random bytes, invalid UTF-8, lone
surrogates, deep brackets, MessagePack junk with its ``Content-Type``) and a payload just
under the server's ``max_payload``. Every reply is judged by :mod:`tests.fuzz.verdicts`;
afterwards every agent must answer ``$SRV.PING`` and every accepted write must read back.

CI runs a small derandomized set (the same ~1,700 inputs every time, under a minute)::

    python -m pytest -q tests/fuzz

The full run (about 11,200 inputs across the bus, HTTP, MCP and schemathesis, 4 to 10
minutes here)::

    SOPHIA_FUZZ_EXAMPLES=32 python -m pytest -q -m fuzz tests/fuzz -p no:cacheprovider

``--hypothesis-seed=N`` with it repeats one random run.
"""

from __future__ import annotations

import socket
from collections.abc import Callable

import pytest
from hypothesis import given
from hypothesis import strategies as st

from tests.fuzz.aftermath import settle
from tests.fuzz.channels import MSGPACK_HEADERS, over_bus
from tests.fuzz.conftest import examples, fuzz_settings
from tests.fuzz.inputs import (
    FIXED_JUNK,
    Places,
    broken,
    json_bytes,
    junk_for,
    near_limit,
    valid,
)
from tests.fuzz.judging import Judge
from tests.fuzz.stack import Stack
from tests.fuzz.targets import Declared, Target, declared
from tests.fuzz.verdicts import Reply, Tally, Writes

pytestmark = pytest.mark.fuzz

ENDPOINTS = declared()
MSGPACK_JUNK = [b"\xc1", b"\x80", b"\x91" * 50_000 + b"\x00", b"\xdd\xff\xff\xff\xff", b"\xa5ab"]


def _sender(
    stack: Stack, target: Target, headers: dict[str, str] | None = None
) -> Callable[[bytes], Reply]:
    def send(payload: bytes) -> Reply:
        return stack.call(over_bus, stack.nc, target.subject, payload, headers)

    return send


@pytest.mark.parametrize("endpoint", ENDPOINTS, ids=lambda d: d.id)
def test_bus_endpoint_answers_schema_inputs_by_the_rules(
    endpoint: Declared,
    stack: Stack,
    targets: dict[str, Target],
    places: Places,
    tally: Tally,
    writes: Writes,
) -> None:
    target = targets[endpoint.id]
    judge = Judge("bus", target, target.schema, tally, writes)
    send = _sender(stack, target)

    @fuzz_settings(2 * examples())
    @given(st.one_of(valid(target, places), broken(target, places)))
    def one(value: object) -> None:
        judge.value(value, lambda v: send(json_bytes(v)))

    one()
    problems = judge.problems + settle(stack, writes, tally)
    assert not problems, "\n".join(problems)


@pytest.mark.parametrize("endpoint", ENDPOINTS, ids=lambda d: d.id)
def test_bus_endpoint_refuses_junk_bytes(
    endpoint: Declared,
    stack: Stack,
    targets: dict[str, Target],
    tally: Tally,
    writes: Writes,
) -> None:
    target = targets[endpoint.id]
    judge = Judge("bus", target, target.schema, tally, writes)
    send = _sender(stack, target)
    for payload in MSGPACK_JUNK:
        judge.raw(payload, _sender(stack, target, MSGPACK_HEADERS))
    limit = stack.nc.max_payload
    judge.raw(near_limit(target, limit - 1024), send)  # just under max_payload, headers included

    for payload in FIXED_JUNK:
        judge.raw(payload, send)

    @fuzz_settings(examples())
    @given(junk_for(target))
    def one(payload: bytes) -> None:
        judge.raw(payload, send)

    one()
    problems = judge.problems + settle(stack, writes, tally)
    assert not problems, "\n".join(problems)


def test_bus_payload_over_max_payload_is_refused_by_the_server_and_hurts_no_agent(
    stack: Stack, targets: dict[str, Target], tally: Tally, writes: Writes
) -> None:
    """nats-py will not send it, so a raw client does: the server refuses it (and drops that
    client); the agents never see it and keep serving."""
    target = targets["memory.store"]
    size = stack.nc.max_payload + 1
    host, port = stack.settings.nats_url.removeprefix("nats://").split(":")
    with socket.create_connection((host, int(port)), timeout=10) as raw:
        raw.recv(4096)  # INFO
        raw.sendall(b'CONNECT {"verbose":false}\r\n')
        # the size line is enough: the server refuses the message before its body arrives
        raw.sendall(f"PUB {target.subject} {size}\r\n".encode())
        answer = raw.recv(4096)
    assert b"Maximum Payload" in answer
    tally.count("bus", Reply(413, "server: maximum payload violation"))
    assert settle(stack, writes, tally) == []
