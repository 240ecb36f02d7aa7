"""USD budgets per task, per project and per UTC day, shared by every gateway replica.

Guarantee: holds taken by concurrent reservations never together overshoot a budget. Each
budget is one record in the ``<prefix>_llm_budgets`` bucket with what was spent and what is
held for attempts in flight; a hold is added only by a compare-and-set write
(:meth:`bus.records.Records.update`) that checks spent + held + the new hold against the
limit, so two replicas cannot both take the last dollar. Every hold carries an expiry: a
gateway that died between ``reserve`` and ``settle`` gives the money back when the hold
expires (expired holds are ignored on every read and dropped on every write).

Money is integer nano-dollars (1e-9 USD) inside, so sums are exact: a hold is rounded up and
a limit down, so rounding never lets a sum pass a limit; a settled cost is recorded as it was
(rounded to the nearest nano-dollar), even when it is more than was held.
"""

from __future__ import annotations

import hashlib
import math
import re
import time
import uuid
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any, Literal

import anyio
import msgspec
from nats.js.kv import KeyValue

from bus.client import Bus
from bus.errors import BudgetExceededError, NotFoundError
from bus.records import Records

NANO = 1_000_000_000  # nano-dollars per dollar
UPDATE_ATTEMPTS = 64  # lost races per write before ConflictError (see Budgets)
CLEANUP_GRACE_S = 10.0  # how long settle, release and a failed reserve's undo may run shielded
SHOWN_NAME = 40  # characters of a task id or project name an error text shows

Kind = Literal["task", "project", "day"]
_SAFE_NAME = re.compile(r"[A-Za-z0-9_-]{1,64}")
_UNSAFE_RUN = re.compile(r"[^A-Za-z0-9_-]+")


def hold_nano(usd: float) -> int:
    """``usd`` in nano-dollars, rounded up (float noise below 1e-12 USD ignored)."""
    return math.ceil(round(_checked(usd) * NANO, 3))


def limit_nano(usd: float) -> int:
    """``usd`` in nano-dollars, rounded down (float noise below 1e-12 USD ignored)."""
    return math.floor(round(_checked(usd) * NANO, 3))


def cost_nano(usd: float) -> int:
    """``usd`` in nano-dollars, rounded to the nearest."""
    return round(_checked(usd) * NANO)


def _checked(usd: float) -> float:
    if not math.isfinite(usd) or usd < 0:
        raise ValueError("usd: must be a finite number >= 0")
    return usd


def key_token(name: str) -> str:
    """A KV key token for any name, distinct for distinct names.

    A name of 1-64 letters, digits, ``_`` or ``-`` is its own token; any other becomes a
    readable slug, ``=`` and 32 hex digits of its SHA-256 (``=`` never occurs in the first
    form, so the two cannot collide).
    """
    if _SAFE_NAME.fullmatch(name):
        return name
    slug = _UNSAFE_RUN.sub("-", name)[:24]
    return f"{slug}={hashlib.sha256(name.encode()).hexdigest()[:32]}"


def shown(name: str) -> str:
    """``name`` quoted for an error text: bounded, printable, quotes escaped."""
    cut = name if len(name) <= SHOWN_NAME else name[: SHOWN_NAME - 1] + "…"
    printable = "".join(c if c.isprintable() else "?" for c in cut)
    return '"' + printable.replace("\\", "\\\\").replace('"', '\\"') + '"'


def usd_text(nano: int) -> str:
    """``$5.00``, ``$0.0123``, ``$2.50e-06``: enough digits to compare model-call costs."""
    usd = nano / NANO
    if abs(usd) >= 1:
        return f"${usd:,.2f}"
    if usd == 0 or abs(usd) >= 0.0001:
        return f"${usd:.4f}"
    return f"${usd:.2e}"


@dataclass(frozen=True, slots=True)
class Limits:
    """USD limits; None: no such budget."""

    per_task_usd: float | None = None
    per_project_usd: float | None = None
    per_day_usd: float | None = None  # all calls of the install in one UTC day

    def __post_init__(self) -> None:
        for field in ("per_task_usd", "per_project_usd", "per_day_usd"):
            value = getattr(self, field)
            if value is not None and not (math.isfinite(value) and value >= 0):
                raise ValueError(f"{field}: must be None or a finite number >= 0")


@dataclass(frozen=True, slots=True)
class BudgetScope:
    """What a model call counts against."""

    task_id: str = ""  # "": not part of a task, no task budget applies
    project: str = ""  # "": no project budget applies
    task_limit_usd: float | None = None  # the task's own budget; the tighter one applies


@dataclass(frozen=True, slots=True)
class BudgetStatus:
    """One budget's figures; ``left_usd`` is never negative, even after an overshoot."""

    kind: Kind
    name: str  # the task id, the project name or the UTC date (YYYY-MM-DD)
    limit_usd: float
    spent_usd: float
    held_usd: float
    left_usd: float

    @property
    def label(self) -> str:
        """``project "web"``: how error texts name this budget."""
        return f"{self.kind} {shown(self.name)}"


