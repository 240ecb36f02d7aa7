"""The planner's work: accept a task, plan it, run its steps in order, stop it for a reason.

A task moves only through :meth:`Planner.advance`, which the planner runs for each durable
``Advance`` item (one on submit, one whenever a coder or reviewer finishes a step). It is
idempotent: it reads the record and takes the next step from what it finds, so a planner
killed at any point loses nothing — the item is redelivered to another replica, which picks
up where the record says. Dispatching a step writes its new ``attempt`` first and then
publishes the work item with ``Nats-Msg-Id`` task-step-attempt[-variant]; every advance
publishes again the items of steps still marked dispatched, which JetStream drops as
duplicates unless the earlier publish was lost with its planner.

Stops: a task past its deadline fails with reason ``timeout`` (a watchdog in every planner
replica sees deadlines pass even when nothing else happens), a refused budget with
``budget``, a review that keeps asking for changes past ``tasks_max_rounds`` with
``rounds``, the same failing edit, test or findings twice in a row with ``loop``.
"""

from __future__ import annotations

import hashlib
import logging
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import anyio
import msgspec

from bus.client import Bus
from bus.errors import BadRequestError, NotFoundError, SophiaError
from bus.schemas import memory as m
from bus.schemas import tasks as t
from bus.schemas.llm import Message
from bus.topology import DUPLICATE_WINDOW_S
from memory.redact import redact
from tasks import plan as plans
from tasks import prompts
from tasks.calls import TaskStopped, add_timing, ask_model, memory_search
from tasks.config import TaskSettings
from tasks.outcomes import remember_outcome
from tasks.repomap import repo_map
from tasks.store import TaskStore
from tasks.worktree import Worktrees, resolve_commit, resolve_repo

log = logging.getLogger("sophia.tasks")

VARIANTS = ("a", "b")
#: below the work stream's duplicate window (bus/topology.py), with room for clock drift
REPUBLISH_WITHIN_S = DUPLICATE_WINDOW_S - 30


def task_branch(task_id: str) -> str:
    return f"sophia/{task_id}"


def variant_branch(task_id: str, step_id: str, variant: str) -> str:
    return f"sophia/{task_id}-{step_id}-{variant}"


def namespace_of(repo: Path) -> str:
    """The repository's memory namespace: its directory's name (as ``sophia memory index``)."""
    return repo.name[: m.NAMESPACE_CHARS] or "default"


def work_id(task_id: str, step_id: str, attempt: int, variant: str = "") -> str:
    return f"{task_id}-{step_id}-{attempt}" + (f"-{variant}" if variant else "")


def findings_signature(findings: list[t.Finding]) -> str:
    """What makes two rounds' findings the same (file and message, in any order)."""
    keys = sorted(f"{f.file}\x00{' '.join(f.message.split()).lower()}" for f in findings)
    return hashlib.sha256("\x01".join(keys).encode()).hexdigest()[:16]


@dataclass
class Dispatch:
    """A work item to publish once the record says it was dispatched."""

    service: str
    item: msgspec.Struct
    msg_id: str


@dataclass
class Decision:
    record: t.TaskRecord
    dispatches: list[Dispatch] = field(default_factory=list)
    research: list[str] = field(default_factory=list)  # research steps to run now


