"""The GPU cost guard: a launch that would overshoot the hourly or monthly budget is refused.

What is counted (UTC calendar month): every instance this service launched or saw in a list,
from then until it was terminated or gone from a list, at the price the latest list gave its
type (so a price change applies from the list that saw it). Instances launched elsewhere
count from the first list that showed them: Lambda's API does not say when an instance
started, so spend before that is unknown to us. The ledger is kept in one JSON file (written
whole, atomically) so a restart keeps the month's spend.

The checks, both with the new instances included:

- hourly: the running instances' current prices plus the new type's price times the quantity;
- monthly: spent so far this month plus that hourly figure until the month ends (running
  instances are assumed to keep running: the safe assumption for a budget).

Without both budgets configured every launch is refused: an unbounded default is how a
forgotten 8-GPU machine costs thousands. A refusal is a BudgetExceededError (402) that names
the projected figure and the budget for the hourly and the monthly check alike.
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Callable, Iterable, Mapping
from datetime import UTC, datetime
from pathlib import Path

import msgspec

from bus.errors import BudgetExceededError
from bus.schemas.gpu import GpuSpend

log = logging.getLogger("sophia.infra")


class Usage(msgspec.Struct, kw_only=True):
    """One instance's spend this month: ``accrued_usd`` up to ``since``, then at ``price``."""

    instance_type: str
    price_usd_per_hour: float
    since: float  # epoch seconds
    accrued_usd: float = 0.0
    ended: float | None = None  # epoch seconds; None while it runs


def month_bounds(now: float) -> tuple[float, float]:
    """Epoch seconds of the start of ``now``'s UTC month and of the next one."""
    day = datetime.fromtimestamp(now, UTC)
    start = day.replace(day=1, hour=0, minute=0, second=0, microsecond=0)
    following = start.replace(year=start.year + 1, month=1) if start.month == 12 else None
    following = following or start.replace(month=start.month + 1)
    return start.timestamp(), following.timestamp()


class Ledger:
    """Per-instance spend this month; see the module docstring for what it counts."""

    def __init__(self, path: Path | None = None, clock: Callable[[], float] = time.time) -> None:
        self.path = path
        self.clock = clock
        self._usage: dict[str, Usage] = self._read()

    def _read(self) -> dict[str, Usage]:
        if self.path is None or not self.path.is_file():
            return {}
        try:
            return msgspec.json.decode(self.path.read_bytes(), type=dict[str, Usage])
        except (OSError, msgspec.DecodeError):
            # budgets still apply to what runs; only the month's ended spend is lost
            log.warning("gpu_ledger_unreadable", extra={"path": str(self.path)})
            return {}

    def _write(self) -> None:
        if self.path is None:
            return
        self.path.parent.mkdir(parents=True, exist_ok=True)
        partial = self.path.with_suffix(".tmp")
        partial.write_bytes(msgspec.json.encode(self._usage))
        os.replace(partial, self.path)

    def _accrue(self, usage: Usage, now: float) -> None:
        start, _ = month_bounds(now)
        if usage.since < start:  # a new month: last month's spend is not this month's
            usage.accrued_usd, usage.since = 0.0, start
        end = now if usage.ended is None else min(now, usage.ended)
        if end > usage.since:
            usage.accrued_usd += usage.price_usd_per_hour * (end - usage.since) / 3600
            usage.since = end

    def observe(self, running: Mapping[str, tuple[str, float]]) -> None:
        """Record a list: ``running`` maps instance id to (type, current price); an instance
        missing from it has ended."""
        now = self.clock()
        for instance_id, usage in self._usage.items():
            if usage.ended is None:
                self._accrue(usage, now)
                if instance_id not in running:
                    usage.ended = now
        for instance_id, (instance_type, price) in running.items():
            usage = self._usage.get(instance_id)
            if usage is None or usage.ended is not None:
                self._usage[instance_id] = Usage(
                    instance_type=instance_type, price_usd_per_hour=price, since=now
                )
            else:
                usage.price_usd_per_hour = price
        self._forget_old(now)
        self._write()

    def started(self, ids: Iterable[str], instance_type: str, price: float) -> None:
        now = self.clock()
        for instance_id in ids:
            self._usage[instance_id] = Usage(
                instance_type=instance_type, price_usd_per_hour=price, since=now
            )
        self._write()

    def ended(self, ids: Iterable[str]) -> None:
        now = self.clock()
        for instance_id in ids:
            usage = self._usage.get(instance_id)
            if usage is not None and usage.ended is None:
                self._accrue(usage, now)
                usage.ended = now
        self._write()

    def _forget_old(self, now: float) -> None:
        start, _ = month_bounds(now)
        for instance_id in [i for i, u in self._usage.items() if u.ended and u.ended < start]:
            del self._usage[instance_id]

    def hourly_usd(self) -> float:
        """What the running instances cost per hour, at their latest prices."""
        return sum(u.price_usd_per_hour for u in self._usage.values() if u.ended is None)

    def spent_usd(self) -> float:
        """Spend so far this month."""
        now = self.clock()
        for usage in self._usage.values():
            self._accrue(usage, now)
        start, _ = month_bounds(now)
        return sum(u.accrued_usd for u in self._usage.values() if not u.ended or u.ended >= start)


class CostGuard:
    """Budgets over a ledger; :meth:`check` refuses what would overshoot them."""

    def __init__(self, ledger: Ledger, hourly_usd: float | None, monthly_usd: float | None):
        self.ledger = ledger
        self.hourly_usd = hourly_usd
        self.monthly_usd = monthly_usd

    def spend(self, extra_hourly_usd: float = 0.0) -> GpuSpend:
        """Where spending stands, with ``extra_hourly_usd`` more running from now on."""
        now = self.ledger.clock()
        hourly = self.ledger.hourly_usd() + extra_hourly_usd
        spent = self.ledger.spent_usd()
        _, month_end = month_bounds(now)
        return GpuSpend(
            hourly_usd=round(hourly, 4),
            month_spent_usd=round(spent, 4),
            month_projected_usd=round(spent + hourly * (month_end - now) / 3600, 4),
            hourly_budget_usd=self.hourly_usd,
            monthly_budget_usd=self.monthly_usd,
        )

    def check(self, new_hourly_usd: float) -> GpuSpend:
        """The spend with the launch included. Raises BudgetExceededError naming, for the
        hourly and the monthly check, the projected figure and the budget."""
        projected = self.spend(new_hourly_usd)
        over = []
        if self.hourly_usd is None or projected.hourly_usd > self.hourly_usd:
            over.append("hourly")
        if self.monthly_usd is None or projected.month_projected_usd > self.monthly_usd:
            over.append("monthly")
        if over:
            raise BudgetExceededError(
                f"GPU launch refused, over the {' and '.join(over)} budget: "
                f"hourly ${projected.hourly_usd:.2f} projected vs {_budget(self.hourly_usd)}; "
                f"monthly ${projected.month_projected_usd:.2f} projected vs "
                f"{_budget(self.monthly_usd)}"
                + (_UNSET_HINT if None in (self.hourly_usd, self.monthly_usd) else "")
            )
        return projected


_UNSET_HINT = " (set SOPHIA_GPU_BUDGET_HOURLY_USD and _MONTHLY_USD)"


def _budget(usd: float | None) -> str:
    return "no budget" if usd is None else f"${usd:.2f} budget"
