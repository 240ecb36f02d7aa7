"""``infra.gpu.*`` over a real nats-server: a small agent that mixes in GpuEndpoints."""

from __future__ import annotations

from collections.abc import AsyncIterator, Mapping
from pathlib import Path

import pytest

from bus import Agent, Bus, Settings
from bus.errors import BadRequestError, BudgetExceededError, UnavailableError
from bus.schemas.gpu import (
    GpuInstances,
    GpuLaunched,
    GpuLaunchRequest,
    GpuListRequest,
    GpuTerminated,
    GpuTerminateRequest,
    GpuTypes,
    GpuTypesRequest,
)
from infra.gpu import GpuSettings
from infra.gpu_endpoints import GpuEndpoints
from tests.fixtures.lambda_api import API_KEY, LambdaApi
from tests.fixtures.nats_server import running

pytestmark = pytest.mark.anyio


class GpuAgent(GpuEndpoints, Agent, name="infra"):
    """Serves the GPU endpoints as the infra agent does, against the fake Lambda API."""

    def __init__(
        self, settings: Settings, gpu_settings: GpuSettings, env: Mapping[str, str]
    ) -> None:
        super().__init__(settings)
        self.gpu_settings = gpu_settings
        self.env = env

    async def setup(self) -> None:
        await self.open_gpu(self.gpu_settings, env=self.env)

    async def teardown(self) -> None:
        await self.close_gpu()


def _gpu_settings(tmp_path: Path, base_url: str) -> GpuSettings:
    return GpuSettings(
        lambda_base_url=base_url,
        lambda_rate_per_s=1000.0,
        lambda_launch_interval_s=0.0,
        lambda_backoff_s=0.01,
        gpu_budget_hourly_usd=3.0,
        gpu_budget_monthly_usd=1_000_000.0,
        gpu_ledger=str(tmp_path / "gpu-ledger.json"),
    )


@pytest.fixture
async def agent(
    settings: Settings, lambda_api: LambdaApi, tmp_path: Path
) -> AsyncIterator[GpuAgent]:
    env = {"SOPHIA_LAMBDA_API_KEY": API_KEY}
    async with running(GpuAgent(settings, _gpu_settings(tmp_path, lambda_api.base_url), env)) as a:
        yield a


def _launch(instance_type: str = "gpu_1x_a10", quantity: int = 1) -> GpuLaunchRequest:
    return GpuLaunchRequest(
        instance_type=instance_type, region="us-west-1", ssh_key_names=["laptop"], quantity=quantity
    )


def test_gpu_endpoints_register_through_the_mixin() -> None:
    specs = {s.subject_tail: s for s in GpuAgent._endpoints.values()}
    assert {"gpu.types", "gpu.list", "gpu.launch", "gpu.terminate"} <= set(specs)
    assert specs["gpu.types"].access == "read" and specs["gpu.list"].access == "read"
    assert specs["gpu.launch"].access == "" and specs["gpu.terminate"].access == ""
    assert all(specs[s].public for s in ("gpu.types", "gpu.list", "gpu.launch", "gpu.terminate"))


async def test_gpu_endpoints_types_launch_list_terminate_over_the_bus(
    agent: GpuAgent, bus: Bus, lambda_api: LambdaApi
) -> None:
    types = await bus.request("infra", "gpu.types", GpuTypesRequest(region="us-west-1"), GpuTypes)
    launched = await bus.request("infra", "gpu.launch", _launch(), GpuLaunched)
    listed = await bus.request("infra", "gpu.list", GpuListRequest(), GpuInstances)
    ids = [i.id for i in launched.instances]
    ended = await bus.request(
        "infra", "gpu.terminate", GpuTerminateRequest(instance_ids=ids), GpuTerminated
    )

    assert [t.name for t in types.types] == ["gpu_1x_a10", "gpu_1x_h100_pcie"]
    assert types.types[0].price_usd_per_hour == 0.75
    assert [i.id for i in listed.instances] == ids
    assert listed.instances[0].status == "booting"
    assert listed.spend.hourly_usd == 0.75 and listed.spend.hourly_budget_usd == 3.0
    assert [i.status for i in ended.instances] == ["terminated"]
    assert ended.spend.hourly_usd == 0.0
    assert lambda_api.instances == {}


async def test_gpu_endpoints_refusal_over_the_bus_is_402_naming_both_figures(
    agent: GpuAgent, bus: Bus, lambda_api: LambdaApi
) -> None:
    with pytest.raises(BudgetExceededError) as caught:
        await bus.request("infra", "gpu.launch", _launch("gpu_1x_h100_pcie", 2), GpuLaunched)
    assert caught.value.code == 402
    text = caught.value.description
    assert "hourly $4.98 projected vs $3.00 budget" in text
    assert "monthly $" in text and "projected vs $1000000.00 budget" in text
    assert lambda_api.calls("launch") == 0


async def test_gpu_endpoints_reject_a_bad_launch_with_400(agent: GpuAgent, bus: Bus) -> None:
    with pytest.raises(BadRequestError) as caught:
        await bus.request(
            "infra",
            "gpu.launch",
            GpuLaunchRequest(instance_type="gpu_1x_a10", region="us-west-1", ssh_key_names=[]),
            GpuLaunched,
        )
    assert "ssh_key_names" in caught.value.description


async def test_gpu_endpoints_without_a_key_answer_503(
    settings: Settings, lambda_api: LambdaApi, tmp_path: Path, bus: Bus
) -> None:
    unconfigured = GpuAgent(settings, _gpu_settings(tmp_path, lambda_api.base_url), env={})
    async with running(unconfigured):
        with pytest.raises(UnavailableError) as caught:
            await bus.request("infra", "gpu.list", GpuListRequest(), GpuInstances)
    assert "set SOPHIA_LAMBDA_API_KEY" in caught.value.description
    assert lambda_api.requests == []