class Planner:
    def __init__(
        self, bus: Bus, store: TaskStore, settings: TaskSettings, worktrees: Worktrees
    ) -> None:
        self.bus = bus
        self.store = store
        self.settings = settings
        self.worktrees = worktrees

    # ---- endpoints ------------------------------------------------------------------------

    async def submit(self, req: t.SubmitRequest) -> t.SubmitResult:
        """Record the task and queue it. Raises BadRequestError naming ``repo`` or ``base``."""
        repo = await resolve_repo(req.repo)
        base_commit = await resolve_commit(repo, req.base)
        goal, _ = redact(req.goal)
        task_id = uuid.uuid4().hex[:16]
        now = time.time()
        record = t.TaskRecord(
            task_id=task_id,
            goal=goal,
            repo=str(repo),
            namespace=namespace_of(repo),
            pattern=req.pattern,
            base=req.base,
            base_commit=base_commit,
            budget_usd=req.budget_usd,
            timeout_s=req.timeout_s,
            stream_tokens=req.stream_tokens,
            max_rounds=self.settings.tasks_max_rounds,
            created_at=now,
            deadline=now + req.timeout_s,
            branch=task_branch(task_id),
        )
        await self.store.create(record)
        await self.bus.submit_work(
            "tasks", t.Advance(task_id=task_id, why="submitted"), msg_id=f"{task_id}-submitted"
        )
        return t.SubmitResult(task_id=task_id)

    async def cancel(self, task_id: str) -> t.CancelResult:
        record, ended_now = await self._end(
            task_id, lambda r: _ended(r, "cancelled", "cancelled", "cancelled by request")
        )
        return t.CancelResult(task_id=task_id, state=record.state, cancelled=ended_now)

    async def _end(
        self, task_id: str, change: Callable[[t.TaskRecord], t.TaskRecord]
    ) -> tuple[t.TaskRecord, bool]:
        """Apply ``change`` to the live task; returns the record and whether this ended it.
        When it did, the outcome then goes to memory and its item ids into the record's
        ``lessons`` (a planner that dies in between leaves that to the next advance of the
        task, see :meth:`advance`)."""
        old, record = await self.store.change_from(task_id, change, if_live=True)
        ended_now = old is not None and old.state not in t.TERMINAL
        ended_now = ended_now and record.state in t.TERMINAL
        if ended_now:
            record = await self._store_lessons(record)
        return record, ended_now

    async def _store_lessons(self, record: t.TaskRecord) -> t.TaskRecord:
        ids = await self._remember(record)
        if not ids:
            return record
        return await self.store.change(
            record.task_id, lambda r: msgspec.structs.replace(r, lessons=ids)
        )

    # ---- the state machine ----------------------------------------------------------------

    async def advance(self, task_id: str) -> None:
        """Take the task's next step (see the module docstring). Never raises for a task
        that cannot go on: it ends that task with the reason."""
        try:
            record = await self.store.get(task_id)
        except NotFoundError:
            return
        if record.state in t.TERMINAL:
            if not record.lessons:  # the planner that ended it died before storing them
                await self._store_lessons(record)
            return
        try:
            if time.time() > record.deadline:
                raise TaskStopped("timeout", "the task ran past its timeout_s")
            if record.state in ("queued", "planning"):
                record = await self._plan(record)
                if record.state in t.TERMINAL:
                    return
            await self._next(record)
        except TaskStopped as stop:
            await self.stop(task_id, stop.reason, stop.message)
        except plans.PlanError as exc:
            await self.stop(task_id, "plan_invalid", exc.description)

    async def stop(self, task_id: str, reason: str, message: str) -> None:
        """End a live task as failed (or cancelled) with ``reason``; store the outcome."""
        state = "cancelled" if reason == "cancelled" else "failed"
        await self._end(task_id, lambda r: _ended(r, state, reason, message))

    async def _plan(self, record: t.TaskRecord) -> t.TaskRecord:
        started = time.perf_counter()
        record = await self.store.change(
            record.task_id,
            lambda r: msgspec.structs.replace(
                r, state="planning", started_at=r.started_at or time.time()
            ),
            if_live=True,
        )
        if record.state != "planning":
            return record
        repo = Path(record.repo)
        lessons: list[str] = []
        code: list[str] = []
        if record.pattern == "fast":  # no plan request, so no context to put in one
            steps = plans.fast_plan(record.goal)
        else:
            lessons, code = await self._context(record)
            the_map = await anyio.to_thread.run_sync(lambda: repo_map(repo, max_chars=8_000))
            messages = prompts.plan_messages(record.goal, the_map, lessons, code)
            steps = await self._ask_plan(record, messages)
        seconds = time.perf_counter() - started

        def planned(current: t.TaskRecord) -> t.TaskRecord:
            if current.state != "planning":
                return current
            return msgspec.structs.replace(
                current,
                state="running",
                plan=steps,
                context_items=len(lessons) + len(code),
                timings=add_timing(current, "plan_s", seconds),
            )

        return await self.store.change(record.task_id, planned, if_live=True)

    async def _ask_plan(self, record: t.TaskRecord, messages: list[Message]) -> list[t.Step]:
        """The model's plan, validated; one more ask with the problem when it breaks a rule."""
        schema = t.schema_of(t.Plan)
        problem = ""
        for _ in range(2):
            asked = list(messages)
            if problem:
                asked.append(
                    Message(
                        role="user",
                        content=f"That plan was refused: {problem}. Answer with a corrected plan.",
                    )
                )
            result = await ask_model(
                self.bus,
                self.store,
                record,
                asked,
                task="plan",
                schema=schema,
                schema_name="plan",
                max_tokens=2048,
                call_timeout_s=self.settings.tasks_call_timeout_s,
            )
            try:
                plan = msgspec.convert(result.data, t.Plan)
                return plans.validated(plan, record.pattern)
            except msgspec.ValidationError as exc:
                problem = f"plan: {exc}"
            except plans.PlanError as exc:
                problem = exc.description
        raise plans.PlanError(problem)

    async def _context(self, record: t.TaskRecord) -> tuple[list[str], list[str]]:
        """Lessons of earlier tasks (solutions, errors, decisions) and relevant code, from the
        repository's namespace; the repository is indexed first (only changed files)."""
        k = self.settings.tasks_context_items
        if k == 0:
            return [], []
        index = m.IndexRequest(path=record.repo, namespace=record.namespace)
        try:
            await self.bus.request(
                "memory",
                "index",
                index,
                m.IndexResult,
                timeout=self.settings.tasks_index_timeout_s,
            )
        except SophiaError as exc:
            log.warning("task_index_failed", extra={"task": record.task_id, "code": exc.code})
        lessons = await memory_search(
            self.bus, record.namespace, record.goal, ["solution", "error", "decision"], k
        )
        code = await memory_search(self.bus, record.namespace, record.goal, ["code"], k)
        snippets = [
            f"{h.metadata.get('path', '')}:{h.metadata.get('start_line', '')}\n{h.text}"
            for h in code
        ]
        return [h.text for h in lessons], snippets

    async def _next(self, record: t.TaskRecord) -> None:
        head = quality_head(record)
        if head is not None:  # the task's branch follows the picked candidates
            await self.worktrees.set_branch(Path(record.repo), record.branch, head)
        decision: list[Decision] = []

        def decide(current: t.TaskRecord) -> t.TaskRecord:
            made = self._decide(current)
            decision[:] = [made]
            return made.record

        record, _ = await self._end(record.task_id, decide)
        if not decision or record.state in t.TERMINAL:
            return
        made = decision[0]
        for dispatch in made.dispatches:
            await self.bus.submit_work(dispatch.service, dispatch.item, msg_id=dispatch.msg_id)
        for step_id in made.research:
            await self._research(record, step_id)
        if made.research:
            await self.bus.submit_work(
                "tasks",
                t.Advance(task_id=record.task_id, why="continued"),
                msg_id=f"{record.task_id}-continue-{record.seq}",
            )

    def _decide(self, record: t.TaskRecord) -> Decision:
        """What to do next, as a new record and the work to publish (pure)."""
        if record.state in t.TERMINAL:
            return Decision(record)
        steps = [msgspec.structs.replace(s) for s in record.plan]
        decision = Decision(record)
        now = time.time()
        # a finished review: accepted, or another round, or the end
        for step in steps:
            if step.capability == "review" and step.state == "done" and step.review is not None:
                outcome = self._after_review(record, steps, step)
                if outcome is not None:
                    return outcome
        # a failed code step: another round with its findings, or the end
        for step in steps:
            if step.state == "failed":
                outcome = self._after_failure(record, steps, step)
                if outcome is not None:
                    return outcome
        # re-publish what is out: dropped as duplicates unless the publish was lost with its
        # planner (then the Advance came back within ack_wait); past the duplicate window it
        # could be a second copy of a live item, so it is not sent again
        for step in steps:
            if step.state == "dispatched" and now - step.dispatched_at < REPUBLISH_WITHIN_S:
                decision.dispatches.extend(self._items(record, step, step.attempt))
        for step in plans.ready(steps):
            if step.capability == "research":
                step.state = "running"
                step.started_at = now
                decision.research.append(step.id)
            elif step.capability == "infra":
                step.state = "skipped"
                step.note = "no infra agent serves steps yet"
            elif step.capability == "code":
                if plans.busy(steps, "code") or plans.busy(steps, "review"):
                    continue
                self._dispatch(record, step, now, decision)
            elif step.capability == "review":
                if plans.busy(steps, "code"):
                    continue
                self._dispatch(record, step, now, decision)
        finished, total = plans.progress(steps)
        state = record.state
        if finished == total:
            state = "done"
        elif any(s.capability == "review" and s.state in ("dispatched", "running") for s in steps):
            state = "reviewing"
        else:
            state = "running"
        updates: dict = {"plan": steps, "state": state}
        if state == "done":
            updates |= _finish_fields(record, steps, now)
        decision.record = msgspec.structs.replace(record, **updates)
        return decision

    def _dispatch(self, record: t.TaskRecord, step: t.Step, now: float, decision: Decision) -> None:
        step.attempt += 1
        step.state = "dispatched"
        step.dispatched_at = now
        step.started_at = step.started_at or now
        step.error = ""
        step.reason = ""
        if step.capability == "code":
            step.candidates = []
        decision.dispatches.extend(self._items(record, step, step.attempt))

    def _items(self, record: t.TaskRecord, step: t.Step, attempt: int) -> list[Dispatch]:
        if step.capability == "review":
            item = t.ReviewItem(task_id=record.task_id, step_id=step.id, attempt=attempt)
            return [Dispatch("reviewer", item, work_id(record.task_id, step.id, attempt))]
        feedback = list(record.findings) if attempt > 1 else []
        variants = VARIANTS if record.pattern == "quality" else ("",)
        done = {c.variant for c in step.candidates if c.commit or c.error}
        return [
            Dispatch(
                "coder",
                t.CodeItem(
                    task_id=record.task_id,
                    step_id=step.id,
                    attempt=attempt,
                    variant=v,
                    feedback=feedback,
                ),
                work_id(record.task_id, step.id, attempt, v),
            )
            for v in variants
            if v not in done
        ]

    def _after_review(
        self, record: t.TaskRecord, steps: list[t.Step], step: t.Step
    ) -> Decision | None:
        """A finished review: nothing to do when accepted; else another round or the end."""
        review = step.review
        assert review is not None
        if review.accepted:
            return None
        code_steps = plans.code_steps_before(steps, step)
        signature = findings_signature(review.findings) + "|" + ",".join(_failing_tests(review))
        base = msgspec.structs.replace(record, plan=steps, review=review, findings=review.findings)
        if signature == record.failure_signature:
            return Decision(
                _ended(base, "failed", "loop", "the review found the same problems twice in a row")
            )
        if record.round >= record.max_rounds or not code_steps:
            message = f"the review still asked for changes after {record.round} rounds"
            return Decision(_ended(base, "failed", "rounds", message))
        # another round: the last code step it covers is redone with the findings
        code_steps[-1].state = "pending"
        step.state = "pending"
        return self._decide(
            msgspec.structs.replace(base, round=record.round + 1, failure_signature=signature)
        )

    def _after_failure(
        self, record: t.TaskRecord, steps: list[t.Step], step: t.Step
    ) -> Decision | None:
        """A failed step: another round with its findings, or the end."""
        findings = [f for c in step.candidates for f in c.findings]
        if step.error and not findings:
            findings = [t.Finding(file="", message=step.error[: t.MESSAGE_CHARS], severity="high")]
        base = msgspec.structs.replace(record, plan=steps, findings=findings)
        if step.reason in ("budget", "timeout", "cancelled", "unavailable"):
            state = "cancelled" if step.reason == "cancelled" else "failed"
            return Decision(_ended(base, state, step.reason, step.error))
        signature = "step:" + findings_signature(findings)
        message = step.error or f"step {step.id} failed"
        if step.reason == "loop" or signature == record.failure_signature:
            return Decision(_ended(base, "failed", "loop", message))
        if record.round >= record.max_rounds:
            return Decision(_ended(base, "failed", "step_failed", message))
        step.state = "pending"
        return self._decide(
            msgspec.structs.replace(base, round=record.round + 1, failure_signature=signature)
        )

    async def _research(self, record: t.TaskRecord, step_id: str) -> None:
        step = plans.by_id(record.plan)[step_id]
        hits = await memory_search(self.bus, record.namespace, step.description, [], 5)
        note = "; ".join(h.text[:200] for h in hits)[:2000] or "nothing found in memory"

        def researched(current: t.TaskRecord) -> t.TaskRecord:
            steps = [msgspec.structs.replace(s) for s in current.plan]
            for s in steps:
                if s.id == step_id and s.state == "running":
                    s.state, s.note, s.finished_at = "done", note, time.time()
            return msgspec.structs.replace(current, plan=steps)

        await self.store.change(record.task_id, researched, if_live=True)

    async def _remember(self, record: t.TaskRecord) -> list[str]:
        """Store the outcome of ``record`` (ended) in memory; its item ids, none when the
        memory agent does not take them (the task still ends)."""
        with anyio.move_on_after(30, shield=True):
            try:
                return await remember_outcome(self.bus, record)
            except SophiaError as exc:
                log.warning(
                    "task_outcome_not_stored", extra={"task": record.task_id, "code": exc.code}
                )
        return []


