"""Wire and stored schemas of tasks (``sophia.tasks.<endpoint>``), their work items and the
model-facing formats (plan, review).

A task is one record in ``<prefix>_tasks`` under its id, changed only with optimistic
concurrency (:class:`bus.records.Records`); every change is a :class:`TaskEvent` on
``<prefix>.events.task.<id>``. The work items travel on ``<prefix>.work.tasks`` (the
planner's own: advance this task), ``<prefix>.work.coder`` and ``<prefix>.work.reviewer``.

Model-facing formats are contracts too, since users plug in their own models: a plan is the
JSON object :class:`Plan` (``response_schema`` named ``plan``), a review the JSON object
:class:`ReviewAnswer` (named ``review``); code edits are SEARCH/REPLACE blocks
(:mod:`tasks.edits`).

Evolution rules as everywhere on the bus: new fields get defaults, a field never changes
type, no ``forbid_unknown_fields``.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal, get_args

import msgspec

from bus.limits import GOAL_CHARS, ID_CHARS, PATH_CHARS, REF_CHARS, Path, Subject, text

Pattern = Literal["fast", "balanced", "quality"]
State = Literal["queued", "planning", "running", "reviewing", "done", "failed", "cancelled"]
STATES: tuple[str, ...] = get_args(State)
TERMINAL: frozenset[str] = frozenset({"done", "failed", "cancelled"})
Capability = Literal["code", "review", "research", "infra"]
StepState = Literal["pending", "dispatched", "running", "done", "failed", "skipped"]
Verdict = Literal["approve", "request_changes"]
Severity = Literal["info", "low", "medium", "high", "critical"]
#: why a task stopped, when it did not finish ``done``
Reason = Literal[
    "",
    "cancelled",
    "timeout",
    "budget",
    "rounds",  # the review kept asking for changes past the round limit
    "loop",  # the same failing edit, test or finding came back: more rounds would not help
    "step_failed",
    "plan_invalid",
    "unavailable",  # a service the task needs did not answer
    "error",
]

MAX_STEPS = 32
MAX_FILES_PER_STEP = 64
MAX_FINDINGS = 200
MESSAGE_CHARS = 4_096
TIMEOUT_MAX_S = 24 * 3600.0
BUDGET_MAX_USD = 10_000.0

Goal = Annotated[str, text(GOAL_CHARS)]
Ref = Annotated[
    str, msgspec.Meta(min_length=1, max_length=REF_CHARS, pattern=r"^[^\s\x00-\x1f~^:?*\[\\]+$")
]
TaskId = Annotated[
    str, msgspec.Meta(min_length=1, max_length=ID_CHARS, pattern=r"^[A-Za-z0-9_-]+$")
]
StepId = Annotated[
    str, msgspec.Meta(min_length=1, max_length=ID_CHARS, pattern=r"^[A-Za-z0-9_-]+$")
]
FilePath = Annotated[str, msgspec.Meta(min_length=1, max_length=PATH_CHARS)]
Message = Annotated[str, msgspec.Meta(max_length=MESSAGE_CHARS)]


# ---- model-facing formats ---------------------------------------------------------------------


class PlanStep(msgspec.Struct, kw_only=True):
    """One step of a plan as the model writes it."""

    id: StepId
    capability: Capability
    description: Annotated[str, text(MESSAGE_CHARS)]
    files: Annotated[list[FilePath], msgspec.Meta(max_length=MAX_FILES_PER_STEP)] = msgspec.field(
        default_factory=list
    )
    depends_on: Annotated[list[StepId], msgspec.Meta(max_length=MAX_STEPS)] = msgspec.field(
        default_factory=list
    )


class Plan(msgspec.Struct, kw_only=True):
    """What the model answers to the ``plan`` request: a DAG of steps."""

    steps: Annotated[list[PlanStep], msgspec.Meta(min_length=1, max_length=MAX_STEPS)]


class Finding(msgspec.Struct, kw_only=True):
    """One problem a reviewer reports. ``evidence`` is a tool finding id from this review's
    tool runs (``ruff-3``) or a snippet quoted from the patched file at ``line``."""

    file: Annotated[str, msgspec.Meta(max_length=PATH_CHARS)]
    line: Annotated[int, msgspec.Meta(ge=0)] = 0
    severity: Severity = "medium"
    message: Message
    evidence: Annotated[str, msgspec.Meta(max_length=MESSAGE_CHARS)] = ""


class ReviewAnswer(msgspec.Struct, kw_only=True):
    """What the model answers to the ``review`` request. ``pick`` names the better candidate
    (``a`` or ``b``) in the ``quality`` pattern, where two coders made one step each."""

    verdict: Verdict
    findings: Annotated[list[Finding], msgspec.Meta(max_length=MAX_FINDINGS)] = msgspec.field(
        default_factory=list
    )
    covered: Annotated[list[FilePath], msgspec.Meta(max_length=1024)] = msgspec.field(
        default_factory=list
    )
    pick: Literal["a", "b", ""] = ""


# ---- endpoints --------------------------------------------------------------------------------


class SubmitRequest(msgspec.Struct, kw_only=True):
    """A goal in plain words and the local git repository it is about."""

    goal: Goal
    repo: Path  # a local path to a git repository on the agents' machine
    pattern: Pattern = "balanced"
    base: Ref = "HEAD"
    budget_usd: Annotated[float, msgspec.Meta(gt=0, le=BUDGET_MAX_USD)] | None = None
    timeout_s: Annotated[float, msgspec.Meta(gt=0, le=TIMEOUT_MAX_S)] = 1800.0
    #: stream the model's text as it arrives to ``_INBOX.sophia-task.<task_id>`` (Delta events)
    stream_tokens: bool = False


def token_subject(task_id: str) -> str:
    """Where a task submitted with ``stream_tokens`` has its model text streamed."""
    return f"_INBOX.sophia-task.{task_id}"


class SubmitResult(msgspec.Struct, kw_only=True):
    task_id: str


class TaskRef(msgspec.Struct, kw_only=True):
    task_id: TaskId


class WaitRequest(msgspec.Struct, kw_only=True):
    """Wait until the task ends (or ``timeout_s`` passes); progress goes to
    ``progress_subject`` (an inbox) as :class:`TaskProgress`."""

    task_id: TaskId
    #: an editor waits in turns; the edge waits this long (and a few seconds) for the reply
    timeout_s: Annotated[float, msgspec.Meta(gt=0, le=3600)] = 50.0
    progress_subject: Subject = ""


class ListRequest(msgspec.Struct, kw_only=True):
    state: State | None = None
    limit: Annotated[int, msgspec.Meta(ge=1, le=1000)] = 50


class CancelResult(msgspec.Struct, kw_only=True):
    task_id: str
    state: str
    cancelled: bool  # False when the task had already ended


# ---- the stored record ------------------------------------------------------------------------


class ToolFindingRecord(msgspec.Struct, kw_only=True):
    """A tool's finding as kept in the task record (its id is what evidence cites)."""

    id: str
    tool: str
    file: str
    line: int = 0
    code: str = ""
    message: str = ""
    severity: str = "medium"


