"""The real infra agent serves ``infra.gpu.*`` beside its Pulumi endpoints."""

from __future__ import annotations

from pathlib import Path

import pytest

from agents.infra import InfraAgent
from bus import Bus, Settings
from bus.errors import UnavailableError
from bus.schemas.gpu import GpuTypes, GpuTypesRequest
from infra.config import InfraSettings
from infra.gpu import GpuSettings
from tests.fixtures.lambda_api import API_KEY, LambdaApi
from tests.fixtures.nats_server import running
from tests.infra.harness import Infra, make_programs

pytestmark = pytest.mark.anyio


async def test_infra_agent_without_a_lambda_key_answers_503_naming_it(infra: Infra) -> None:
    with pytest.raises(UnavailableError, match="SOPHIA_LAMBDA_API_KEY"):
        await infra.bus.request("infra", "gpu.types", GpuTypesRequest(), GpuTypes)


async def test_infra_agent_lists_gpu_types_from_lambda(
    settings: Settings,
    bus: Bus,
    lambda_api: LambdaApi,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("SOPHIA_LAMBDA_API_KEY", API_KEY)
    config = InfraSettings(infra_stacks_dir=str(make_programs(tmp_path / "stacks")))
    gpu = GpuSettings(lambda_base_url=lambda_api.base_url, gpu_ledger=str(tmp_path / "l.json"))
    async with running(InfraAgent(settings, config, gpu=gpu)):
        found = await bus.request("infra", "gpu.types", GpuTypesRequest(), GpuTypes)
    assert found.types and all(t.price_usd_per_hour > 0 for t in found.types)
