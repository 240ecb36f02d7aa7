"""The call ledger: one row per model call in the L3 facts database, summed for costs.

Guarantee: a row holds figures only (model, provider, task, tokens, cost, latency, outcome),
never the prompt or the answer; ``put`` is idempotent on the call's id, so a retried write
counts once. The rows live in their own table, ``llm_calls``, of the database L3 uses:
PostgreSQL when ``postgres_dsn`` is set, else the SQLite file of the embedded L3 tier.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal, Protocol

import msgspec

from memory.config import MemorySettings

Task = Literal["plan", "code", "review", "summarize", "chat"]
Cached = Literal["", "exact", "semantic"]
Outcome = Literal["ok", "error"]
GroupBy = Literal["model", "task", "project", "day"]
GROUPS: tuple[str, ...] = ("model", "task", "project", "day")

Count = Annotated[int, msgspec.Meta(ge=0)]
Usd = Annotated[float, msgspec.Meta(ge=0)]

TABLE = "llm_calls"
COLUMNS = (
    "id, at, model, provider, task, task_id, project, input_tokens, output_tokens, "
    "cost_usd, latency_ms, cached, outcome, attempts, degraded"
)


class CallRecord(msgspec.Struct, frozen=True, kw_only=True):
    """One model call as the ledger keeps it (no prompt, no answer)."""

    id: str  # the call's id: a second put with it changes nothing
    at: float  # unix time the call started
    model: str
    provider: str
    task: Task
    task_id: str = ""  # "": not part of a task
    project: str = ""
    input_tokens: Count = 0
    output_tokens: Count = 0
    cost_usd: Usd = 0.0
    latency_ms: Annotated[float, msgspec.Meta(ge=0)] = 0.0
    cached: Cached = ""  # answered from the cache: no provider was called
    outcome: Outcome = "ok"
    attempts: Count = 1  # provider attempts, retries and fallbacks included
    degraded: bool = False  # answered by a fallback model, not the one asked for


class Total(msgspec.Struct, frozen=True, kw_only=True):
    """The calls of one group (a model, a task kind, a project or a UTC day)."""

    key: str
    calls: int
    input_tokens: int
    output_tokens: int
    cost_usd: float
    cached_calls: int


class CallLedger(Protocol):
    """Where the call rows are kept; ``open`` before use, ``close`` after."""

    name: str

    async def open(self) -> None: ...

    async def close(self) -> None: ...

    async def put(self, record: CallRecord) -> bool:
        """Store ``record``; False when a row with its id was already there."""
        ...

    async def totals(self, by: GroupBy, since: float) -> list[Total]:
        """The calls at or after ``since`` (unix time) summed per ``by``, dearest first.

        ``day`` groups by UTC date (YYYY-MM-DD). Raises ValueError for another ``by``.
        """
        ...


def as_row(r: CallRecord) -> tuple[Any, ...]:
    """``r``'s values in :data:`COLUMNS` order."""
    return (
        r.id, r.at, r.model, r.provider, r.task, r.task_id, r.project, r.input_tokens,
        r.output_tokens, r.cost_usd, r.latency_ms, r.cached, r.outcome, r.attempts, r.degraded,
    )  # fmt: skip


def as_total(row: Any) -> Total:
    """A ``(key, calls, input, output, cost, cached)`` row as a Total."""
    return Total(
        key=str(row[0]),
        calls=int(row[1]),
        input_tokens=int(row[2]),
        output_tokens=int(row[3]),
        cost_usd=round(float(row[4]), 9),
        cached_calls=int(row[5]),
    )


def totals_sql(group: str, placeholder: str) -> str:
    """The totals query grouped by the SQL expression ``group``, since ``placeholder``."""
    return (
        f"SELECT {group} AS key, count(*), coalesce(sum(input_tokens), 0), "
        "coalesce(sum(output_tokens), 0), coalesce(sum(cost_usd), 0), "
        "count(*) FILTER (WHERE cached != '') "
        f"FROM {TABLE} WHERE at >= {placeholder} GROUP BY 1 ORDER BY 5 DESC, 1"
    )


def group_expression(by: str, day: str) -> str:
    """The SQL of ``by`` (``day``: the backend's UTC-date expression). Raises ValueError."""
    if by not in GROUPS:
        raise ValueError("by: must be model, task, project or day")
    return day if by == "day" else by


def open_ledger(settings: MemorySettings) -> CallLedger:
    """The ledger on L3's database, not yet opened: PostgreSQL when ``postgres_dsn`` is set,
    else SQLite in ``<data_path>/l3/facts.sqlite3`` (the embedded L3 tier's file)."""
    if settings.postgres_dsn:
        from adapters.llm.ledger_postgres import PostgresCallLedger

        return PostgresCallLedger(settings.postgres_dsn, timeout_s=settings.backend_timeout_s)
    from adapters.llm.ledger_sqlite import SqliteCallLedger

    return SqliteCallLedger(settings.data_path / "l3" / "facts.sqlite3")