@dataclass(frozen=True, slots=True)
class Headroom:
    """The smallest amount left across the budgets of a scope, and which budget that is."""

    left_usd: float = math.inf
    budget: BudgetStatus | None = None  # None: no budget applies


@dataclass(frozen=True, slots=True)
class Reservation:
    """Holds of one attempt; settle or release it once."""

    id: str
    amount_usd: float
    keys: tuple[str, ...]  # the budget records holding it, in the order they were taken


class Hold(msgspec.Struct, frozen=True, kw_only=True):
    nano_usd: int
    expires_at: float  # unix time; past it the hold no longer counts


class BudgetRecord(msgspec.Struct, frozen=True, kw_only=True):
    """One budget's KV record: what was spent and the holds in flight (by reservation id)."""

    spent_nano_usd: int = 0
    holds: dict[str, Hold] = msgspec.field(default_factory=dict)

    def live(self, now: float) -> BudgetRecord:
        """This record without its expired holds."""
        holds = {k: h for k, h in self.holds.items() if h.expires_at > now}
        return self if len(holds) == len(self.holds) else msgspec.structs.replace(self, holds=holds)

    @property
    def held_nano_usd(self) -> int:
        return sum(h.nano_usd for h in self.holds.values())


@dataclass(frozen=True, slots=True)
class _Budget:
    kind: Kind
    name: str
    limit: int  # nano-dollars

    @property
    def key(self) -> str:
        return f"{self.kind}.{key_token(self.name)}"

    def left(self, record: BudgetRecord) -> int:
        """Nano-dollars left: negative after a settled cost overshot the limit."""
        return self.limit - record.spent_nano_usd - record.held_nano_usd

    def status(self, record: BudgetRecord) -> BudgetStatus:
        return BudgetStatus(
            kind=self.kind,
            name=self.name,
            limit_usd=self.limit / NANO,
            spent_usd=record.spent_nano_usd / NANO,
            held_usd=record.held_nano_usd / NANO,
            left_usd=max(0, self.left(record)) / NANO,
        )

    def refusal(self, record: BudgetRecord, amount: int) -> BudgetExceededError:
        left = max(0, self.left(record))
        return BudgetExceededError(
            f"budget: {self.kind} {shown(self.name)} has {usd_text(left)} of "
            f"{usd_text(self.limit)} left; this call may cost up to {usd_text(amount)}"
        )


class _KeyLocks:
    """One lock per key for the callers of one process, forgotten when nobody uses it."""

    def __init__(self) -> None:
        self._locks: dict[str, tuple[anyio.Lock, int]] = {}

    @asynccontextmanager
    async def hold(self, key: str) -> AsyncIterator[None]:
        lock, users = self._locks.get(key) or (anyio.Lock(), 0)
        self._locks[key] = (lock, users + 1)
        try:
            async with lock:
                yield
        finally:
            lock, users = self._locks[key]
            if users == 1:
                del self._locks[key]
            else:
                self._locks[key] = (lock, users - 1)


