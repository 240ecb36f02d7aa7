"""``sophia status [--json]``: agent instances, stream and consumer lag, DLQ depth."""

from __future__ import annotations

import argparse
import time
from typing import Any

from bus.config import Settings, load
from ops.cli import run_async, seconds
from ops.render import duration, pretty_json, size, table
from ops.session import DISCOVER_WINDOW_S, open_bus
from ops.stack import Layout, ProgramState, StackState
from ops.survey import Report, survey


def register(subparsers: Any) -> None:
    parser = subparsers.add_parser(
        "status",
        help="show running agents, stream and consumer lag, dead letters",
        description="Show every agent instance (like `nats micro ls`), stream and consumer "
        "lag, and the DLQ depth. Exit status 3 when NATS is not reachable.",
    )
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    parser.add_argument(
        "--wait",
        type=seconds,
        default=DISCOVER_WINDOW_S,
        metavar="SECONDS",
        help=f"how long to collect service replies (default {DISCOVER_WINDOW_S:g})",
    )
    parser.set_defaults(func=status)


def status(args: argparse.Namespace) -> int:
    """Print the report. Raises UnavailableError (exit 3) when NATS does not answer."""
    settings = load(Settings)
    report = run_async(_collect, settings, args.wait)
    print(pretty_json(report) if args.json else render(report))
    return 0


async def _collect(settings: Settings, window: float) -> Report:
    async with open_bus(settings) as bus:
        return await survey(bus, Layout(settings.home_path), window)


def render(report: Report) -> str:
    """The human form: a header line, then services, streams, consumers, dead letters."""
    nats = report.nats
    parts = [
        f"NATS {nats.url} (server {nats.server_version}, rtt {nats.rtt_ms:.2f} ms)  "
        f"prefix {report.prefix}"
    ]
    if report.stack is not None:
        parts.append(_stack_lines(report))
    parts.append(_services_table(report) if report.services else "no services answer")
    parts.append(
        table(
            ("STREAM", "MESSAGES", "SIZE", "CONSUMERS"),
            (
                (s.name, s.messages, size(s.bytes), s.consumers)
                if s.exists
                else (s.name, "missing", None, None)
                for s in report.streams
            ),
        )
    )
    if report.consumers:
        parts.append(
            table(
                ("CONSUMER", "STREAM", "PENDING", "ACK PENDING", "REDELIVERED", "WAITING"),
                (
                    (c.name, c.stream, c.num_pending, c.ack_pending, c.redelivered, c.waiting)
                    for c in report.consumers
                ),
            )
        )
    parts.append(_dlq_line(report))
    return "\n\n".join(parts)


def _services_table(report: Report) -> str:
    return table(
        ("SERVICE", "ID", "VERSION", "PID", "UPTIME", "ENDPOINTS", "REQUESTS", "ERRORS"),
        (
            (
                s.name,
                s.id,
                s.version,
                s.pid,
                duration(s.uptime_s),
                len(s.endpoints),
                s.requests,
                s.errors,
            )
            for s in report.services
        ),
    )


def _stack_lines(report: Report) -> str:
    """The stack's line, then one per program that is down or has been restarted: a crash
    loop shows while it lasts (a program is ``running`` for a moment between its crashes)."""
    stack = report.stack
    assert stack is not None  # checked by the caller
    head = f"stack: supervisor pid {stack.pid}, {stack.phase}, home {stack.home}"
    total = len(stack.programs)
    shown = [p for p in stack.programs if p.status != "running" or p.restarts]
    if not shown:
        return head + f"; all {total} programs running"
    running = sum(1 for p in stack.programs if p.status == "running")
    lines = [head + f"; {running} of {total} programs running"]
    lines += [_program_line(p, stack) for p in shown]
    return "\n".join(lines)


def _program_line(program: ProgramState, stack: StackState) -> str:
    text = f"  {program.name}: {program.status} (restarts {program.restarts}"
    text += f", last exit {program.last_exit})"
    window = f"within {stack.crash_window_s:g} s"
    if program.status == "failed":
        text += f" — crash loop: left down after {program.crashes} crashes {window}"
    elif program.crashes > 1:
        text += f" — crash loop: {program.crashes} crashes {window}"
        text += f", left down at {stack.crash_limit}"
    if program.last_exit_at is not None:
        text += f", exited {duration(time.time() - program.last_exit_at)} ago"
    return text + f"; log {program.log}"


def _dlq_line(report: Report) -> str:
    dlq = report.dlq
    if not dlq.messages:
        return f"DLQ {dlq.stream}: empty"
    per = ", ".join(f"{name} {n}" for name, n in dlq.by_service.items())
    return f"DLQ {dlq.stream}: {dlq.messages} dead letters ({per}); `sophia dlq ls` lists them"
