"""A coder's work on one code step: a worktree, edits from the model, checks, one commit.

Guarantees of :meth:`StepCoder.run`:
- the user's working tree is never touched: the step runs in a worktree of branch
  ``sophia/<task>`` (``sophia/<task>-<step>-<variant>`` for the quality pattern's two
  coders) under ``SOPHIA_HOME``;
- edits are applied all or nothing (:mod:`tasks.edits`); failed blocks go back to the model
  with the reason and the closest real lines, only those are asked again, at most
  ``tasks_edit_retries`` times, and the same failing edit twice in a row ends the step;
- every changed Python file is compiled and ruff-checked before and after: an edit that adds
  problems goes back to the model with them (``tasks_lint_retries`` times), else the step
  fails with them as findings;
- a step ends with exactly one commit, with the trailer ``Sophia-Step: <task>/<step>#<attempt>``:
  a redelivered step (its coder died) finds that commit and reports it, or drops the dead
  coder's uncommitted edits and starts the step afresh;
- a step of a task that ended (cancelled, timed out) stops at once and reports nothing;
- a step whose work item was dead-lettered (its coders kept dying, or the watchdog gave its
  last delivery up) is reported failed, ``step_failed`` naming the DLQ's error, and the planner
  told (:meth:`StepCoder.dead_lettered`), unless the attempt was reported already.
"""

from __future__ import annotations

import dataclasses
import functools
import logging
import time
from pathlib import Path

import anyio
import msgspec

from adapters.quality.lint_delta import new_problems
from bus.client import Bus
from bus.errors import SophiaError
from bus.schemas import tasks as t
from bus.schemas.llm import Message
from tasks import edits, prompts
from tasks.calls import TaskStopped, add_timing, ask_model
from tasks.config import TaskSettings
from tasks.follow import until_task_ends
from tasks.planner import quality_head, variant_branch
from tasks.repomap import read_files, repo_map
from tasks.steps import (
    dead_letter_message,
    open_attempt,
    take_step,
    tell_planner,
    unless_retryable,
)
from tasks.store import TaskStore
from tasks.worktree import NothingToCommit, Worktrees, git

log = logging.getLogger("sophia.tasks")

STEP_TRAILER = "Sophia-Step"
#: the quality pattern's two coders sample (and so are never answered from the cache)
VARIANT_TEMPERATURE = 0.6
TASK_TRAILER = "Sophia-Task"


class StepFailed(Exception):
    def __init__(self, reason: str, message: str, findings: list[t.Finding] | None = None) -> None:
        super().__init__(message)
        self.reason = reason
        self.message = message
        self.findings = findings or []


def step_trailer(item: t.CodeItem) -> str:
    return f"{item.task_id}/{item.step_id}#{item.attempt}{item.variant}"


