"""The GPU cost guard: the ledger's month, refusals naming both figures, re-pricing on list."""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import UTC, datetime
from pathlib import Path

import pytest

from bus.config import load
from bus.errors import BudgetExceededError, ConfigError, UnavailableError
from bus.schemas.gpu import GpuLaunchRequest, GpuListRequest, GpuTerminateRequest
from infra.costguard import CostGuard, Ledger, month_bounds
from infra.gpu import GpuService, GpuSettings
from tests.fixtures.lambda_api import API_KEY, Fault, Hang, LambdaApi

HOUR = 3600.0


class Clock:
    """A settable wall clock for the ledger (epoch seconds)."""

    def __init__(self, when: datetime) -> None:
        self.now = when.timestamp()

    def __call__(self) -> float:
        return self.now

    def advance(self, hours: float) -> None:
        self.now += hours * HOUR


def _clock(day: int = 10, month: int = 3) -> Clock:
    return Clock(datetime(2026, month, day, tzinfo=UTC))


# ---- the ledger ---------------------------------------------------------------------------


def test_ledger_accrues_each_price_from_the_list_that_saw_it() -> None:
    clock = _clock()
    ledger = Ledger(clock=clock)
    ledger.observe({"a": ("gpu_1x_a10", 1.0)})
    clock.advance(1)
    ledger.observe({"a": ("gpu_1x_a10", 2.0)})  # re-priced
    clock.advance(1)
    assert ledger.spent_usd() == pytest.approx(3.0)
    assert ledger.hourly_usd() == 2.0


def test_ledger_stops_counting_what_ended_or_left_the_list() -> None:
    clock = _clock()
    ledger = Ledger(clock=clock)
    ledger.started(["a", "b"], "gpu_1x_a10", 1.0)
    clock.advance(2)
    ledger.ended(["a"])
    ledger.observe({})  # b is gone from the list: ended too
    clock.advance(5)
    assert ledger.spent_usd() == pytest.approx(4.0)
    assert ledger.hourly_usd() == 0.0


def test_ledger_counts_only_this_calendar_month() -> None:
    clock = Clock(datetime(2026, 3, 31, 22, tzinfo=UTC))
    ledger = Ledger(clock=clock)
    ledger.started(["a"], "gpu_1x_a10", 1.0)
    ledger.started(["b"], "gpu_1x_a10", 1.0)
    clock.advance(1)
    ledger.ended(["b"])  # ended in March
    clock.advance(3)  # 02:00 on 1 April
    assert ledger.spent_usd() == pytest.approx(2.0)  # a's two April hours only


def test_ledger_keeps_the_month_across_a_restart(tmp_path: Path) -> None:
    clock = _clock()
    Ledger(tmp_path / "ledger.json", clock).started(["a"], "gpu_1x_a10", 3.0)
    clock.advance(2)
    again = Ledger(tmp_path / "ledger.json", clock)
    assert again.spent_usd() == pytest.approx(6.0)
    assert again.hourly_usd() == 3.0


def test_month_bounds_span_december_into_january() -> None:
    start, end = month_bounds(datetime(2026, 12, 15, tzinfo=UTC).timestamp())
    assert datetime.fromtimestamp(start, UTC) == datetime(2026, 12, 1, tzinfo=UTC)
    assert datetime.fromtimestamp(end, UTC) == datetime(2027, 1, 1, tzinfo=UTC)


# ---- the guard ----------------------------------------------------------------------------


def _guard(hourly: float | None, monthly: float | None) -> CostGuard:
    """Two $2/h instances run since 1 March 00:00; at 06:00 $24 is spent, 738 h are left."""
    clock = Clock(datetime(2026, 3, 1, tzinfo=UTC))
    ledger = Ledger(clock=clock)
    ledger.started(["a", "b"], "gpu_1x_h100_pcie", 2.0)
    clock.now = datetime(2026, 3, 1, 6, tzinfo=UTC).timestamp()  # 6 h in: $24 spent
    return CostGuard(ledger, hourly, monthly)


