"""``sophia trace TASK_ID`` and the span files it reads.

Spans are made by the real OpenTelemetry SDK (a tracer provider per service, not the global
one) and written by the real :class:`bus.spanfiles.SpanFileExporter`; their start and end
times are given explicitly, so which step is the slowest is a fact of the test, not of the
machine's load. The whole way from ``sophia up`` through the stack is
``tests/test_trace_e2e.py``.
"""

from __future__ import annotations

import base64
import json
import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pytest
from google.protobuf.json_format import MessageToDict
from opentelemetry.exporter.otlp.proto.common.trace_encoder import encode_spans
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.trace import Span, SpanKind, Status, StatusCode, Tracer, set_span_in_context

from bus.config import Settings
from bus.spanfiles import FILE_SHARE, SpanFileExporter, read_lines, recorded_files, traces_dir
from bus.tracing import TASK_ID
from ops import cli
from ops.commands.trace import BOLD, SLOWEST, render
from ops.spantree import forest, slowest, task_spans
from ops.stack import child_env

MS = 1_000_000
T0 = 1_800_000_000 * 1_000_000_000  # a fixed start, in ns since the epoch


@dataclass(frozen=True)
class Run:
    status: int
    out: str
    err: str


@pytest.fixture
def home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("SOPHIA_HOME", str(tmp_path))
    monkeypatch.delenv("SOPHIA_CONFIG", raising=False)
    monkeypatch.delenv("NO_COLOR", raising=False)
    return tmp_path


@pytest.fixture
def sophia(home: Path, capsys: pytest.CaptureFixture[str]) -> Callable[..., Run]:
    def run(*argv: str) -> Run:
        capsys.readouterr()
        status = cli.main(list(argv))
        out, err = capsys.readouterr()
        return Run(status, out, err)

    return run


def tracer(home: Path, service: str, max_bytes: int = 1 << 20) -> Tracer:
    """A tracer of service ``service`` whose spans go to ``home``'s span files at once."""
    provider = TracerProvider(resource=Resource.create({"service.name": f"sophia-{service}"}))
    exporter = SpanFileExporter(traces_dir(home), service, max_bytes)
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    return provider.get_tracer("test")


def span(
    t: Tracer, name: str, start_ms: int, end_ms: int, parent: Span | None = None, **attrs: str
) -> Span:
    """A finished span from ``start_ms`` to ``end_ms`` after T0, under ``parent``."""
    context = set_span_in_context(parent) if parent is not None else None
    made = t.start_span(name, context=context, start_time=T0 + start_ms * MS, attributes=attrs)
    made.end(end_time=T0 + end_ms * MS)
    return made


def record_task(home: Path, task_id: str) -> None:
    """A task's trace over three services: the model call (90 ms of its own) is the slowest;
    the coder's own time is 80 ms; one span of another process lost its parent."""
    edge, tasks, llm = tracer(home, "edge"), tracer(home, "tasks"), tracer(home, "llm")
    root = edge.start_span("POST /v1/tasks/submit", start_time=T0, kind=SpanKind.SERVER)
    submit = span(tasks, "process sophia.tasks.submit", 1, 5, root, **{TASK_ID: task_id})
    work = span(tasks, "process sophia.work.coder", 10, 200, submit, **{TASK_ID: task_id})
    call = span(tasks, "send sophia.llm.complete", 20, 120, work)
    span(llm, "chat test-model", 25, 115, call)
    failed = tasks.start_span("send sophia.memory.search", context=set_span_in_context(work),
                              start_time=T0 + 130 * MS)  # fmt: skip
    failed.set_status(Status(StatusCode.ERROR, "no service answers"))
    failed.end(end_time=T0 + 140 * MS)
    root.end(end_time=T0 + 6 * MS)  # the submit's reply: the work goes on after it
    lost = tasks.start_span("lost parent")  # the parent never reaches a file
    span(tasks, "orphan step", 150, 160, lost, **{TASK_ID: task_id})
    span(edge, "POST /v1/memory/search", 0, 1000)  # another trace, of no task


def test_span_files_hold_each_batch_as_one_otlp_json_line(home: Path) -> None:
    t = tracer(home, "tasks")
    made = span(t, "process sophia.work.tasks", 0, 3, **{TASK_ID: "t1"})
    [path] = recorded_files(traces_dir(home))
    [line] = list(read_lines(traces_dir(home)))
    request = json.loads(line)
    resource = request["resourceSpans"][0]
    [written] = resource["scopeSpans"][0]["spans"]
    assert path.name.startswith("tasks-") and path.suffix == ".jsonl"
    assert {"key": "service.name", "value": {"stringValue": "sophia-tasks"}} in resource[
        "resource"
    ]["attributes"]
    assert written["traceId"] == format(made.get_span_context().trace_id, "032x")
    assert written["spanId"] == format(made.get_span_context().span_id, "016x")
    assert written["kind"] == 1  # SPAN_KIND_INTERNAL, a number as OTLP/JSON writes enums
    assert written["endTimeUnixNano"] == str(T0 + 3 * MS)
    assert {"key": TASK_ID, "value": {"stringValue": "t1"}} in written["attributes"]


