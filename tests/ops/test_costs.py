"""``sophia costs``: the gateway's ledger summed, as a table or JSON; exit 3 without it."""

from __future__ import annotations

import json
from pathlib import Path

import anyio
import pytest

from bus import Bus, Settings
from bus.schemas.llm import CostsRequest, CostsResult, Scope
from ops.commands.costs import since
from tests.fixtures.openai_upstream import OpenAIUpstream, Reply
from tests.llm.harness import ask, complete, llm_agent, model, write_toml
from tests.ops.conftest import Sophia

pytestmark = pytest.mark.anyio


async def test_costs_prints_totals_by_project_as_table_and_json(
    sophia: Sophia,
    bus: Bus,
    settings: Settings,
    monkeypatch: pytest.MonkeyPatch,
    upstream: OpenAIUpstream,
    tmp_path: Path,
) -> None:
    toml = write_toml(
        tmp_path / "sophia.toml", [model("m", upstream.base_url, input_usd_per_mtok=2.0)]
    )
    upstream.script("m", Reply(text="a", prompt_tokens=500, completion_tokens=1))
    async with llm_agent(settings, monkeypatch, toml):
        await complete(bus, ask("hello", scope=Scope(project="web")))
        with anyio.fail_after(10):
            while (await bus.request("llm", "costs", CostsRequest(), CostsResult)).calls < 1:  # noqa: ASYNC110
                await anyio.sleep(0.05)
        shown = await sophia("costs", "--by", "project")
        as_json = await sophia("costs", "--by", "project", "--since", "1d", "--json")
    assert shown.status == 0, shown.err
    assert "PROJECT" in shown.out and "web" in shown.out and "0.001000" in shown.out
    assert as_json.status == 0, as_json.err
    assert json.loads(as_json.out)["totals"][0]["key"] == "web"


async def test_costs_without_the_llm_agent_exits_3(sophia: Sophia) -> None:
    run = await sophia("costs")
    assert run.status == 3
    assert "llm" in run.err


@pytest.mark.parametrize("value", ["7d", "12h", "2026-12-01", "all"], ids=str)
def test_costs_since_reads_durations_dates_and_all(value: str) -> None:
    assert since(value) >= 0


def test_costs_since_refuses_anything_else() -> None:
    with pytest.raises(Exception, match="duration"):
        since("last tuesday")