def test_guard_allows_a_launch_within_both_budgets() -> None:
    guard = _guard(10.0, 100_000.0)
    spend = guard.check(1.0)
    assert spend.hourly_usd == 5.0
    assert spend.month_spent_usd == pytest.approx(24.0)


@pytest.mark.parametrize(
    ("hourly", "monthly", "new", "words"),
    [
        (
            4.5,
            100_000.0,
            1.0,
            "GPU launch refused, over the hourly budget: hourly $5.00 projected vs $4.50 budget; "
            "monthly $3714.00 projected vs $100000.00 budget",
        ),
        (
            100.0,
            3000.0,
            1.0,
            "GPU launch refused, over the monthly budget: hourly $5.00 projected vs $100.00 "
            "budget; monthly $3714.00 projected vs $3000.00 budget",
        ),
        (
            1.0,
            10.0,
            1.0,
            "over the hourly and monthly budget: hourly $5.00 projected vs $1.00 budget; "
            "monthly $3714.00 projected vs $10.00 budget",
        ),
        (
            None,
            None,
            0.01,
            "hourly $4.01 projected vs no budget; monthly $2983.38 projected vs no budget "
            "(set SOPHIA_GPU_BUDGET_HOURLY_USD and _MONTHLY_USD)",
        ),
    ],
    ids=["hourly", "monthly", "both", "unconfigured"],
)
def test_guard_refusal_names_projected_figures_and_budgets(
    hourly: float | None, monthly: float | None, new: float, words: str
) -> None:
    guard = _guard(hourly, monthly)
    with pytest.raises(BudgetExceededError) as caught:
        guard.check(new)
    assert caught.value.code == 402
    assert words in caught.value.description


@pytest.mark.parametrize(
    ("env", "words"),
    [
        (
            {"SOPHIA_GPU_BUDGET_HOURLY_USD": "-1"},
            "SOPHIA_GPU_BUDGET_HOURLY_USD: must be a number greater than 0",
        ),
        ({"SOPHIA_GPU_BUDGET_MONTHLY_USD": "lots"}, "SOPHIA_GPU_BUDGET_MONTHLY_USD: Expected"),
        ({"SOPHIA_LAMBDA_BASE_URL": "ftp://x"}, "SOPHIA_LAMBDA_BASE_URL: must be an http(s)://"),
    ],
    ids=["negative-budget", "not-a-number", "not-http"],
)
def test_gpu_settings_name_the_bad_variable(env: dict[str, str], words: str) -> None:
    with pytest.raises(ConfigError) as caught:
        load(GpuSettings, env=env)
    assert words in caught.value.description


def test_gpu_settings_budgets_default_to_unset() -> None:
    settings = load(GpuSettings, env={"SOPHIA_GPU_BUDGET_HOURLY_USD": "12.5"})
    assert settings.gpu_budget_hourly_usd == 12.5
    assert settings.gpu_budget_monthly_usd is None


# ---- the service against the fake Lambda API ----------------------------------------------


def _settings(tmp_path: Path, base_url: str, **overrides: object) -> GpuSettings:
    values: dict[str, object] = {
        "lambda_base_url": base_url,
        "lambda_rate_per_s": 1000.0,
        "lambda_launch_interval_s": 0.0,
        "lambda_backoff_s": 0.01,
        "lambda_timeout_s": 2.0,
        "gpu_budget_hourly_usd": 4.0,
        "gpu_budget_monthly_usd": 1_000_000.0,
        "gpu_ledger": str(tmp_path / "ledger.json"),
    }
    values.update(overrides)
    return GpuSettings(**values)  # type: ignore[arg-type]


@pytest.fixture
async def gpu(tmp_path: Path, lambda_api: LambdaApi) -> AsyncIterator[GpuService]:
    service = await GpuService.open(
        _settings(tmp_path, lambda_api.base_url), tmp_path, env={"SOPHIA_LAMBDA_API_KEY": API_KEY}
    )
    yield service
    await service.aclose()


def _launch(instance_type: str = "gpu_1x_a10", quantity: int = 1) -> GpuLaunchRequest:
    return GpuLaunchRequest(
        instance_type=instance_type,
        region="us-west-1",
        ssh_key_names=["laptop"],
        quantity=quantity,
    )


