"""A task's recorded spans, read back from the span files and arranged as trees.

A task is found by the ``sophia.task.id`` attribute (:data:`bus.tracing.TASK_ID`) its spans
carry; every span of each trace such a span belongs to is then read, so the tree runs from the
edge's request through every agent, not only the spans that name the task. A span whose parent
was not recorded (a process without span files, or one killed before its batch was written)
becomes a root of its own, marked as such, rather than being dropped.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bus.spanfiles import read_lines
from bus.tracing import TASK_ID

STATUS_ERROR = 2  # OTLP's STATUS_CODE_ERROR
_SERVICE_PREFIX = "sophia-"


@dataclass(frozen=True, slots=True)
class RecordedSpan:
    """One finished span as a span file holds it."""

    trace_id: str
    span_id: str
    parent_id: str
    name: str
    service: str
    start_ns: int
    end_ns: int
    error: str | None  # the status message of a failed span ("" when it gave none)
    attributes: dict[str, Any]

    @property
    def duration_s(self) -> float:
        return max(self.end_ns - self.start_ns, 0) / 1e9


@dataclass(slots=True)
class Node:
    """A span with the spans it caused, in the order they started."""

    span: RecordedSpan
    children: list[Node] = field(default_factory=list)
    orphan: bool = False  # its parent span was not recorded

    def walk(self, depth: int = 0) -> Iterator[tuple[int, Node]]:
        yield depth, self
        for child in self.children:
            yield from child.walk(depth + 1)

    @property
    def self_s(self) -> float:
        """Time in this span not covered by any child (children cut to its own interval)."""
        start, end = self.span.start_ns, self.span.end_ns
        covered, reach = 0, start
        for s, e in sorted((c.span.start_ns, c.span.end_ns) for c in self.children):
            s, e = max(s, reach), min(e, end)
            if e > s:
                covered += e - s
                reach = e
        return max(end - start - covered, 0) / 1e9


def _value(wrapped: dict[str, Any]) -> Any:
    """An OTLP/JSON ``AnyValue`` as plain data (``intValue`` arrives as text)."""
    for kind, value in wrapped.items():
        if kind == "intValue":
            return int(value)
        if kind == "arrayValue":
            return [_value(v) for v in value.get("values", ())]
        if kind == "kvlistValue":
            return _attributes(value.get("values", ()))
        return value
    return None


def _attributes(pairs: Iterable[dict[str, Any]]) -> dict[str, Any]:
    return {p["key"]: _value(p.get("value", {})) for p in pairs if "key" in p}


def spans_in(line: bytes) -> Iterator[RecordedSpan]:
    """The spans of one span-file line; nothing for a line that is not OTLP/JSON."""
    try:
        request = json.loads(line)
    except ValueError:
        return
    if not isinstance(request, dict):
        return
    for resource in request.get("resourceSpans", ()):
        found = _attributes(resource.get("resource", {}).get("attributes", ()))
        service = str(found.get("service.name", "?")).removeprefix(_SERVICE_PREFIX)
        for scope in resource.get("scopeSpans", ()):
            for span in scope.get("spans", ()):
                status = span.get("status", {})
                failed = status.get("code") == STATUS_ERROR
                yield RecordedSpan(
                    trace_id=span.get("traceId", ""),
                    span_id=span.get("spanId", ""),
                    parent_id=span.get("parentSpanId", ""),
                    name=span.get("name", ""),
                    service=service,
                    start_ns=int(span.get("startTimeUnixNano", 0)),
                    end_ns=int(span.get("endTimeUnixNano", 0)),
                    error=status.get("message", "") if failed else None,
                    attributes=_attributes(span.get("attributes", ())),
                )


def task_spans(directory: Path, task_id: str) -> list[RecordedSpan]:
    """Every recorded span of the traces in which task ``task_id`` ran (none: unknown)."""
    needle = json.dumps(task_id).encode()
    traces: set[str] = set()
    for line in read_lines(directory):
        if needle in line:
            found = spans_in(line)
            traces.update(s.trace_id for s in found if s.attributes.get(TASK_ID) == task_id)
    if not traces:
        return []
    wanted = [t.encode() for t in traces]
    unique: dict[tuple[str, str], RecordedSpan] = {}
    for line in read_lines(directory):
        if any(t in line for t in wanted):
            for span in spans_in(line):
                if span.trace_id in traces:
                    unique[(span.trace_id, span.span_id)] = span
    return list(unique.values())


def forest(spans: Iterable[RecordedSpan]) -> list[Node]:
    """The spans as trees: each under its parent, roots (and children) by start time."""
    nodes = {(s.trace_id, s.span_id): Node(s) for s in spans}
    roots: list[Node] = []
    for node in nodes.values():
        span = node.span
        parent = nodes.get((span.trace_id, span.parent_id)) if span.parent_id else None
        if parent is None:
            node.orphan = bool(span.parent_id)
            roots.append(node)
        else:
            parent.children.append(node)
    for node in nodes.values():
        node.children.sort(key=lambda n: n.span.start_ns)
    return sorted(roots, key=lambda n: n.span.start_ns)


def slowest(roots: Iterable[Node]) -> Node | None:
    """The span where most time went: the largest time of its own, beside its children."""
    every = [node for root in roots for _, node in root.walk()]
    return max(every, key=lambda n: n.self_s, default=None)
