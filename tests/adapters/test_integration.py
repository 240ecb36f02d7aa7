"""The integration base class against a real local HTTP server: retries, breaker, limits."""

from __future__ import annotations

import socket
from collections.abc import AsyncIterator
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from email.utils import format_datetime
from typing import Any

import anyio
import pytest

from adapters.integration import (
    DEFAULT_LIMIT,
    CredentialsRefusedError,
    Integration,
    OutcomeUnknownError,
    Policy,
    Rate,
    retry_after,
)
from bus.errors import (
    BadRequestError,
    ConfigError,
    OverLimitError,
    TimeoutError_,
    UnavailableError,
)
from tests.fixtures.lambda_api import API_KEY, Fault, Hang, LambdaApi, RateLimited

pytestmark = pytest.mark.anyio

FAST = Policy(
    attempt_timeout_s=2.0,
    deadline_s=10.0,
    max_retries=3,
    backoff_base_s=0.01,
    backoff_max_s=0.05,
    breaker_failures=3,
    breaker_cooldown_s=0.3,
    limits={DEFAULT_LIMIT: Rate(1000.0, 100)},
)


class Probe(Integration):
    """The smallest adapter: the fake's instance-types read and launch, raw JSON back."""

    service = "Probe"
    key_variable = "PROBE_KEY"

    def __init__(self, base_url: str, key: str = API_KEY, policy: Policy = FAST) -> None:
        super().__init__(base_url, headers={"Authorization": f"Bearer {key}"}, policy=policy)

    async def check_credentials(self) -> None:
        await self.read()

    async def read(self) -> Any:
        return await self.call("GET", "/instance-types", idempotent=True)

    async def write(self) -> Any:
        body = {
            "region_name": "us-west-1",
            "instance_type_name": "gpu_1x_a10",
            "ssh_key_names": ["k"],
        }
        return await self.call("POST", "/instance-operations/launch", json=body, idempotent=False)


@pytest.fixture
async def probe(lambda_api: LambdaApi) -> AsyncIterator[Probe]:
    client = Probe(lambda_api.base_url)
    yield client
    await client.aclose()


def _closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


async def test_integration_retries_a_server_error_then_succeeds(
    probe: Probe, lambda_api: LambdaApi
) -> None:
    lambda_api.fail("types", Fault(500), Fault(503))
    answer = await probe.read()
    assert "gpu_1x_a10" in answer["data"]
    assert lambda_api.calls("types") == 3
    assert probe.breaker.state == "closed"


async def test_integration_gives_up_after_bounded_retries(lambda_api: LambdaApi) -> None:
    client = Probe(lambda_api.base_url, policy=replace(FAST, breaker_failures=10))
    lambda_api.fail("types", *[Fault(500)] * 4)
    with pytest.raises(UnavailableError) as caught:
        await client.read()
    await client.aclose()
    assert lambda_api.calls("types") == 1 + FAST.max_retries
    assert caught.value.description == "Probe answered 500: Internal Server Error"


async def test_integration_honours_retry_after_on_429(probe: Probe, lambda_api: LambdaApi) -> None:
    lambda_api.fail("types", RateLimited(retry_after="1"))
    answer = await probe.read()
    assert answer["data"]
    assert lambda_api.calls("types") == 2


async def test_integration_429_past_the_deadline_is_a_429_and_pauses_later_calls(
    lambda_api: LambdaApi,
) -> None:
    client = Probe(lambda_api.base_url, policy=replace(FAST, deadline_s=2.0))
    lambda_api.fail("types", RateLimited(retry_after="30"))
    with pytest.raises(OverLimitError) as caught:
        await client.read()
    with pytest.raises(OverLimitError) as paused:
        await client.read()  # still inside the Retry-After: nothing is sent
    await client.aclose()
    assert caught.value.code == 429
    assert "past this call's deadline" in paused.value.description
    assert lambda_api.calls("types") == 1


async def test_integration_never_resends_a_write_after_an_ambiguous_failure(
    probe: Probe, lambda_api: LambdaApi
) -> None:
    lambda_api.fail("launch", Fault(500))
    with pytest.raises(OutcomeUnknownError) as caught:
        await probe.write()
    assert lambda_api.calls("launch") == 1
    assert "may have been carried out" in caught.value.description