@pytest.mark.anyio
async def test_gpu_list_reprices_running_instances_every_time(
    gpu: GpuService, lambda_api: LambdaApi
) -> None:
    lambda_api.add_instance("gpu_1x_h100_pcie", name="from-the-dashboard")
    first = await gpu.list(GpuListRequest())
    lambda_api.set_price("gpu_1x_h100_pcie", 199)
    second = await gpu.list(GpuListRequest())

    assert [i.price_usd_per_hour for i in first.instances] == [2.49]
    assert [i.price_usd_per_hour for i in second.instances] == [1.99]
    assert first.spend.hourly_usd == 2.49
    assert second.spend.hourly_usd == 1.99


@pytest.mark.anyio
async def test_gpu_launch_over_the_hourly_budget_is_refused_before_anything_is_sent(
    gpu: GpuService, lambda_api: LambdaApi
) -> None:
    lambda_api.add_instance("gpu_1x_h100_pcie")  # $2.49/h already running elsewhere
    with pytest.raises(BudgetExceededError) as caught:
        await gpu.launch(_launch("gpu_1x_a10", quantity=3))  # + 3 x $0.75
    assert "over the hourly budget: hourly $4.74 projected vs $4.00 budget" in (
        caught.value.description
    )
    assert "monthly $" in caught.value.description and "vs $1000000.00 budget" in (
        caught.value.description
    )
    assert lambda_api.calls("launch") == 0


@pytest.mark.anyio
async def test_gpu_launch_counts_then_terminate_releases(
    gpu: GpuService, lambda_api: LambdaApi
) -> None:
    launched = await gpu.launch(_launch("gpu_1x_h100_pcie"))
    assert len(launched.instances) == 1 and launched.name.startswith("sophia-")
    assert launched.spend.hourly_usd == 2.49
    with pytest.raises(BudgetExceededError):
        await gpu.launch(_launch("gpu_1x_h100_pcie"))  # 2 x $2.49 > $4

    ended = await gpu.terminate(GpuTerminateRequest(instance_ids=[launched.instances[0].id]))
    assert [i.status for i in ended.instances] == ["terminated"]
    assert ended.spend.hourly_usd == 0.0
    again = await gpu.launch(_launch("gpu_1x_h100_pcie"))
    assert len(again.instances) == 1
    assert lambda_api.calls("launch") == 2


@pytest.mark.anyio
async def test_gpu_launch_with_a_lost_answer_is_found_by_name_not_sent_twice(
    tmp_path: Path, lambda_api: LambdaApi
) -> None:
    settings = _settings(tmp_path, lambda_api.base_url, lambda_timeout_s=0.5)
    service = await GpuService.open(settings, tmp_path, env={"SOPHIA_LAMBDA_API_KEY": API_KEY})
    lambda_api.fail("launch", Hang(10.0, act_first=True))
    launched = await service.launch(_launch())
    await service.aclose()

    assert lambda_api.calls("launch") == 1
    assert [i.id for i in launched.instances] == list(lambda_api.instances)
    assert launched.spend.hourly_usd == 0.75


@pytest.mark.anyio
async def test_gpu_launch_that_failed_unseen_says_the_outcome_is_unknown(
    gpu: GpuService, lambda_api: LambdaApi
) -> None:
    lambda_api.fail("launch", Fault(500))
    with pytest.raises(UnavailableError) as caught:
        await gpu.launch(_launch())
    assert "got no answer and no instance carries that name yet" in caught.value.description
    assert lambda_api.calls("launch") == 1


@pytest.mark.anyio
async def test_gpu_without_a_key_answers_503_naming_the_variable(
    tmp_path: Path, lambda_api: LambdaApi
) -> None:
    service = await GpuService.open(_settings(tmp_path, lambda_api.base_url), tmp_path, env={})
    with pytest.raises(UnavailableError) as caught:
        await service.list(GpuListRequest())
    assert caught.value.description == (
        "the GPU cloud is not configured: set SOPHIA_LAMBDA_API_KEY"
    )
    assert lambda_api.requests == []
