"""A reviewer's work on one review step: real tools first, then the model, then the rules.

For each candidate (the task's branch; both coders' commits in the quality pattern) the
reviewer checks the commit out in a scratch worktree and runs ruff and bandit on the changed
Python files, semgrep when installed, and the repository's own tests in the sandbox
(:mod:`adapters.quality.sandbox`: no network where ``unshare -rn`` works, no secrets, limits).
The model then reviews the diff with the tool results in its prompt; a diff longer than
``tasks_review_chars`` is split across calls by whole files (a huge file by hunks), never cut.

The rules (:class:`bus.schemas.tasks.Review`): a finding counts only if its evidence is one of
this review's tool finding ids or a snippet that occurs at that file and line of the patched
tree (others are dropped and counted); an approval that leaves a changed file uncovered is
asked once more for those files and is not an approval if they stay uncovered; tests that
fail on the patch but not on the base commit are a failed gate, whatever the model said.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Awaitable, Callable
from contextlib import AsyncExitStack
from dataclasses import dataclass, field
from pathlib import Path

import anyio
import msgspec

from adapters.quality.sandbox import run_tests
from adapters.quality.tools import run_bandit, run_ruff, run_semgrep
from bus.client import Bus
from bus.errors import SophiaError
from bus.schemas import tasks as t
from tasks import evidence, prompts
from tasks.calls import TaskStopped, add_timings, ask_model
from tasks.config import TaskSettings
from tasks.follow import until_task_ends
from tasks.plan import code_steps_before
from tasks.steps import (
    dead_letter_message,
    open_attempt,
    take_step,
    tell_planner,
    unless_retryable,
)
from tasks.store import TaskStore
from tasks.worktree import Worktrees, resolve_commit

log = logging.getLogger("sophia.tasks")


@dataclass
class Subject:
    """One candidate under review: its commits, its scratch tree and what the tools found."""

    variant: str
    base: str
    commit: str
    tree: Path = Path()
    changed: list[str] = field(default_factory=list)
    diff: str = ""
    tools: list[t.ToolRunRecord] = field(default_factory=list)
    gate: list[t.Finding] = field(default_factory=list)  # findings that fail the gate
    tools_s: float = 0.0  # wall time of its tool runs (the tests at base included)

    @property
    def tool_ids(self) -> set[str]:
        return {f.id for run in self.tools for f in run.findings}


class StepReviewer:
    def __init__(
        self, bus: Bus, store: TaskStore, settings: TaskSettings, worktrees: Worktrees
    ) -> None:
        self.bus = bus
        self.store = store
        self.settings = settings
        self.worktrees = worktrees

    async def run(self, item: t.ReviewItem) -> None:
        taken = await take_step(
            self.bus,
            self.store,
            item.task_id,
            item.step_id,
            item.attempt,
            reported=lambda step: step.state in ("done", "failed"),
        )
        if taken is None:
            return
        record, step = taken
        started = time.perf_counter()
        review: t.Review | None = None
        stopped: TaskStopped | None = None
        tools_s = 0.0
        async with until_task_ends(self.store, item.task_id, record.deadline) as ended:
            try:
                review, tools_s = await self._review(record, step)
            except TaskStopped as exc:
                stopped = exc
            except SophiaError as exc:
                stopped = TaskStopped(*unless_retryable(exc, "the review"))
        if ended.ended:
            return
        seconds = time.perf_counter() - started
        await self.store.change(
            item.task_id,
            lambda r: _reviewed(r, item, review, stopped, seconds, tools_s),
            if_live=True,
        )
        await tell_planner(self.bus, item.task_id, item.step_id, item.attempt)

    async def dead_lettered(self, item: t.ReviewItem, error: str, code: int) -> None:
        """``item`` went to the DLQ: report the review failed, as if it had failed, and tell
        the planner; an attempt reported already, or no longer the step's, is left alone."""
        stopped = TaskStopped("step_failed", dead_letter_message(error, code))

        def failed(record: t.TaskRecord) -> t.TaskRecord:
            if open_attempt(record, item.step_id, item.attempt) is None:
                return record
            return _reviewed(record, item, None, stopped, 0.0, 0.0)

        old, new = await self.store.change_from(item.task_id, failed, if_live=True)
        if new is not old:
            log.warning("step_dead_lettered", extra={"task": item.task_id, "code": code})
            await tell_planner(self.bus, item.task_id, item.step_id, item.attempt)

    async def _subjects(self, record: t.TaskRecord, step: t.Step) -> list[Subject]:
        """What to review: the task's branch from its base; in quality, each coder's commit
        from where that step started."""
        code = code_steps_before(record.plan, step)
        if record.pattern == "quality" and code:
            return [
                Subject(c.variant, c.base_commit, c.commit) for c in code[-1].candidates if c.commit
            ]
        head = await resolve_commit(Path(record.repo), f"refs/heads/{record.branch}")
        return [Subject("", record.base_commit, head)]

    async def _review(self, record: t.TaskRecord, step: t.Step) -> tuple[t.Review, float]:
        """The settled review, and the seconds its tool runs took."""
        repo = Path(record.repo)
        subjects = await self._subjects(record, step)
        if not subjects:
            nothing = t.Review(verdict="request_changes", accepted=False, note="nothing to review")
            return nothing, 0.0
        async with AsyncExitStack() as stack:
            for subject in subjects:
                subject.tree = await stack.enter_async_context(
                    self.worktrees.scratch(repo, subject.commit)
                )
                await self._run_tools(record, subject)
            review = await self._judge(record, subjects)
        return review, sum(s.tools_s for s in subjects)

    async def _run_tools(self, record: t.TaskRecord, subject: Subject) -> None:
        wt = self.worktrees
        subject.changed = await wt.changed_files(subject.tree, subject.base, subject.commit)
        subject.diff = await wt.diff(subject.tree, subject.base, subject.commit)
        started = time.perf_counter()
        python = [f for f in subject.changed if f.endswith(".py")]
        runs: list[t.ToolRunRecord | None] = [None, None, None]

        async def run_one(slot: int, tool: Callable[..., Awaitable[t.ToolRunRecord]]) -> None:
            runs[slot] = await tool(subject.tree, python)

        async with anyio.create_task_group() as tg:  # separate processes: side by side
            for slot, tool in enumerate((run_ruff, run_bandit, run_semgrep)):
                tg.start_soon(run_one, slot, tool)
        subject.tools.extend(run for run in runs if run is not None)
        if self.settings.tasks_run_tests:
            tests = await run_tests(
                subject.tree,
                timeout_s=self.settings.tasks_test_timeout_s,
                python=self.settings.tasks_test_python or None,
            )
            subject.tools.append(tests)
            if tests.ran and not tests.ok:
                subject.gate = await self._new_failures(record, subject, tests)
        subject.tools_s = time.perf_counter() - started

    async def _new_failures(
        self, record: t.TaskRecord, subject: Subject, tests: t.ToolRunRecord
    ) -> list[t.Finding]:
        """Failing tests of the patch that passed (or did not exist) at the base commit."""
        async with self.worktrees.scratch(Path(record.repo), subject.base) as base_tree:
            before = await run_tests(
                base_tree,
                timeout_s=self.settings.tasks_test_timeout_s,
                python=self.settings.tasks_test_python or None,
            )
        failing_before = {f.message for f in before.findings} if before.ran else set()
        return [
            t.Finding(
                file=f.file,
                line=f.line,
                severity="high",
                message=f"test fails: {f.message}"[: t.MESSAGE_CHARS],
                evidence=f.id,
            )
            for f in tests.findings
            if f.message not in failing_before
        ]

    async def _judge(self, record: t.TaskRecord, subjects: list[Subject]) -> t.Review:
        pick_mode = len(subjects) > 1
        answers = await self._ask(record, subjects, pick_mode, only=None)
        pick = next((a.pick for a in reversed(answers) if a.pick), "")
        if not pick_mode:
            pick = subjects[0].variant
        chosen = next((s for s in subjects if s.variant == pick), subjects[0])
        covered = {_normalise(c) for a in answers for c in a.covered}
        left = evidence.uncovered(chosen.changed, covered)
        verdicts = [a.verdict for a in answers]
        if left and all(v == "approve" for v in verdicts):
            more = await self._ask(record, [chosen], False, only=left)
            answers += more
            covered |= {_normalise(c) for a in more for c in a.covered}
            left = evidence.uncovered(chosen.changed, covered)
        raw = [f for a in answers for f in a.findings]
        kept, dropped = evidence.verify_findings(chosen.tree, raw, chosen.tool_ids)
        verdict = "approve" if all(a.verdict == "approve" for a in answers) else "request_changes"
        notes = []
        if left:
            notes.append("changed files the review did not cover: " + ", ".join(left))
            kept += [t.Finding(file=f, message="the review did not cover this file") for f in left]
        if chosen.gate:
            notes.append(f"{len(chosen.gate)} tests fail on the patch that passed before")
            kept += chosen.gate
        tools = chosen.tools
        for run in tools:
            if run.note:
                notes.append(f"{run.tool}: {run.note}")
        accepted = verdict == "approve" and not left and not chosen.gate
        return t.Review(
            verdict=verdict,
            accepted=accepted,
            findings=kept[: t.MAX_FINDINGS],
            dropped_findings=dropped,
            covered=sorted(covered),
            uncovered=left,
            tools=tools,
            pick=pick if pick_mode else "",
            calls=len(answers),
            note="; ".join(notes)[:2000],
        )

    async def _ask(
        self,
        record: t.TaskRecord,
        subjects: list[Subject],
        pick_mode: bool,
        only: list[str] | None,
    ) -> list[t.ReviewAnswer]:
        """The model's review of every part of the diff (one call per part)."""
        schema = t.schema_of(t.ReviewAnswer)
        limit = self.settings.tasks_review_chars
        parts: list[tuple[str, list[str], str]] = []  # (diff, files, tools text)
        if pick_mode:
            text = "\n\n".join(f"=== Candidate {s.variant} ===\n{s.diff}" for s in subjects)
            files = sorted({f for s in subjects for f in s.changed})
            tools = "\n".join(f"Candidate {s.variant}:\n{_tools_text(s.tools)}" for s in subjects)
            pieces = evidence.split_diff(text, limit) if len(text) > limit else [text]
            parts = [(p, files, tools) for p in pieces]
        else:
            subject = subjects[0]
            diff = subject.diff
            if only is not None:
                diff = _only_files(diff, only)
            for piece in evidence.split_diff(diff, limit):
                parts.append((piece, evidence.files_in_diff(piece), _tools_text(subject.tools)))
        answers = []
        for number, (diff, files, tools) in enumerate(parts, start=1):
            messages = prompts.review_messages(
                record.goal, diff, files, tools, part=(number, len(parts)), pick=pick_mode
            )
            result = await ask_model(
                self.bus,
                self.store,
                record,
                messages,
                task="review",
                schema=schema,
                schema_name="review",
                max_tokens=self.settings.tasks_max_tokens,
                call_timeout_s=self.settings.tasks_call_timeout_s,
            )
            try:
                answers.append(msgspec.convert(result.data, t.ReviewAnswer))
            except msgspec.ValidationError:
                # the gateway checked it against the schema; only what a schema cannot say
                # (a line below 0 after conversion…) lands here: counted as no approval
                log.warning("review_answer_invalid", extra={"task": record.task_id})
                answers.append(t.ReviewAnswer(verdict="request_changes"))
        return answers