class StepCoder:
    def __init__(
        self, bus: Bus, store: TaskStore, settings: TaskSettings, worktrees: Worktrees, who: str
    ) -> None:
        self.bus = bus
        self.store = store
        self.settings = settings
        self.worktrees = worktrees
        self.who = who

    async def run(self, item: t.CodeItem) -> None:
        """Do the step ``item`` names, report it in the record, and tell the planner."""
        taken = await take_step(
            self.bus,
            self.store,
            item.task_id,
            item.step_id,
            item.attempt,
            variant=item.variant,
            reported=lambda step: any(
                c.variant == item.variant and (c.commit or c.error) for c in step.candidates
            ),
        )
        if taken is None:
            return
        record, step = taken
        started = time.perf_counter()
        candidate: t.Candidate | None = None
        failure: StepFailed | None = None
        async with until_task_ends(self.store, item.task_id, record.deadline) as ended:
            try:
                candidate = await self._step(record, step, item)
            except StepFailed as exc:
                failure = exc
            except TaskStopped as exc:
                failure = StepFailed(exc.reason, exc.message)
            except SophiaError as exc:
                failure = StepFailed(*unless_retryable(exc, "the step"))
        if ended.ended:
            return
        seconds = time.perf_counter() - started
        if failure is not None:
            candidate = t.Candidate(
                variant=item.variant, error=failure.message[:2000], findings=failure.findings
            )
        assert candidate is not None
        await self.store.change(
            item.task_id,
            lambda r: _reported(r, item, candidate, failure, seconds),
            if_live=True,
        )
        await tell_planner(self.bus, item.task_id, item.step_id, item.attempt, item.variant)

    async def dead_lettered(self, item: t.CodeItem, error: str, code: int) -> None:
        """``item`` went to the DLQ: report its attempt failed, as if the step had failed, and
        tell the planner; an attempt reported already, or no longer the step's, is left alone."""
        failure = StepFailed("step_failed", dead_letter_message(error, code))
        candidate = t.Candidate(variant=item.variant, error=failure.message)

        def failed(record: t.TaskRecord) -> t.TaskRecord:
            step = open_attempt(record, item.step_id, item.attempt)
            if step is None or any(
                c.variant == item.variant and (c.commit or c.error) for c in step.candidates
            ):
                return record
            return _reported(record, item, candidate, failure, 0.0)

        old, new = await self.store.change_from(item.task_id, failed, if_live=True)
        if new is not old:
            log.warning("step_dead_lettered", extra={"task": item.task_id, "code": code})
            await tell_planner(self.bus, item.task_id, item.step_id, item.attempt, item.variant)

    async def _step(self, record: t.TaskRecord, step: t.Step, item: t.CodeItem) -> t.Candidate:
        repo = Path(record.repo)
        if item.variant:
            branch = variant_branch(record.task_id, step.id, item.variant)
            start = quality_head(record) or record.base_commit
        else:
            branch, start = record.branch, record.base_commit
        tree = await self.worktrees.tree(repo, branch, start)
        trailer = step_trailer(item)
        done = await self.worktrees.find_commit(tree, STEP_TRAILER, trailer, since=start)
        if done is None:
            await self.worktrees.clean(tree)  # what a coder that died here left uncommitted
            step_base = await self.worktrees.head(tree)
            blocks, calls = await self._edit(record, step, item, tree, step_base)
            message = (
                f"sophia: {' '.join(step.description.split())[:60]}\n\n"
                f"Task {record.task_id}, step {step.id}, attempt {item.attempt}."
            )
            try:
                done = await self.worktrees.commit(
                    tree, message, {TASK_TRAILER: record.task_id, STEP_TRAILER: trailer}
                )
            except NothingToCommit:
                raise StepFailed("step_failed", "the edits left every file as it was") from None
        else:
            step_base = (await git(tree, "rev-parse", f"{done}^")).strip()
            blocks, calls = 0, 0
        stat = await self.worktrees.diff_stat(tree, step_base, done)
        return t.Candidate(
            variant=item.variant,
            branch=branch,
            base_commit=step_base,
            commit=done,
            diff_stat=stat[-4000:],
            blocks_applied=blocks,
            model_calls=calls,
        )

    async def _edit(
        self, record: t.TaskRecord, step: t.Step, item: t.CodeItem, tree: Path, step_base: str
    ) -> tuple[int, int]:
        """Ask for edits and apply them until they apply and add no problems. Returns the
        blocks applied and the model calls made. Raises StepFailed, TaskStopped."""
        wanted = list(dict.fromkeys([*step.files, *(f.file for f in item.feedback if f.file)]))
        files_text, _ = await anyio.to_thread.run_sync(
            lambda: read_files(tree, wanted, max_chars=self.settings.tasks_file_chars)
        )
        the_map = await anyio.to_thread.run_sync(lambda: repo_map(tree, focus=wanted))
        messages = prompts.code_messages(
            record.goal, step, files_text, the_map, item.feedback, variant=item.variant
        )
        kept: list[edits.EditBlock] = []  # blocks that applied in the dry run, kept for later
        applied_total = 0
        calls = 0
        last_keys: frozenset[str] = frozenset()
        edit_turns = self.settings.tasks_edit_retries
        lint_turns = self.settings.tasks_lint_retries
        changed: set[str] = set()
        while True:
            answer = await ask_model(
                self.bus,
                self.store,
                record,
                messages,
                task="code",
                max_tokens=self.settings.tasks_max_tokens,
                call_timeout_s=self.settings.tasks_call_timeout_s,
                temperature=VARIANT_TEMPERATURE if item.variant else 0.0,
            )
            calls += 1
            messages.append(Message(role="assistant", content=answer.text))
            fresh, problems = edits.parse_blocks(answer.text)
            blocks = [dataclasses.replace(b, index=i) for i, b in enumerate([*kept, *fresh])]
            if not blocks and not problems:
                raise StepFailed("step_failed", "the model's answer held no SEARCH/REPLACE block")
            outcome = await anyio.to_thread.run_sync(
                functools.partial(edits.apply_blocks, tree, blocks, dry_run=bool(problems))
            )
            if outcome.ok and not problems:
                kept = []
                applied_total += len(outcome.applied)
                changed.update(outcome.changed)
                findings = await self._new_problems(tree, step_base, sorted(changed))
                if not findings:
                    return applied_total, calls
                if lint_turns == 0:
                    raise StepFailed("step_failed", "the edit adds problems", findings)
                lint_turns -= 1
                messages.append(prompts.lint_message(_listing(findings)))
                continue
            failed = {f.block.index for f in outcome.failures}
            kept = [b for b in blocks if b.index not in failed]
            keys = frozenset(edits.failure_key(f) for f in outcome.failures)
            if keys and keys == last_keys:
                raise StepFailed(
                    "loop", "the same edit failed twice in a row", _as_findings(outcome)
                )
            last_keys = keys
            if edit_turns == 0:
                raise StepFailed("step_failed", "edits did not apply", _as_findings(outcome))
            edit_turns -= 1
            messages.append(prompts.retry_message(edits.failure_report(outcome.failures, problems)))

    async def _new_problems(
        self, tree: Path, step_base: str, changed: list[str]
    ) -> list[t.Finding]:
        before = {p: await self.worktrees.show(tree, step_base, p) for p in changed}
        found = await new_problems(tree, before)
        return [
            t.Finding(
                file=f.file,
                line=f.line,
                severity="high",
                message=f"{f.code} {f.message}".strip(),
                evidence=f.id,
            )
            for f in found
        ]


