"""Model-call budgets in JetStream KV: holds that never together overshoot a limit."""

from __future__ import annotations

import math
import re
import time

import anyio
import msgspec
import pytest

from adapters.llm.budget import (
    BudgetRecord,
    Budgets,
    BudgetScope,
    BudgetStatus,
    Limits,
    Reservation,
    cost_nano,
    hold_nano,
    key_token,
    limit_nano,
)
from bus import Bus
from bus.errors import BudgetExceededError, error_from_code

pytestmark = pytest.mark.anyio

WEB = BudgetScope(task_id="t1", project="web")


class FakeClock:
    def __init__(self, now: float = 1_700_000_000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


def today() -> str:
    return time.strftime("%Y-%m-%d", time.gmtime())


async def record_of(bus: Bus, key: str) -> BudgetRecord:
    """The raw record, as ``nats kv get`` shows it."""
    kv = await bus.js.key_value(bus.subjects.budgets_bucket)
    entry = await kv.get(key)
    return msgspec.json.decode(entry.value or b"", type=BudgetRecord)


def figures(statuses: list[BudgetStatus]) -> list[tuple[str, float, float, float]]:
    return [(s.kind, s.limit_usd, s.spent_usd, s.held_usd) for s in statuses]


async def test_budgets_reserve_settle_release_figures(bus: Bus) -> None:
    budgets = await Budgets.open(bus, Limits(per_project_usd=5.0))
    scope = BudgetScope(project="web")
    first = await budgets.reserve(scope, 0.04)
    held = await budgets.status(scope)
    await budgets.settle(first, 0.0123)
    settled = await budgets.status(scope)
    second = await budgets.reserve(scope, 0.5)
    await budgets.release(second)
    released = await budgets.status(scope)
    assert figures(held) == [("project", 5.0, 0.0, 0.04)]
    assert figures(settled) == [("project", 5.0, 0.0123, 0.0)]
    assert figures(released) == [("project", 5.0, 0.0123, 0.0)]
    assert released[0].left_usd == pytest.approx(4.9877, abs=1e-12)
    assert (await record_of(bus, "project.web")).holds == {}


async def test_budgets_refusal_names_budget_and_figures(bus: Bus) -> None:
    budgets = await Budgets.open(bus, Limits(per_project_usd=5.0))
    scope = BudgetScope(project="web")
    await budgets.settle(await budgets.reserve(scope, 4.9877), 4.9877)
    with pytest.raises(BudgetExceededError) as refused:
        await budgets.reserve(scope, 0.04)
    assert refused.value.code == 402
    assert refused.value.description == (
        'budget: project "web" has $0.0123 of $5.00 left; this call may cost up to $0.0400'
    )
    rebuilt = error_from_code(402, refused.value.description)
    assert isinstance(rebuilt, BudgetExceededError)
    assert figures(await budgets.status(scope)) == [("project", 5.0, 4.9877, 0.0)]


async def test_budgets_apply_by_scope_task_project_day(bus: Bus) -> None:
    budgets = await Budgets.open(bus, Limits(per_task_usd=1, per_project_usd=2, per_day_usd=3))
    kinds = {
        "none": [s.kind for s in await budgets.status(BudgetScope())],
        "task": [s.kind for s in await budgets.status(BudgetScope(task_id="t1"))],
        "both": [(s.kind, s.name) for s in await budgets.status(WEB)],
    }
    assert kinds == {
        "none": ["day"],
        "task": ["task", "day"],
        "both": [("task", "t1"), ("project", "web"), ("day", today())],
    }


@pytest.mark.parametrize(
    ("scope", "amount", "refusing"),
    [
        (BudgetScope(task_id="t1", project="web"), 0.2, 'task "t1"'),
        (BudgetScope(task_id="t3", project="web"), 0.3, 'project "web"'),
        (BudgetScope(project="api"), 1.3, "day"),
    ],
    ids=["task", "project", "day"],
)
async def test_budgets_refusal_names_the_refusing_budget(
    bus: Bus, scope: BudgetScope, amount: float, refusing: str
) -> None:
    budgets = await Budgets.open(bus, Limits(per_task_usd=1, per_project_usd=2, per_day_usd=3))
    await budgets.reserve(BudgetScope(task_id="t1", project="web"), 0.9)
    await budgets.reserve(BudgetScope(task_id="t2", project="web"), 0.9)
    with pytest.raises(BudgetExceededError) as refused:
        await budgets.reserve(scope, amount)
    assert refused.value.description.startswith(f"budget: {refusing}")
    held = {(s.kind, s.name): s.held_usd for s in await budgets.status(scope)}
    task_held = held.get(("task", scope.task_id), 0.0)
    assert task_held == (0.9 if scope.task_id == "t1" else 0.0)  # a refusal holds nothing
    assert held[("day", today())] == pytest.approx(1.8)


async def test_budgets_refusal_names_the_tightest_budget(bus: Bus) -> None:
    budgets = await Budgets.open(bus, Limits(per_task_usd=1.0, per_project_usd=1.5))
    await budgets.settle(await budgets.reserve(BudgetScope("t0", "web"), 1.0), 1.0)
    await budgets.settle(await budgets.reserve(BudgetScope("t1", "web"), 0.5), 0.5)
    headroom = await budgets.headroom(BudgetScope("t1", "web"))
    with pytest.raises(BudgetExceededError) as refused:
        await budgets.reserve(BudgetScope("t1", "web"), 0.6)  # task has $0.50, project $0
    assert refused.value.description.startswith('budget: project "web" has $0.0000 of $1.50')
    assert headroom.budget is not None
    assert (headroom.budget.label, headroom.left_usd) == ('project "web"', 0.0)
    task = (await budgets.status(BudgetScope("t1", "web")))[0]
    assert (task.kind, task.held_usd) == ("task", 0.0)


async def test_budgets_no_budget_applies(bus: Bus) -> None:
    budgets = await Budgets.open(bus, Limits(per_task_usd=1.0))
    headroom = await budgets.headroom(BudgetScope(project="web"))
    reservation = await budgets.reserve(BudgetScope(project="web"), 1e6)
    await budgets.settle(reservation, 1e6)
    assert (headroom.left_usd, headroom.budget) == (math.inf, None)
    assert reservation.keys == ()


async def test_budgets_expired_holds_come_back(bus: Bus) -> None:
    clock = FakeClock()
    budgets = await Budgets.open(bus, Limits(per_project_usd=1.0), hold_ttl_s=60, clock=clock)
    scope = BudgetScope(project="web")
    await budgets.reserve(scope, 1.0)  # a gateway that never settles
    with pytest.raises(BudgetExceededError):
        await budgets.reserve(scope, 0.5)
    clock.now += 61
    headroom = await budgets.headroom(scope)
    fresh = await budgets.reserve(scope, 0.5)
    stored = await record_of(bus, "project.web")
    assert headroom.left_usd == 1.0
    assert list(stored.holds) == [fresh.id]  # the expired hold was dropped on the write
    assert stored.holds[fresh.id].expires_at == clock.now + 60


async def test_budgets_settle_records_more_than_held(bus: Bus) -> None:
    budgets = await Budgets.open(bus, Limits(per_task_usd=0.03))
    scope = BudgetScope(task_id="t1")
    await budgets.settle(await budgets.reserve(scope, 0.01), 0.05)
    [status] = await budgets.status(scope)
    with pytest.raises(BudgetExceededError) as refused:
        await budgets.reserve(scope, 0.0)
    assert (status.spent_usd, status.held_usd, status.left_usd) == (0.05, 0.0, 0.0)
    assert "has $0.0000 of $0.0300 left" in refused.value.description


async def test_budgets_settle_after_hold_expired_still_counts(bus: Bus) -> None:
    clock = FakeClock()
    budgets = await Budgets.open(bus, Limits(per_task_usd=1.0), hold_ttl_s=1, clock=clock)
    reservation = await budgets.reserve(BudgetScope(task_id="slow"), 0.5)
    clock.now += 5
    await budgets.settle(reservation, 0.4)
    assert figures(await budgets.status(BudgetScope(task_id="slow"))) == [("task", 1.0, 0.4, 0.0)]


async def _reserve_all(
    replicas: list[Budgets], callers: int, amount: float
) -> tuple[list[Reservation], list[BaseException]]:
    granted: list[Reservation] = []
    failed: list[BaseException] = []

    async def one(i: int) -> None:
        try:
            granted.append(await replicas[i % len(replicas)].reserve(BudgetScope(), amount))
        except Exception as exc:  # the test sorts them below
            failed.append(exc)

    async with anyio.create_task_group() as tg:
        for i in range(callers):
            tg.start_soon(one, i)
    return granted, failed


@pytest.mark.parametrize("replicas", [1, 5, 50], ids=["one-process", "5-replicas", "50-replicas"])
async def test_budgets_concurrent_reservations_never_overshoot(bus: Bus, replicas: int) -> None:
    limits = Limits(per_day_usd=2.05)  # room for 20 holds of $0.10, not 21
    fleet = [await Budgets.open(bus, limits) for _ in range(replicas)]
    granted, failed = await _reserve_all(fleet, 50, 0.10)
    stored = await record_of(bus, f"day.{today()}")
    assert len(granted) == 20
    assert len(failed) == 30
    assert all(isinstance(exc, BudgetExceededError) for exc in failed), failed[:1]
    assert sorted(stored.holds) == sorted(r.id for r in granted)
    assert stored.spent_nano_usd + stored.held_nano_usd == 20 * hold_nano(0.10)
    assert stored.held_nano_usd <= limit_nano(2.05)


@pytest.mark.parametrize("replicas", [5, 50], ids=["5-replicas", "50-replicas"])
async def test_budgets_concurrent_settles_lose_nothing(bus: Bus, replicas: int) -> None:
    fleet = [await Budgets.open(bus, Limits(per_day_usd=100.0)) for _ in range(replicas)]
    granted, failed = await _reserve_all(fleet, 50, 1.0)  # 50 writers on one key, then 50 more
    async with anyio.create_task_group() as tg:
        for i, reservation in enumerate(granted):
            tg.start_soon(fleet[i % replicas].settle, reservation, 0.001 * (i + 1))
    stored = await record_of(bus, f"day.{today()}")
    assert (len(granted), failed) == (50, [])
    assert stored.holds == {}
    assert stored.spent_nano_usd == sum(cost_nano(0.001 * (i + 1)) for i in range(50))


ODD_NAMES = ["a.b", "a-b", "a b", "a=b", "", "ünï/code", "x" * 200, "x" * 201, "..", "*>"]


def test_key_token_is_a_key_and_distinct() -> None:
    names = [n for n in ODD_NAMES if n]
    tokens = [key_token(n) for n in names]
    assert len(set(tokens)) == len(names)
    assert all(re.fullmatch(r"[-/_=a-zA-Z0-9]{1,64}", t) for t in tokens)
    assert key_token("web") == "web"
    assert key_token("a-b") == "a-b"


async def test_budgets_scope_names_with_odd_characters(bus: Bus) -> None:
    budgets = await Budgets.open(bus, Limits(per_project_usd=1.0))
    names = [n for n in ODD_NAMES if n]
    for i, name in enumerate(names):
        await budgets.settle(await budgets.reserve(BudgetScope(project=name), 0.1), 0.01 * (i + 1))
    spent = [(await budgets.status(BudgetScope(project=n)))[0].spent_usd for n in names]
    assert spent == [pytest.approx(0.01 * (i + 1)) for i in range(len(names))]


async def test_budgets_refusal_text_bounds_the_name(bus: Bus) -> None:
    budgets = await Budgets.open(bus, Limits(per_project_usd=0.0))
    with pytest.raises(BudgetExceededError) as refused:
        await budgets.reserve(BudgetScope(project='evil"\n\u202e' + "y" * 500), 0.01)
    text = refused.value.description
    assert text.startswith('budget: project "evil\\"??' + "y" * 32 + '…" has $0.0000 of $0.0000')
    assert len(text) < 200


@pytest.mark.parametrize(
    ("usd", "hold", "limit"),
    [(0.1, 100_000_000, 100_000_000), (0.3, 300_000_000, 300_000_000), (1e-10, 1, 0)],
    ids=["0.1", "0.3", "sub-nano"],
)
def test_money_rounds_holds_up_and_limits_down(usd: float, hold: int, limit: int) -> None:
    assert (hold_nano(usd), limit_nano(usd)) == (hold, limit)


@pytest.mark.parametrize("usd", [-0.01, math.nan, math.inf], ids=["negative", "nan", "inf"])
def test_money_refuses_bad_amounts(usd: float) -> None:
    with pytest.raises(ValueError, match="usd"):
        hold_nano(usd)


def test_limits_refuse_negative() -> None:
    with pytest.raises(ValueError, match="per_day_usd"):
        Limits(per_day_usd=-1)