def _normalise(path: str) -> str:
    return path.strip().removeprefix("./").removeprefix("b/")


def _only_files(diff: str, files: list[str]) -> str:
    wanted = set(files)
    return (
        "".join(
            part
            for part in evidence.split_diff(diff, 10**9)
            if set(evidence.files_in_diff(part)) & wanted
        )
        or diff
    )


def _tools_text(tools: list[t.ToolRunRecord]) -> str:
    lines = []
    for run in tools:
        if not run.ran:
            lines.append(f"{run.tool}: did not run ({run.note})")
            continue
        lines.append(f"{run.tool}: {run.summary or ('ok' if run.ok else 'problems')}")
        for f in run.findings[:50]:
            lines.append(f"  {f.id} {f.file}:{f.line} {f.code} {f.message}"[:400])
    return "\n".join(lines)


def _reviewed(
    record: t.TaskRecord,
    item: t.ReviewItem,
    review: t.Review | None,
    stopped: TaskStopped | None,
    seconds: float,
    tools_s: float,
) -> t.TaskRecord:
    steps = [msgspec.structs.replace(s) for s in record.plan]
    for step in steps:
        if step.id != item.step_id or step.attempt != item.attempt:
            continue
        step.finished_at = time.time()
        if review is not None:
            step.state, step.review = "done", review
        else:
            step.state = "failed"
            step.reason = stopped.reason if stopped else "error"  # type: ignore[assignment]
            step.error = stopped.message if stopped else "the review did not finish"
    timings = add_timings(record, {"review_s": seconds, "tools_s": tools_s})
    return msgspec.structs.replace(record, plan=steps, timings=timings)