def _listing(findings: list[t.Finding]) -> str:
    return "\n".join(f"{f.file}:{f.line}: {f.message}" for f in findings)


def _as_findings(outcome: edits.EditOutcome) -> list[t.Finding]:
    return [
        t.Finding(file=f.block.path[:4096], severity="high", message=f.reason[: t.MESSAGE_CHARS])
        for f in outcome.failures
    ]


def _reported(
    record: t.TaskRecord,
    item: t.CodeItem,
    candidate: t.Candidate,
    failure: StepFailed | None,
    seconds: float,
) -> t.TaskRecord:
    steps = [msgspec.structs.replace(s) for s in record.plan]
    commits = list(record.commits)
    for step in steps:
        if step.id != item.step_id or step.attempt != item.attempt:
            continue
        others = [c for c in step.candidates if c.variant != item.variant]
        step.candidates = [*others, candidate]
        expected = 2 if record.pattern == "quality" else 1
        if len(step.candidates) < expected:
            continue
        step.finished_at = time.time()
        if any(c.commit for c in step.candidates):
            step.state = "done"
            if record.pattern != "quality" and candidate.commit not in commits:
                commits.append(candidate.commit)
        else:
            step.state = "failed"
            step.error = failure.message if failure else "no candidate"
            step.reason = failure.reason if failure else "step_failed"  # type: ignore[assignment]
    return msgspec.structs.replace(
        record, plan=steps, commits=commits, timings=add_timing(record, "code_s", seconds)
    )
