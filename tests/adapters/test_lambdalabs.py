"""The Lambda Cloud adapter against a local server speaking Lambda's API v1."""

from __future__ import annotations

import base64
from collections.abc import AsyncIterator
from dataclasses import replace

import httpx
import pytest

from adapters.integration import DEFAULT_LIMIT, Policy, Rate
from adapters.lambdalabs import LAUNCH_LIMIT, LambdaCloud, default_policy
from bus.errors import (
    BadRequestError,
    ConfigError,
    NotFoundError,
    OverLimitError,
    UnavailableError,
)
from tests.fixtures.lambda_api import API_KEY, Fault, LambdaApi, RateLimited

pytestmark = pytest.mark.anyio

FAST = Policy(
    attempt_timeout_s=2.0,
    deadline_s=10.0,
    max_retries=2,
    backoff_base_s=0.01,
    backoff_max_s=0.05,
    breaker_failures=5,
    breaker_cooldown_s=0.3,
    limits={DEFAULT_LIMIT: Rate(1000.0, 100)},
)


@pytest.fixture
async def cloud(lambda_api: LambdaApi) -> AsyncIterator[LambdaCloud]:
    async with LambdaCloud(API_KEY, lambda_api.base_url, policy=FAST) as client:
        yield client


async def _launch(cloud: LambdaCloud, **overrides: object) -> list[str]:
    args: dict[str, object] = {
        "instance_type": "gpu_1x_a10",
        "region": "us-west-1",
        "ssh_key_names": ["laptop"],
        "name": "sophia-test",
    }
    args.update(overrides)
    return await cloud.launch(**args)  # type: ignore[arg-type]


async def test_lambda_lists_instance_types_with_prices_and_capacity(cloud: LambdaCloud) -> None:
    offers = await cloud.instance_types()
    a10 = offers["gpu_1x_a10"]
    assert a10.instance_type.price_cents_per_hour == 75
    assert a10.instance_type.specs.vcpus == 30
    assert [r.name for r in a10.regions_with_capacity_available] == ["us-west-1", "us-east-1"]
    assert offers["gpu_8x_h100_sxm5"].regions_with_capacity_available == []


async def test_lambda_launches_lists_gets_and_terminates(
    cloud: LambdaCloud, lambda_api: LambdaApi
) -> None:
    ids = await _launch(cloud, quantity=2)
    listed = await cloud.instances()
    one = await cloud.instance(ids[0])
    ended = await cloud.terminate(ids)

    assert len(ids) == 2
    assert {i.id for i in listed} == set(ids)
    assert one.name == "sophia-test" and one.instance_type is not None
    assert one.instance_type.name == "gpu_1x_a10" and one.region is not None
    assert one.region.name == "us-west-1"
    assert {i.id for i in ended} == set(ids) and {i.status for i in ended} == {"terminated"}
    assert lambda_api.instances == {}
    launch = next(r for r in lambda_api.requests if r.operation == "launch")
    assert launch.body == {
        "region_name": "us-west-1",
        "instance_type_name": "gpu_1x_a10",
        "ssh_key_names": ["laptop"],
        "quantity": 2,
        "name": "sophia-test",
    }
    assert {r.authorization for r in lambda_api.requests} == {f"Bearer {API_KEY}"}


async def test_lambda_drops_the_jupyter_token(cloud: LambdaCloud) -> None:
    ids = await _launch(cloud)
    instance = await cloud.instance(ids[0])
    assert not hasattr(instance, "jupyter_token")
    assert "jupyter" not in repr(instance)


async def test_lambda_refused_key_at_start_names_the_variable_not_the_key(
    lambda_api: LambdaApi,
) -> None:
    client = LambdaCloud("secret_not-the-key", lambda_api.base_url, policy=FAST)
    with pytest.raises(ConfigError) as caught:
        await client.start()
    await client.aclose()
    text = caught.value.description
    assert text == (
        "Lambda Cloud refused the API key in SOPHIA_LAMBDA_API_KEY (global/invalid-api-key); "
        "check or replace it"
    )
    assert "secret_not-the-key" not in text


def test_lambda_without_a_key_is_a_config_error() -> None:
    with pytest.raises(ConfigError) as caught:
        LambdaCloud("  ")
    assert "SOPHIA_LAMBDA_API_KEY" in caught.value.description