class Budgets:
    """Reserve, settle and release model-call costs against the budgets of a scope.

    Contention: callers in one process take turns on a key (a local lock), so they do not
    make each other lose compare-and-set races; callers in other replicas can, and each lost
    race is retried (jittered backoff) up to ``attempts`` times — every lost race means
    another writer succeeded, so only that many writes landing during one call's retries
    end it with ConflictError.
    """

    def __init__(
        self,
        kv: KeyValue,
        limits: Limits,
        *,
        bucket: str = "llm_budgets",
        hold_ttl_s: float = 900.0,
        clock: Callable[[], float] = time.time,
        attempts: int = UPDATE_ATTEMPTS,
    ) -> None:
        if not (math.isfinite(hold_ttl_s) and hold_ttl_s > 0):
            raise ValueError("hold_ttl_s: must be a finite number > 0")
        self.limits = limits
        self.hold_ttl_s = hold_ttl_s
        self._records = Records(kv, BudgetRecord, bucket=bucket)
        self._clock = clock
        self._attempts = attempts
        self._locks = _KeyLocks()

    @classmethod
    async def open(cls, bus: Bus, limits: Limits, **options: Any) -> Budgets:
        """Budgets in ``<prefix>_llm_budgets`` (created by ``ensure_streams``)."""
        bucket = bus.subjects.budgets_bucket
        return cls(await bus.js.key_value(bucket), limits, bucket=bucket, **options)

    async def headroom(self, scope: BudgetScope) -> Headroom:
        """The tightest budget of ``scope``; ``left_usd`` is math.inf when none applies."""
        statuses = await self.status(scope)
        if not statuses:
            return Headroom()
        tightest = min(statuses, key=lambda s: s.left_usd)
        return Headroom(left_usd=tightest.left_usd, budget=tightest)

    async def status(self, scope: BudgetScope) -> list[BudgetStatus]:
        """The figures of each budget that applies to ``scope`` (task, project, day)."""
        now = self._clock()
        return [b.status(await self._read(b.key, now)) for b in self._applying(scope, now)]

    async def reserve(self, scope: BudgetScope, amount_usd: float) -> Reservation:
        """Hold ``amount_usd`` on every budget of ``scope``, all or none.

        Holds are taken in a fixed order (task, project, day); when one budget refuses,
        those already taken are released. Raises BudgetExceededError naming the tightest
        budget that refuses, ConflictError (see the class), ValueError (a negative amount).
        """
        amount = hold_nano(amount_usd)
        now = self._clock()
        budgets = self._applying(scope, now)
        reservation = Reservation(uuid.uuid4().hex, amount_usd, tuple(b.key for b in budgets))
        taken: list[str] = []
        try:
            for budget in budgets:
                await self._update(budget.key, self._taking(budget, reservation.id, amount, now))
                taken.append(budget.key)
        except BaseException as exc:
            with anyio.move_on_after(CLEANUP_GRACE_S, shield=True):
                await self._drop(taken, reservation.id)
            if isinstance(exc, BudgetExceededError):
                raise await self._tightest_refusal(budgets, amount, exc) from None
            raise
        return reservation

    async def settle(self, reservation: Reservation, actual_usd: float) -> None:
        """Turn the hold into ``actual_usd`` spent (more than was held, too: the truth).

        Shielded from cancellation for up to CLEANUP_GRACE_S, so a cancelled call's cost
        is still counted. Raises ConflictError, TimeoutError, ValueError (a negative cost).
        """
        spent = cost_nano(actual_usd)
        now = self._clock()

        def change(current: BudgetRecord | None) -> BudgetRecord:
            record = (current or BudgetRecord()).live(now)
            holds = {k: h for k, h in record.holds.items() if k != reservation.id}
            return BudgetRecord(spent_nano_usd=record.spent_nano_usd + spent, holds=holds)

        with anyio.fail_after(CLEANUP_GRACE_S, shield=True):
            for key in reservation.keys:
                await self._update(key, change)

    async def release(self, reservation: Reservation) -> None:
        """Drop the hold, nothing spent (shielded as :meth:`settle` is)."""
        with anyio.fail_after(CLEANUP_GRACE_S, shield=True):
            await self._drop(list(reservation.keys), reservation.id)

    def _applying(self, scope: BudgetScope, now: float) -> list[_Budget]:
        limits, budgets = self.limits, []
        task_limits = [x for x in (limits.per_task_usd, scope.task_limit_usd) if x is not None]
        if scope.task_id and task_limits:
            budgets.append(_Budget("task", scope.task_id, limit_nano(min(task_limits))))
        if scope.project and limits.per_project_usd is not None:
            budgets.append(_Budget("project", scope.project, limit_nano(limits.per_project_usd)))
        if limits.per_day_usd is not None:
            day = time.strftime("%Y-%m-%d", time.gmtime(now))
            budgets.append(_Budget("day", day, limit_nano(limits.per_day_usd)))
        return budgets

    def _taking(
        self, budget: _Budget, hold_id: str, amount: int, now: float
    ) -> Callable[[BudgetRecord | None], BudgetRecord]:
        hold = Hold(nano_usd=amount, expires_at=now + self.hold_ttl_s)

        def change(current: BudgetRecord | None) -> BudgetRecord:
            record = (current or BudgetRecord()).live(now)
            if budget.left(record) < amount:
                raise budget.refusal(record, amount)
            return msgspec.structs.replace(record, holds={**record.holds, hold_id: hold})

        return change

    async def _drop(self, keys: list[str], hold_id: str) -> None:
        now = self._clock()

        def change(current: BudgetRecord | None) -> BudgetRecord:
            record = (current or BudgetRecord()).live(now)
            holds = {k: h for k, h in record.holds.items() if k != hold_id}
            return msgspec.structs.replace(record, holds=holds)

        for key in keys:
            await self._update(key, change)

    async def _tightest_refusal(
        self, budgets: list[_Budget], amount: int, refused: BudgetExceededError
    ) -> BudgetExceededError:
        """The refusal of the budget with least left; ``refused`` when a race freed them."""
        now = self._clock()
        records = [(b, await self._read(b.key, now)) for b in budgets]
        short = [(b, r) for b, r in records if b.left(r) < amount]
        if not short:
            return refused
        budget, record = min(short, key=lambda pair: pair[0].left(pair[1]))
        return budget.refusal(record, amount)

    async def _update(
        self, key: str, change: Callable[[BudgetRecord | None], BudgetRecord]
    ) -> BudgetRecord:
        async with self._locks.hold(key):
            record, _ = await self._records.update(key, change, attempts=self._attempts)
        return record

    async def _read(self, key: str, now: float) -> BudgetRecord:
        try:
            record, _ = await self._records.get(key)
        except NotFoundError:
            return BudgetRecord()
        return record.live(now)