def _failing_tests(review: t.Review) -> list[str]:
    return [f.id for run in review.tools if run.tool == "pytest" for f in run.findings]


def picked(step: t.Step, pick: str) -> t.Candidate | None:
    """The candidate a review picked (the only one with a commit when it picked none)."""
    usable = [c for c in step.candidates if c.commit]
    for candidate in usable:
        if candidate.variant == pick:
            return candidate
    return usable[0] if len(usable) == 1 else None


def accepted_picks(record: t.TaskRecord) -> dict[str, t.Candidate]:
    """Quality pattern: each code step whose review was accepted, with the picked candidate."""
    steps = plans.by_id(record.plan)
    found: dict[str, t.Candidate] = {}
    for review in record.plan:
        if review.capability != "review" or review.review is None or not review.review.accepted:
            continue
        for code in plans.code_steps_before(record.plan, review):
            chosen = picked(steps[code.id], review.review.pick)
            if chosen is not None:
                found[code.id] = chosen
    return found


def quality_head(record: t.TaskRecord) -> str | None:
    """Quality pattern: the commit the task's branch stands on (the last accepted pick)."""
    if record.pattern != "quality":
        return None
    picks = accepted_picks(record)
    for step in reversed(record.plan):
        if step.id in picks:
            return picks[step.id].commit
    return None


def _finish_fields(record: t.TaskRecord, steps: list[t.Step], now: float) -> dict:
    """The record's last fields when every step finished. Commits: each coder adds its own
    as it reports (balanced, fast); in quality they are the picked candidates'."""
    reviews = [s.review for s in steps if s.review is not None]
    commits = list(record.commits)
    if record.pattern == "quality":
        picks = accepted_picks(msgspec.structs.replace(record, plan=steps))
        commits = [picks[s.id].commit for s in steps if s.id in picks]
    return {
        "finished_at": now,
        "review": reviews[-1] if reviews else None,
        "commits": commits,
        "timings": {**record.timings, "total_s": round(now - record.created_at, 6)},
    }


def _ended(record: t.TaskRecord, state: str, reason: str, message: str) -> t.TaskRecord:
    if record.state in t.TERMINAL:
        return record
    now = time.time()
    return msgspec.structs.replace(
        record,
        state=state,
        reason=reason,
        error=message[:2000],
        finished_at=now,
        timings={**record.timings, "total_s": round(now - record.created_at, 6)},
    )


__all__ = ["BadRequestError", "Planner"]
