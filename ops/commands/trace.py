"""``sophia trace TASK_ID [--json]``: the spans a task left, as a tree in the terminal.

Read from the span files of this install (``$SOPHIA_HOME/traces``, which ``sophia up``'s
programs write unless ``SOPHIA_TRACE_FILES=off``): each span indented under its parent, with
its service, start (from the trace's first span), duration and status. The step where most
time went (its own time, beside its children) is marked ``◀ slowest``, in bold on a
terminal. An unknown task, or one nothing recorded, is one line and exit status 2.
"""

from __future__ import annotations

import argparse
import os
import sys
from typing import Any

from bus.config import Settings, load
from bus.errors import NotFoundError
from bus.spanfiles import traces_dir
from ops.render import pretty_json, table
from ops.spantree import Node, forest, slowest, task_spans

NAME_WIDTH = 80
SLOWEST = "◀ slowest"
BOLD, PLAIN = "\x1b[1m", "\x1b[0m"


def register(subparsers: Any) -> None:
    parser = subparsers.add_parser(
        "trace",
        help="show a task's spans as a tree: services, durations, status, the slowest step",
        description="Print the trace of a task from the spans this install recorded under "
        "$SOPHIA_HOME/traces (sophia up records them unless SOPHIA_TRACE_FILES=off). "
        "Exit status 2 when no span of the task was recorded.",
    )
    parser.add_argument("task_id", help="the task's id (sophia task ls)")
    parser.add_argument("--json", action="store_true", help="print the trees as JSON")
    parser.set_defaults(func=trace)


def trace(args: argparse.Namespace) -> int:
    """Print the task's span trees. Raises NotFoundError when none of its spans is recorded."""
    settings = load(Settings)
    directory = traces_dir(settings.home_path)
    roots = forest(task_spans(directory, args.task_id))
    if not roots:
        raise NotFoundError(
            f"no recorded spans for task {args.task_id} in {directory} "
            "(unknown task, or its programs ran with SOPHIA_TRACE_FILES=off)"
        )
    worst = slowest(roots)
    if args.json:
        print(pretty_json({"task_id": args.task_id, "spans": [_as_json(r, worst) for r in roots]}))
        return 0
    print(render(roots, worst, bold=_bold(sys.stdout)))
    return 0


def render(roots: list[Node], worst: Node | None, *, bold: bool = False) -> str:
    """The trees as a table, one row per span; ``worst`` marked (and bold with ``bold``)."""
    start = min(r.span.start_ns for r in roots)
    end = max(n.span.end_ns for r in roots for _, n in r.walk())
    count = sum(1 for r in roots for _ in r.walk())
    traces = sorted({r.span.trace_id for r in roots})
    head = f"trace {', '.join(traces)}: {count} spans, {seconds((end - start) / 1e9)}"
    nodes: list[Node] = []
    rows: list[tuple[str, ...]] = []
    for root in roots:
        for prefix, node in _branches(root):
            span = node.span
            name = prefix + span.name + ("  (parent not recorded)" if node.orphan else "")
            if len(name) > NAME_WIDTH:
                name = name[: NAME_WIDTH - 1] + "…"
            status = "ok" if span.error is None else f"error: {span.error or 'failed'}"
            offset = "+" + seconds((span.start_ns - start) / 1e9)
            rows.append((name, span.service, offset, seconds(span.duration_s), status))
            nodes.append(node)
    lines = table(("SPAN", "SERVICE", "START", "DURATION", "STATUS"), rows).splitlines()
    for i, node in enumerate(nodes, start=1):
        if node is worst:
            lines[i] = f"{lines[i]}  {SLOWEST}"
            if bold:
                lines[i] = f"{BOLD}{lines[i]}{PLAIN}"
    if worst is not None:
        span = worst.span
        lines.append(f"slowest: {span.name} ({span.service}), {seconds(worst.self_s)} of its own")
    return "\n".join([head, *lines])


def _branches(root: Node) -> list[tuple[str, Node]]:
    """Each node of ``root``'s tree with the box-drawing prefix that shows its place."""
    out: list[tuple[str, Node]] = [("", root)]

    def down(node: Node, indent: str) -> None:
        for i, child in enumerate(node.children):
            last = i == len(node.children) - 1
            out.append((indent + ("└─ " if last else "├─ "), child))
            down(child, indent + ("   " if last else "│  "))

    down(root, "")
    return out


def seconds(value: float) -> str:
    """``850µs``, ``12.3ms``, ``1.24s``, ``95.0s``."""
    if value < 0.001:
        return f"{value * 1e6:.0f}µs"
    if value < 1:
        return f"{value * 1e3:.1f}ms"
    return f"{value:.2f}s" if value < 10 else f"{value:.1f}s"


def _bold(stream: Any) -> bool:
    isatty = getattr(stream, "isatty", None)
    return bool(isatty and isatty()) and not os.environ.get("NO_COLOR")


def _as_json(node: Node, worst: Node | None) -> dict[str, Any]:
    span = node.span
    return {
        "trace_id": span.trace_id,
        "span_id": span.span_id,
        "parent_id": span.parent_id,
        "name": span.name,
        "service": span.service,
        "start_unix_nano": span.start_ns,
        "duration_s": span.duration_s,
        "self_s": node.self_s,
        "error": span.error,
        "slowest": node is worst,
        "parent_recorded": not node.orphan,
        "attributes": span.attributes,
        "children": [_as_json(c, worst) for c in node.children],
    }
