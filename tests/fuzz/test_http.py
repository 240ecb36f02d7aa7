"""Fuzzing every public endpoint through the edge's HTTP API (``POST /v1/<service>/<endpoint>``).

Values are drawn from the request schemas of the edge's own ``/openapi.json`` (closed to
unknown fields, without ``progress_subject``), valid and with one thing wrong; then junk
bodies, a body just under the edge's limit and one just over it (413). The rules and the
commands are those of :mod:`tests.fuzz.test_bus`.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Iterator
from typing import Any

import httpx
import pytest
from hypothesis import given
from hypothesis import strategies as st

from tests.fuzz.aftermath import settle
from tests.fuzz.channels import REPLY_BOUND_S, over_http
from tests.fuzz.conftest import examples, fixed_inputs, fuzz_settings
from tests.fuzz.edge_schemas import openapi_request_schemas
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

PUBLIC = declared(public_only=True)


@pytest.fixture(scope="module")
def http(stack: Stack) -> Iterator[httpx.Client]:
    headers = {"Authorization": f"Bearer {stack.token}"}
    with httpx.Client(base_url=stack.edge_url, headers=headers, timeout=REPLY_BOUND_S) as client:
        yield client


@pytest.fixture(scope="module")
def http_schemas(http: httpx.Client, targets: dict[str, Target]) -> dict[str, dict[str, Any]]:
    """The request schema of every public endpoint, from ``/openapi.json``."""
    response = http.get("/openapi.json")
    assert response.status_code == 200
    return openapi_request_schemas(response.json())


def _edge_target(target: Target, schemas: dict[str, dict[str, Any]]) -> Target:
    assert target.path in schemas, f"{target.path} is missing from /openapi.json"
    return dataclasses.replace(target, schema=schemas[target.path])


def _sender(http: httpx.Client, target: Target) -> Callable[[bytes], Reply]:
    return lambda payload: over_http(http, target.path, payload)


@pytest.mark.parametrize("endpoint", PUBLIC, ids=lambda d: d.id)
def test_http_endpoint_answers_schema_inputs_by_the_rules(
    endpoint: Declared,
    stack: Stack,
    http: httpx.Client,
    http_schemas: dict[str, dict[str, Any]],
    targets: dict[str, Target],
    places: Places,
    tally: Tally,
    writes: Writes,
) -> None:
    target = _edge_target(targets[endpoint.id], http_schemas)
    judge = Judge("http", target, target.schema, tally, writes)
    send = _sender(http, target)

    @fuzz_settings(2 * examples())
    @given(st.one_of(valid(target, places), broken(target, places)))
    def one(value: object) -> None:
        judge.value(value, lambda v: send(json_bytes(v)))

    one()
    problems = judge.problems + settle(stack, writes, tally)
    assert not problems, "\n".join(problems)


@pytest.mark.parametrize("endpoint", PUBLIC, ids=lambda d: d.id)
def test_http_endpoint_refuses_junk_and_oversize_bodies(
    endpoint: Declared,
    stack: Stack,
    http: httpx.Client,
    http_schemas: dict[str, dict[str, Any]],
    targets: dict[str, Target],
    tally: Tally,
    writes: Writes,
) -> None:
    target = _edge_target(targets[endpoint.id], http_schemas)
    judge = Judge("http", target, target.schema, tally, writes)
    send = _sender(http, target)
    limit = min(1_048_576, stack.nc.max_payload - 4096)  # the edge's default body limit
    assert judge.raw(near_limit(target, limit + 1), send).status == 413
    judge.raw(near_limit(target, limit - 64), send)

    # the bus takes every fixed nasty at every endpoint; CI sends a third of them here
    for payload in FIXED_JUNK if not fixed_inputs() else FIXED_JUNK[::3]:
        judge.raw(payload, send)

    @fuzz_settings(examples())
    @given(junk_for(target))
    def one(payload: bytes) -> None:
        judge.raw(payload, send)

    one()
    problems = judge.problems + settle(stack, writes, tally)
    assert not problems, "\n".join(problems)