def test_span_file_lines_are_what_the_otlp_encoder_makes_in_otlp_json(home: Path) -> None:
    t = tracer(home, "llm")
    parent = span(t, "process sophia.llm.complete", 0, 9, kind="x", size="3")
    child = t.start_span("chat test-model", context=set_span_in_context(parent), start_time=T0)
    child.set_attributes({"tokens": 7, "cost": 0.5, "cached": False, "reasons": ["stop"]})
    child.add_event("retry", {"attempt": 1}, timestamp=T0 + 1)
    child.set_status(Status(StatusCode.ERROR, "no model answered"))
    child.end(end_time=T0 + 5 * MS)
    [line] = list(read_lines(traces_dir(home)))[1:]
    reference = MessageToDict(encode_spans([child]), use_integers_for_enums=True)
    [expected] = reference["resourceSpans"][0]["scopeSpans"][0]["spans"]
    for name in ("traceId", "spanId", "parentSpanId"):  # protobuf's JSON mapping: base64
        expected[name] = base64.b64decode(expected[name]).hex()
    [written] = json.loads(line)["resourceSpans"][0]["scopeSpans"][0]["spans"]
    assert written == expected


def test_a_span_file_past_its_share_rotates_once(home: Path) -> None:
    cap = 24 << 10
    coder = tracer(home, "coder", cap)
    for i in range(300):
        span(coder, f"process sophia.work.{i}", i, i + 1, **{TASK_ID: f"task-{i}"})
    files = recorded_files(traces_dir(home))
    line = max(len(x) for x in read_lines(traces_dir(home))) + 1
    assert {p.name.removeprefix(p.name.split(".")[0]) for p in files} <= {".jsonl", ".jsonl.1"}
    assert all(p.stat().st_size < cap // FILE_SHARE + line for p in files)
    assert [s.name for s in task_spans(traces_dir(home), "task-299")] == ["process sophia.work.299"]
    assert task_spans(traces_dir(home), "task-0") == []  # rotated out long ago


def test_a_starting_process_removes_the_oldest_span_files_past_the_cap(home: Path) -> None:
    directory = traces_dir(home)
    directory.mkdir()
    for age in range(6):  # files of processes gone, 10 KiB each, the oldest age 5
        old = directory / f"coder-{1000 + age}.jsonl"
        old.write_bytes(b"x" * 10_239 + b"\n")
        os.utime(old, (T0 / 1e9 - age * 60, T0 / 1e9 - age * 60))
    SpanFileExporter(directory, "tasks", 35 << 10)
    left = sorted(p.name for p in recorded_files(directory))
    assert left == ["coder-1000.jsonl", "coder-1001.jsonl", "coder-1002.jsonl"]


def test_trace_prints_the_tree_with_services_status_and_the_slowest_step(
    home: Path, sophia: Callable[..., Run]
) -> None:
    record_task(home, "task-a")
    run = sophia("trace", "task-a")
    assert run.status == 0, run.err
    lines = run.out.splitlines()
    assert lines[0].startswith("trace ") and "7 spans" in lines[0]
    assert lines[1].split() == ["SPAN", "SERVICE", "START", "DURATION", "STATUS"]
    width = lines[1].index("SERVICE")
    rows = [line[:width].rstrip() for line in lines[2:-1]]
    assert rows == [
        "POST /v1/tasks/submit",
        "└─ process sophia.tasks.submit",
        "   └─ process sophia.work.coder",
        "      ├─ send sophia.llm.complete",
        "      │  └─ chat test-model",
        "      └─ send sophia.memory.search",
        "orphan step  (parent not recorded)",
    ]
    by_name = {row.lstrip("└├│─ "): line for row, line in zip(rows, lines[2:], strict=False)}
    assert by_name["chat test-model"][width:].split()[:3] == ["llm", "+25.0ms", "90.0ms"]
    assert by_name["chat test-model"].endswith(SLOWEST)
    assert sum(SLOWEST in line for line in lines) == 1
    assert "error: no service answers" in by_name["send sophia.memory.search"]
    assert lines[-1] == "slowest: chat test-model (llm), 90.0ms of its own"
    assert BOLD not in run.out  # not a terminal


def test_trace_marks_the_slowest_step_bold_on_a_terminal(home: Path) -> None:
    record_task(home, "task-b")
    roots = forest(task_spans(traces_dir(home), "task-b"))
    worst = slowest(roots)
    shown = render(roots, worst, bold=True).splitlines()
    assert worst is not None and worst.span.name == "chat test-model"
    [marked] = [line for line in shown if BOLD in line]
    assert "chat test-model" in marked and marked.endswith(SLOWEST + "\x1b[0m")


def test_trace_json_is_the_tree_with_the_slowest_flagged(
    home: Path, sophia: Callable[..., Run]
) -> None:
    record_task(home, "task-c")
    run = sophia("trace", "task-c", "--json")
    tree = json.loads(run.out)["spans"]
    root = tree[0]
    chat = root["children"][0]["children"][0]["children"][0]["children"][0]
    assert run.status == 0
    assert [n["name"] for n in tree] == ["POST /v1/tasks/submit", "orphan step"]
    assert chat["name"] == "chat test-model" and chat["slowest"] is True
    assert chat["service"] == "llm" and chat["duration_s"] == pytest.approx(0.09)
    assert tree[1]["parent_recorded"] is False


@pytest.mark.parametrize("recorded", [False, True], ids=["nothing-recorded", "other-tasks"])
def test_trace_of_an_unknown_task_is_one_line_and_exit_2(
    home: Path, sophia: Callable[..., Run], recorded: bool
) -> None:
    if recorded:
        record_task(home, "task-d")
    run = sophia("trace", "no-such-task")
    assert run.status == 2
    assert run.out == ""
    assert run.err.count("\n") == 1
    assert run.err.startswith("sophia: no recorded spans for task no-such-task in ")


@pytest.mark.parametrize(
    ("setting", "expected"), [("auto", "on"), ("on", "on"), ("off", "off")], ids=str
)
def test_sophia_up_programs_record_span_files_unless_turned_off(
    setting: str, expected: str
) -> None:
    env = child_env(Settings(trace_files=setting))  # type: ignore[arg-type]
    assert env["SOPHIA_TRACE_FILES"] == expected