class ToolRunRecord(msgspec.Struct, kw_only=True):
    tool: str  # ruff | bandit | semgrep | pytest
    ran: bool
    ok: bool = True
    note: str = ""  # why it did not run, or what its sandbox lacked
    seconds: float = 0.0
    findings: list[ToolFindingRecord] = msgspec.field(default_factory=list)
    summary: str = ""  # e.g. "12 passed, 1 failed"


class Review(msgspec.Struct, kw_only=True):
    """One review as the reviewer settled it (after the evidence and coverage rules)."""

    verdict: Verdict
    accepted: bool  # approve, every changed file covered and no gate failed
    findings: list[Finding] = msgspec.field(default_factory=list)
    dropped_findings: int = 0  # findings whose evidence did not check out
    covered: list[str] = msgspec.field(default_factory=list)
    uncovered: list[str] = msgspec.field(default_factory=list)
    tools: list[ToolRunRecord] = msgspec.field(default_factory=list)
    pick: str = ""
    calls: int = 0  # model calls the review took (large diffs are split)
    note: str = ""


class Candidate(msgspec.Struct, kw_only=True):
    """What one coder made of one step (two per step in the ``quality`` pattern)."""

    variant: str = ""  # "" alone; "a" / "b" in quality
    branch: str = ""
    base_commit: str = ""  # where the step started
    commit: str = ""
    diff_stat: str = ""
    error: str = ""
    findings: list[Finding] = msgspec.field(default_factory=list)
    blocks_applied: int = 0
    model_calls: int = 0


