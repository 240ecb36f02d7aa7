"""``sophia task "goal" --repo PATH [--pattern …] [--wait]``, ``sophia task show|ls|cancel``.

A task goes to ``sophia.tasks.submit`` as ``nats req`` would send it; ``--wait`` then follows
its events (``sophia.events.task.<id>``) and prints each change — state, step, cost so far —
and ends with the branch, the diff stat and the review. Exit status: 0 done (or submitted
without ``--wait``), 1 failed or cancelled, 3 NATS or the planner not reachable.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import anyio
import msgspec
import nats.errors

from bus.config import Settings, load
from bus.schemas import tasks as t
from bus.schemas.llm import Delta
from ops.cli import run_async
from ops.render import pretty_json, table
from ops.session import open_bus

VERBS = ("show", "ls", "cancel")


def register(subparsers: Any) -> None:
    parser = subparsers.add_parser(
        "task",
        help="hand a coding task to the agents, or show, list and cancel tasks",
        description='sophia task "goal" --repo PATH [--wait] submits a task; '
        "sophia task show ID, sophia task ls, sophia task cancel ID.",
    )
    parser.add_argument("words", nargs="+", help="the goal, or show ID | ls | cancel ID")
    parser.add_argument("--repo", default=".", help="the git repository (default: here)")
    parser.add_argument("--pattern", choices=("fast", "balanced", "quality"), default="balanced")
    parser.add_argument("--base", default="HEAD", help="the ref to start from")
    parser.add_argument("--budget", type=float, default=None, metavar="USD")
    parser.add_argument("--timeout", type=float, default=1800.0, metavar="SECONDS")
    parser.add_argument("--wait", action="store_true", help="follow the task until it ends")
    parser.add_argument(
        "--tokens", action="store_true", help="with --wait: show the model's text as it arrives"
    )
    parser.add_argument("--state", choices=t.STATES, default=None, help="ls: only this state")
    parser.add_argument("--json", action="store_true", help="print JSON")
    parser.set_defaults(func=task_command)


def task_command(args: argparse.Namespace) -> int:
    settings = load(Settings)
    verb = args.words[0]
    if verb in VERBS and len(args.words) <= 2:
        if verb == "ls":
            listed = run_async(_call, settings, "list", t.ListRequest(state=args.state), t.TaskList)
            print(pretty_json(listed) if args.json else render_list(listed))
            return 0
        if len(args.words) != 2:
            print(f"sophia task {verb}: needs a task id", file=sys.stderr)
            return 2
        ref = t.TaskRef(task_id=args.words[1])
        if verb == "cancel":
            result = run_async(_call, settings, "cancel", ref, t.CancelResult)
            print(pretty_json(result) if args.json else f"{result.task_id}: {result.state}")
            return 0
        record = run_async(_call, settings, "get", ref, t.TaskRecord)
        print(pretty_json(record) if args.json else render_record(record))
        return 0
    req = t.SubmitRequest(
        goal=" ".join(args.words),
        repo=str(Path(args.repo).expanduser().resolve()),
        pattern=args.pattern,
        base=args.base,
        budget_usd=args.budget,
        timeout_s=args.timeout,
        stream_tokens=bool(args.tokens and args.wait),
    )
    if not args.wait:
        submitted = run_async(_call, settings, "submit", req, t.SubmitResult)
        print(pretty_json(submitted) if args.json else submitted.task_id)
        return 0
    record = run_async(_submit_and_follow, settings, req, args.timeout)
    print(pretty_json(record) if args.json else render_record(record))
    return 0 if record.state == "done" else 1


async def _call(settings: Settings, endpoint: str, body: msgspec.Struct, reply: type) -> Any:
    async with open_bus(settings) as bus:
        return await bus.request("tasks", endpoint, body, reply)


async def _submit_and_follow(
    settings: Settings, req: t.SubmitRequest, timeout: float
) -> t.TaskRecord:
    async with open_bus(settings) as bus:
        submitted = await bus.request("tasks", "submit", req, t.SubmitResult)
        print(f"task {submitted.task_id} submitted", file=sys.stderr)
        tokens = None
        if req.stream_tokens:
            tokens = await bus.nc.subscribe(t.token_subject(submitted.task_id), cb=_show_tokens)
        subject = bus.subjects.event("task", submitted.task_id)
        sub = await bus.js.subscribe(subject, ordered_consumer=True)
        deadline = time.monotonic() + timeout + 30
        try:
            while time.monotonic() < deadline:
                try:
                    msg = await sub.next_msg(timeout=2.0)
                except nats.errors.TimeoutError:  # no event for a while: look at the record
                    record = await bus.request(
                        "tasks", "get", t.TaskRef(task_id=submitted.task_id), t.TaskRecord
                    )
                    if record.state in t.TERMINAL:
                        return record
                    continue
                event = msgspec.json.decode(msg.data, type=t.TaskEvent)
                print(event_line(event), file=sys.stderr, flush=True)
                if event.kind == "state" and event.state in t.TERMINAL:
                    await anyio.sleep(0.2)  # the outcome's lessons are written just after
                    break
        finally:
            await sub.unsubscribe()
            if tokens is not None:
                await tokens.unsubscribe()
        return await bus.request("tasks", "get", t.TaskRef(task_id=submitted.task_id), t.TaskRecord)


async def _show_tokens(msg: Any) -> None:
    try:
        delta = msgspec.json.decode(msg.data, type=Delta)
    except msgspec.DecodeError:
        return
    print(delta.text, end="", file=sys.stderr, flush=True)


def event_line(event: t.TaskEvent) -> str:
    what = event.state if event.kind == "state" else f"{event.kind} {event.step} {event.step_state}"
    message = f"  {event.message}" if event.message else ""
    return f"[{event.seq:>3}] {what:<32} ${event.cost_usd:.4f}{message}"


def _diff_stat(record: t.TaskRecord) -> str:
    if not record.commits:
        return ""
    try:
        return subprocess.run(
            ["git", "-C", record.repo, "diff", "--stat", record.base_commit, record.branch],
            capture_output=True,
            text=True,
            timeout=30,
            check=True,
        ).stdout
    except (OSError, subprocess.SubprocessError):
        return ""


def render_record(record: t.TaskRecord) -> str:
    lines = [
        f"task {record.task_id}: {record.state}" + (f" ({record.reason})" if record.reason else ""),
        f"goal: {record.goal}",
        f"repo: {record.repo}  pattern: {record.pattern}  cost: ${record.cost_usd:.4f} "
        f"in {record.model_calls} model calls",
    ]
    if record.error:
        lines.append(f"error: {record.error}")
    rows = [(s.id, s.capability, s.state, s.attempt, s.description[:60]) for s in record.plan]
    if rows:
        lines.append(table(("STEP", "CAPABILITY", "STATE", "ATTEMPT", "DESCRIPTION"), rows))
    if record.commits:
        lines.append(f"branch: {record.branch} ({len(record.commits)} commits)")
        lines.append(_diff_stat(record).rstrip())
    if record.review is not None:
        review = record.review
        lines.append(
            f"review: {review.verdict}, {'accepted' if review.accepted else 'not accepted'}; "
            f"{len(review.findings)} findings, {review.dropped_findings} dropped"
        )
        lines += [f"  - {f.file}:{f.line} {f.message}" for f in review.findings[:20]]
    if record.findings and record.state != "done":
        lines.append("last findings:")
        lines += [f"  - {f.file}:{f.line} {f.message}" for f in record.findings[:20]]
    return "\n".join(line for line in lines if line)


def render_list(listed: t.TaskList) -> str:
    if not listed.tasks:
        return "no tasks"
    rows = [
        (s.task_id, s.state, s.reason or "-", s.pattern, f"{s.cost_usd:.4f}", s.goal[:50])
        for s in listed.tasks
    ]
    return table(("TASK", "STATE", "REASON", "PATTERN", "USD", "GOAL"), rows)