async def test_lambda_fake_also_takes_the_key_as_basic_auth(lambda_api: LambdaApi) -> None:
    """The fake follows Lambda in accepting HTTP basic auth with the key as user name."""
    token = base64.b64encode(f"{API_KEY}:".encode()).decode()
    async with httpx.AsyncClient() as client:
        answer = await client.get(
            f"{lambda_api.base_url}/instances", headers={"Authorization": f"Basic {token}"}
        )
    assert answer.status_code == 200 and answer.json() == {"data": []}


@pytest.mark.parametrize(
    ("overrides", "error", "code", "words"),
    [
        (
            {"instance_type": "gpu_99x_imaginary"},
            BadRequestError,
            400,
            "Lambda Cloud answered 400 global/invalid-parameters: Invalid request parameters",
        ),
        (
            {"ssh_key_names": ["a", "b"]},
            BadRequestError,
            400,
            "global/invalid-parameters",
        ),
        (
            {"instance_type": "gpu_1x_h100_pcie", "region": "us-east-1"},
            UnavailableError,
            503,
            "instance-operations/launch/insufficient-capacity: Not enough capacity to fulfill "
            "launch request. Choose an instance type",
        ),
    ],
    ids=["unknown-type", "two-keys", "no-capacity"],
)
async def test_lambda_maps_its_error_envelope(
    cloud: LambdaCloud,
    lambda_api: LambdaApi,
    overrides: dict[str, object],
    error: type[Exception],
    code: int,
    words: str,
) -> None:
    with pytest.raises(error) as caught:
        await _launch(cloud, **overrides)
    assert caught.value.code == code  # type: ignore[attr-defined]
    assert words in caught.value.description  # type: ignore[attr-defined]
    assert lambda_api.calls("launch") == 1  # a 4xx is never retried


async def test_lambda_unknown_instance_is_404(cloud: LambdaCloud) -> None:
    with pytest.raises(NotFoundError) as caught:
        await cloud.instance("0" * 32)
    with pytest.raises(NotFoundError):
        await cloud.terminate(["0" * 32])
    assert "global/object-does-not-exist" in caught.value.description


async def test_lambda_retries_its_rate_limiter_with_retry_after(
    cloud: LambdaCloud, lambda_api: LambdaApi
) -> None:
    lambda_api.fail("instances", RateLimited(retry_after="1"))
    assert await cloud.instances() == []
    assert lambda_api.calls("instances") == 2


async def test_lambda_server_error_then_success_on_a_read(
    cloud: LambdaCloud, lambda_api: LambdaApi
) -> None:
    lambda_api.fail("types", Fault(500), Fault(502, raw="<html>bad gateway</html>"))
    offers = await cloud.instance_types()
    assert "gpu_1x_a10" in offers
    assert lambda_api.calls("types") == 4  # the start-up check, then three attempts


async def test_lambda_unexpected_answer_shape_is_503(
    cloud: LambdaCloud, lambda_api: LambdaApi
) -> None:
    lambda_api.fail("instances", Fault(200, raw="[]"))
    with pytest.raises(UnavailableError) as caught:
        await cloud.instances()
    assert "Lambda Cloud answered in an unexpected shape" in caught.value.description


def test_lambda_default_policy_takes_lambdas_documented_limits() -> None:
    policy = default_policy()
    assert policy.limits[DEFAULT_LIMIT] == Rate(1.0)
    assert policy.limits[LAUNCH_LIMIT] == Rate(0.1)
    assert LAUNCH_LIMIT not in default_policy(launch_interval_s=0).limits


async def test_lambda_launches_wait_for_their_own_slower_limit(lambda_api: LambdaApi) -> None:
    policy = replace(FAST, deadline_s=1.0, limits={**FAST.limits, LAUNCH_LIMIT: Rate(0.1)})
    async with LambdaCloud(API_KEY, lambda_api.base_url, policy=policy) as client:
        await _launch(client)
        with pytest.raises(OverLimitError) as caught:
            await _launch(client)  # one launch per ten seconds, as Lambda documents
        assert await client.instances()  # reads take the other, faster bucket
    assert "past this call's deadline" in caught.value.description
    assert lambda_api.calls("launch") == 1
