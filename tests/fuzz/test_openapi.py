"""schemathesis against the edge's own ``/openapi.json``, on the real edge on loopback.

Every operation gets schemathesis's positive and negative cases; besides our rules
(:mod:`tests.fuzz.verdicts`), schemathesis checks that no answer is a server error, that
statuses, content types and bodies conform to the document, and that data the document
forbids is refused. Commands as in :mod:`tests.fuzz.test_bus`.
"""

from __future__ import annotations

from typing import Any

import httpx
import pytest
import schemathesis
from hypothesis import given
from schemathesis import GenerationMode
from schemathesis.checks import (
    FailureGroup,
    content_type_conformance,
    negative_data_rejection,
    not_a_server_error,
    response_schema_conformance,
    status_code_conformance,
)
from schemathesis.openapi import from_dict

from tests.fuzz.aftermath import settle
from tests.fuzz.channels import REPLY_BOUND_S
from tests.fuzz.conftest import examples, fixed_inputs, fuzz_settings
from tests.fuzz.edge_schemas import openapi_request_schemas
from tests.fuzz.judging import Judge
from tests.fuzz.stack import Stack
from tests.fuzz.targets import Declared, Target, declared
from tests.fuzz.verdicts import UNAVAILABLE_HERE, Reply, Tally, Writes

pytestmark = pytest.mark.fuzz

CHECKS = [
    not_a_server_error,
    status_code_conformance,
    content_type_conformance,
    response_schema_conformance,
    negative_data_rejection,
]


@pytest.fixture(scope="module")
def openapi_schema(stack: Stack, targets: dict[str, Target]) -> schemathesis.BaseSchema:
    auth = {"Authorization": f"Bearer {stack.token}"}
    document = httpx.get(f"{stack.edge_url}/openapi.json", headers=auth, timeout=30).json()
    schema = from_dict(document)
    schema.config.update(base_url=stack.edge_url, headers=auth)
    schema.config.generation.update(
        modes=[GenerationMode.POSITIVE, GenerationMode.NEGATIVE],
        max_examples=2 * examples(),
        deterministic=fixed_inputs(),
    )
    return schema


@pytest.fixture(scope="module")
def request_schemas(openapi_schema: schemathesis.BaseSchema) -> dict[str, dict[str, Any]]:
    return openapi_request_schemas(openapi_schema.raw_schema)


PUBLIC = declared(public_only=True)
MODES = [GenerationMode.POSITIVE, GenerationMode.NEGATIVE]


@pytest.mark.parametrize("mode", MODES, ids=lambda m: m.value)
@pytest.mark.parametrize("endpoint", PUBLIC, ids=lambda d: d.id)
def test_openapi_operation_holds_under_schemathesis(
    endpoint: Declared,
    mode: GenerationMode,
    stack: Stack,
    targets: dict[str, Target],
    openapi_schema: schemathesis.BaseSchema,
    request_schemas: dict[str, dict[str, Any]],
    tally: Tally,
    writes: Writes,
) -> None:
    target = targets[endpoint.id]
    request_schema = request_schemas[target.path]
    judge = Judge("schemathesis", target, request_schema, tally, writes)
    operation = openapi_schema[target.path]["POST"]
    # 503 is what the infra agent (and the gateway, for a model answer that a random
    # response_schema refuses) answers here once the input has passed; our own rules still
    # refuse any 500 and any other 503 from them
    checks = [
        c for c in CHECKS if target.service not in UNAVAILABLE_HERE or c is not not_a_server_error
    ]

    @fuzz_settings(examples())
    @given(operation.as_strategy(generation_mode=mode))
    def one(case: schemathesis.Case) -> None:
        response = case.call(timeout=REPLY_BOUND_S)
        reply = Reply(response.status_code, _error_text(response), response.content)
        if isinstance(case.body, dict):
            judge.value(case.body, lambda _: reply)
        else:  # a body of another JSON type, or none
            sent = response.request.body or b""
            judge.raw(sent.encode() if isinstance(sent, str) else sent, lambda _: reply)
        try:
            case.validate_response(response, checks=checks)
        except FailureGroup as failed:
            if response.status_code == 413:  # a body over the edge's limit: refused, as documented
                return
            judge.problems.append(f"schemathesis {target.path}: {failed}"[:400])

    one()
    problems = judge.problems + settle(stack, writes, tally)
    assert not problems, "\n".join(problems)


def _error_text(response: schemathesis.Response) -> str:
    if response.status_code == 200 or not response.content:
        return ""
    body = response.json()
    return str(body.get("error", "")) if isinstance(body, dict) else ""
