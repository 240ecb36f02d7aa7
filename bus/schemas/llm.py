"""Wire schemas of the model gateway (``sophia.llm.<endpoint>``).

Every request field carries its limit, so msgspec enforces it when a request is decoded and
the published JSON Schema says exactly that. Evolution rules as everywhere on the bus: new
fields get defaults, a field never changes type, no ``forbid_unknown_fields``.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal, get_args

import msgspec

from bus.limits import ID_CHARS, MODEL_MESSAGES, NAMESPACE_CHARS, TEXT_CHARS, Subject, text

Task = Literal["plan", "code", "review", "summarize", "chat"]
TASKS: tuple[str, ...] = get_args(Task)
Strategy = Literal["cost", "quality", "balanced"]
Cached = Literal["exact", "semantic", ""]
CircuitState = Literal["closed", "open", "half_open"]
#: what became of one attempt; ``ok`` is the only one that answered
Outcome = Literal[
    "ok",
    "rate_limited",  # 429
    "server_error",  # 5xx
    "timeout",  # no answer within the attempt's timeout
    "unreachable",  # connection refused or dropped before an answer
    "cut_stream",  # the stream ended without its final chunk
    "truncated",  # finish_reason "length" where complete output was needed
    "invalid_output",  # not JSON, or not valid against the response schema
    "client_error",  # 4xx other than 429: the request itself was refused
    "circuit_open",  # skipped: the provider's circuit breaker is open
    "over_budget",  # skipped: its worst-case cost does not fit a budget
]

MAX_MESSAGES = MODEL_MESSAGES
MAX_OUTPUT_TOKENS = 1_000_000

Role = Literal["system", "user", "assistant"]
MessageText = Annotated[str, text(TEXT_CHARS, blank=True)]
ScopeName = Annotated[str, msgspec.Meta(max_length=NAMESPACE_CHARS)]
TaskId = Annotated[str, msgspec.Meta(max_length=ID_CHARS)]


class Message(msgspec.Struct, kw_only=True):
    role: Role
    content: MessageText


class Scope(msgspec.Struct, kw_only=True):
    """Who pays: the task and project budgets that apply and the rows costs are summed by."""

    task_id: TaskId = ""
    project: ScopeName = ""
    #: the task's own budget (a task submitted with ``budget_usd``); with ``task_id`` set, the
    #: tighter of this and the configured per-task budget holds, reserved before every attempt
    budget_usd: Annotated[float, msgspec.Meta(gt=0, le=1e6)] | None = None


class CompleteRequest(msgspec.Struct, kw_only=True):
    """One model call: routed by task and strategy, budgeted, cached where that is safe."""

    messages: Annotated[list[Message], msgspec.Meta(min_length=1, max_length=MAX_MESSAGES)]
    task: Task = "chat"
    strategy: Strategy = "balanced"
    response_schema: dict[str, Any] | None = None  # a JSON Schema; ``data`` is then the object
    schema_name: Annotated[str, msgspec.Meta(pattern=r"^[A-Za-z0-9_-]{1,64}$")] = "response"
    max_tokens: Annotated[int, msgspec.Meta(ge=1, le=MAX_OUTPUT_TOKENS)] = 1024
    temperature: Annotated[float, msgspec.Meta(ge=0, le=2)] = 0.0
    scope: Scope = msgspec.field(default_factory=Scope)
    stream_subject: Subject = ""  # an inbox: tokens are published there as they arrive
    model: Annotated[str, msgspec.Meta(max_length=256)] = ""  # pin one model: no routing
    allow_partial: bool = False  # accept finish_reason "length" as an answer
    timeout_s: Annotated[float, msgspec.Meta(ge=0, le=3600)] = 0.0  # 0: the configured deadline


class Attempt(msgspec.Struct, kw_only=True):
    model: str
    outcome: Outcome
    status: int = 0  # the HTTP status, 0 when there was none
    latency_ms: float = 0.0


class CompleteResult(msgspec.Struct, kw_only=True):
    text: str
    data: Any = None  # the validated object when a response_schema was given
    model: str
    provider: str
    input_tokens: int = 0
    output_tokens: int = 0
    cost_usd: float = 0.0
    latency_ms: float = 0.0
    cached: Cached = ""
    attempts: list[Attempt] = msgspec.field(default_factory=list)
    degraded: bool = False  # a cheaper model answered because the chosen one did not fit
    finish_reason: str = "stop"


class Delta(msgspec.Struct, kw_only=True, tag="delta"):
    """Text as it arrives, on ``stream_subject``. A new ``attempt`` starts the text afresh
    (the previous attempt failed mid-way and its text is void)."""

    seq: int
    attempt: int
    model: str
    text: str


class ModelInfo(msgspec.Struct, kw_only=True):
    name: str
    provider: str
    upstream_model: str
    context_window: int
    input_usd_per_mtok: float
    output_usd_per_mtok: float
    quality: float
    capabilities: list[str]
    concurrency: int
    circuit: CircuitState = "closed"
    in_flight: int = 0


class BudgetInfo(msgspec.Struct, kw_only=True):
    per_task_usd: float | None = None
    per_project_usd: float | None = None
    per_day_usd: float | None = None


class ModelsResult(msgspec.Struct, kw_only=True):
    models: list[ModelInfo]
    routes: dict[str, list[str]]
    budgets: BudgetInfo
    transport: str  # "direct" | "portkey-hosted" | "portkey-gateway"
    configured: bool  # False: no model is set up and complete answers 503


class CostsRequest(msgspec.Struct, kw_only=True):
    by: Literal["model", "task", "project", "day"] = "model"
    since: Annotated[float, msgspec.Meta(ge=0)] = 0.0  # unix time; 0: from the beginning


class CostTotal(msgspec.Struct, kw_only=True):
    key: str
    calls: int
    input_tokens: int
    output_tokens: int
    cost_usd: float
    cached_calls: int = 0


class CostsResult(msgspec.Struct, kw_only=True):
    by: str
    since: float
    totals: list[CostTotal]
    calls: int = 0
    cost_usd: float = 0.0


class CallEvent(msgspec.Struct, kw_only=True):
    """``sophia.events.llm.call``: one call's accounting, never its prompt or answer."""

    call_id: str
    model: str
    provider: str
    task: str
    task_id: str
    project: str
    input_tokens: int
    output_tokens: int
    cost_usd: float
    latency_ms: float
    cached: str
    outcome: str  # "ok" | "error"
    error_code: int = 0
    attempts: list[Attempt] = msgspec.field(default_factory=list)
    degraded: bool = False


class DegradedEvent(msgspec.Struct, kw_only=True):
    """``sophia.events.llm.degraded``: a cheaper model stood in because of a budget."""

    call_id: str
    wanted: str
    used: str
    budget: str
    task_id: str
    project: str