async def test_integration_resends_a_write_the_service_refused_with_429(
    probe: Probe, lambda_api: LambdaApi
) -> None:
    lambda_api.fail("launch", RateLimited(retry_after="1"))
    answer = await probe.write()
    assert len(answer["data"]["instance_ids"]) == 1
    assert lambda_api.calls("launch") == 2
    assert len(lambda_api.instances) == 1


async def test_integration_times_out_within_its_bounds(lambda_api: LambdaApi) -> None:
    policy = replace(FAST, attempt_timeout_s=0.2, max_retries=1)
    async with Probe(lambda_api.base_url, policy=policy) as client:
        lambda_api.fail("types", Hang(5.0), Hang(5.0))
        with pytest.raises(TimeoutError_) as caught:
            await client.read()
    assert caught.value.code == 408
    assert lambda_api.calls("types") == 3  # the start-up check, then two attempts


async def test_integration_unreachable_service_is_503_and_start_does_not_fail() -> None:
    client = Probe(f"http://127.0.0.1:{_closed_port()}/api/v1", policy=replace(FAST, max_retries=1))
    await client.start()  # cannot check the key now: logged, checked by the next call
    with pytest.raises(UnavailableError) as caught:
        await client.read()
    await client.aclose()
    assert caught.value.code == 503
    assert "cannot be reached" in caught.value.description


async def test_integration_breaker_opens_then_recovers(probe: Probe, lambda_api: LambdaApi) -> None:
    lambda_api.fail("types", *[Fault(502)] * FAST.breaker_failures)
    with pytest.raises(UnavailableError) as first:
        await probe.read()  # 1 attempt + retries, until the breaker opens
    assert "Probe answered 502" in first.value.description
    sent = lambda_api.calls("types")
    assert sent == FAST.breaker_failures
    assert probe.breaker.state == "open"
    with pytest.raises(UnavailableError) as caught:
        await probe.read()
    assert "circuit is open" in caught.value.description
    assert lambda_api.calls("types") == sent  # refused without a request

    await anyio.sleep(FAST.breaker_cooldown_s)
    answer = await probe.read()  # the half-open probe
    assert answer["data"]
    assert probe.breaker.state == "closed"


async def test_integration_key_refused_at_start_is_a_config_error_without_the_key(
    lambda_api: LambdaApi,
) -> None:
    client = Probe(lambda_api.base_url, key="secret_wrong_key_123")
    with pytest.raises(ConfigError) as caught:
        await client.start()
    await client.aclose()
    text = caught.value.description
    assert text == "Probe refused the API key in PROBE_KEY (401); check or replace it"
    assert "secret_wrong_key_123" not in text and API_KEY not in text


async def test_integration_key_refused_later_is_503_not_a_breaker_failure(
    lambda_api: LambdaApi,
) -> None:
    client = Probe(lambda_api.base_url, key="secret_revoked")
    with pytest.raises(CredentialsRefusedError) as caught:
        await client.read()
    await client.aclose()
    assert caught.value.code == 503
    assert lambda_api.calls("types") == 1  # a refused key is not retried
    assert client.breaker.state == "closed"


async def test_integration_bad_request_is_400_and_not_retried(
    probe: Probe, lambda_api: LambdaApi
) -> None:
    lambda_api.fail("types", Fault(400, "global/invalid-parameters", "Invalid request parameters"))
    with pytest.raises(BadRequestError) as caught:
        await probe.read()
    assert caught.value.code == 400
    assert lambda_api.calls("types") == 1


async def test_integration_client_side_limit_waits_then_refuses_past_the_deadline(
    lambda_api: LambdaApi,
) -> None:
    policy = replace(FAST, deadline_s=1.0, limits={DEFAULT_LIMIT: Rate(0.1)})
    client = Probe(lambda_api.base_url, policy=policy)
    await client.read()
    with pytest.raises(OverLimitError) as caught:
        await client.read()  # the next token is ten seconds away
    await client.aclose()
    assert "past this call's deadline" in caught.value.description
    assert lambda_api.calls("types") == 1


@pytest.mark.parametrize(
    ("header", "expected"),
    [("7", 7.0), (None, None), ("soon", None), ("", None)],
    ids=["seconds", "absent", "garbage", "empty"],
)
def test_retry_after_parses_seconds(header: str | None, expected: float | None) -> None:
    assert retry_after(header) == expected


def test_retry_after_parses_an_http_date() -> None:
    now = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)
    header = format_datetime(now + timedelta(seconds=90), usegmt=True)
    assert retry_after(header, now) == 90.0