class Step(msgspec.Struct, kw_only=True):
    id: str
    capability: Capability
    description: str
    files: list[str] = msgspec.field(default_factory=list)
    depends_on: list[str] = msgspec.field(default_factory=list)
    state: StepState = "pending"
    attempt: int = 0  # bumped on every dispatch; part of the work item's Nats-Msg-Id
    candidates: list[Candidate] = msgspec.field(default_factory=list)
    review: Review | None = None
    error: str = ""
    reason: Reason = ""  # why the step failed, when it did
    dispatched_at: float = 0.0  # when its current attempt's work item was first published
    started_at: float = 0.0
    finished_at: float = 0.0
    note: str = ""


class TaskRecord(msgspec.Struct, kw_only=True):
    task_id: str
    goal: str
    repo: str
    namespace: str  # the repo's memory namespace
    pattern: Pattern
    base: str
    base_commit: str = ""
    budget_usd: float | None = None
    timeout_s: float = 1800.0
    stream_tokens: bool = False
    state: State = "queued"
    reason: Reason = ""
    error: str = ""
    plan: list[Step] = msgspec.field(default_factory=list)
    branch: str = ""
    commits: list[str] = msgspec.field(default_factory=list)
    review: Review | None = None
    findings: list[Finding] = msgspec.field(default_factory=list)  # the last ones
    round: int = 0  # rounds that sent findings back to a coder
    failure_signature: str = ""  # what the last round's findings were, to see a loop
    max_rounds: int = 2
    cost_usd: float = 0.0
    model_calls: int = 0
    created_at: float = 0.0
    started_at: float = 0.0
    finished_at: float = 0.0
    deadline: float = 0.0  # unix seconds
    timings: dict[str, float] = msgspec.field(default_factory=dict)
    context_items: int = 0  # memory items the plan request carried
    lessons: list[str] = msgspec.field(default_factory=list)  # outcome items stored to memory
    seq: int = 0  # changes so far; the events' seq


class TaskSummary(msgspec.Struct, kw_only=True):
    task_id: str
    goal: str
    state: State
    reason: Reason = ""
    pattern: Pattern = "balanced"
    repo: str = ""
    branch: str = ""
    cost_usd: float = 0.0
    created_at: float = 0.0
    finished_at: float = 0.0


class TaskList(msgspec.Struct, kw_only=True):
    tasks: list[TaskSummary]


# ---- events and progress ----------------------------------------------------------------------


class TaskEvent(msgspec.Struct, kw_only=True):
    """One change of a task, on ``<prefix>.events.task.<id>`` (``Nats-Msg-Id`` id-seq)."""

    task_id: str
    seq: int
    at: float
    kind: str  # state | plan | step | review | cost | note
    state: State
    step: str = ""
    step_state: str = ""
    message: str = ""
    cost_usd: float = 0.0


class TaskProgress(msgspec.Struct, kw_only=True, tag_field="type", tag="task"):
    """A task's progress on a ``tasks.wait`` caller's ``progress_subject``."""

    task_id: str
    state: State
    done_steps: int
    total_steps: int
    message: str = ""
    cost_usd: float = 0.0


# ---- work items -------------------------------------------------------------------------------


class Advance(msgspec.Struct, kw_only=True, tag="advance"):
    """The planner's own work: look at the task and take its next step (idempotent)."""

    task_id: TaskId
    why: Annotated[str, msgspec.Meta(max_length=256)] = ""


class CodeItem(msgspec.Struct, kw_only=True):
    """One code step for a coder (``Nats-Msg-Id`` task-step-attempt[-variant])."""

    task_id: TaskId
    step_id: StepId
    attempt: int
    variant: str = ""  # "" or "a"/"b" in quality
    feedback: list[Finding] = msgspec.field(default_factory=list)


class ReviewItem(msgspec.Struct, kw_only=True):
    """One review step for a reviewer."""

    task_id: TaskId
    step_id: StepId
    attempt: int


def schema_of(kind: type[msgspec.Struct]) -> dict[str, Any]:
    """The JSON Schema of a model-facing format, inlined (no ``$ref``), as the gateway's
    ``response_schema`` takes it."""
    schema = msgspec.json.schema(kind)
    defs = schema.pop("$defs", {})

    def inline(node: Any) -> Any:
        if isinstance(node, dict):
            ref = node.get("$ref")
            if isinstance(ref, str) and ref.startswith("#/$defs/"):
                return inline(defs[ref.removeprefix("#/$defs/")])
            return {k: inline(v) for k, v in node.items()}
        if isinstance(node, list):
            return [inline(v) for v in node]
        return node

    return inline(schema)
