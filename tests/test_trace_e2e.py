"""One task, one trace: ``sophia up`` processes export to a real OTLP receiver on loopback.

The stack is the real one (``sophia up --detach``: nats-server, the edge and the tasks, memory,
coder, reviewer and llm agents, each its own process), the model is the scripted
OpenAI-compatible server, and the receiver is ``oteltap`` (an OTLP/HTTP protobuf receiver).
A task submitted over the edge's HTTP API must leave exactly one trace, rooted at the edge,
whose every span's parent is in it and is its causal caller, with the messaging and GenAI
semantic-convention attributes; and ``sophia trace TASK_ID`` must print the same trace from the
span files the stack wrote on its own.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import anyio
import httpx
import pytest
from opentelemetry.proto.trace.v1.trace_pb2 import Span
from oteltap import OtelTapHttpProtobufReceiver, OtelTapHttpProtobufReceiverSettings

from bus.config import Settings, load
from edge.tokens import create_token
from ops import cli
from ops.natsserver import free_port
from ops.session import open_bus
from ops.stack import Layout, pid_alive, read_state
from tests.fixtures.openai_upstream import DEFAULT_MODEL, OpenAIUpstream
from tests.tasks.harness import ScriptedModel, make_repo

pytestmark = [pytest.mark.anyio, pytest.mark.slow]

SOPHIA = str(Path(sys.executable).parent / "sophia")
PROGRAMS = ("edge", "tasks", "memory", "coder", "reviewer", "llm")
SERVER, CLIENT, PRODUCER, CONSUMER = (
    Span.SPAN_KIND_SERVER,
    Span.SPAN_KIND_CLIENT,
    Span.SPAN_KIND_PRODUCER,
    Span.SPAN_KIND_CONSUMER,
)


def attrs(span: Span) -> dict[str, Any]:
    found: dict[str, Any] = {}
    for pair in span.attributes:
        kind = pair.value.WhichOneof("value")
        found[pair.key] = getattr(pair.value, kind) if kind else None
    return found


@dataclass
class Received:
    """Every span the receiver got, in arrival order."""

    spans: list[Span]

    def trace_of(self, task_id: str) -> list[Span]:
        """The task's one trace, each span once (an exporter may send a batch again)."""
        ids = {s.trace_id for s in self.spans if attrs(s).get("sophia.task.id") == task_id}
        assert len(ids) == 1, f"task {task_id} is in {len(ids)} traces"
        return list({s.span_id: s for s in self.spans if s.trace_id in ids}.values())


@pytest.fixture
async def receiver() -> AsyncIterator[tuple[str, Received]]:
    """oteltap on a free loopback port; its URL and what it has received so far."""
    port = free_port()
    received = Received([])
    settings = OtelTapHttpProtobufReceiverSettings(http_port=port)
    async with OtelTapHttpProtobufReceiver(settings) as tap, anyio.create_task_group() as tg:

        async def collect() -> None:
            async for span in tap.stream_traces():
                received.spans.append(span)

        tg.start_soon(collect)
        yield f"http://127.0.0.1:{port}", received
        tg.cancel_scope.cancel()


@pytest.fixture
def stack_env(tmp_path: Path, upstream: OpenAIUpstream) -> Iterator[dict[str, str]]:
    """The environment of a stack on free ports, its model the scripted server; whatever
    happens, every process the state file named is killed at the end."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("SOPHIA_", "OTEL_"))}
    env.update(
        SOPHIA_HOME=str(tmp_path / "home"),
        SOPHIA_NATS_URL=f"nats://127.0.0.1:{free_port()}",
        SOPHIA_EDGE_BIND=f"127.0.0.1:{free_port()}",
        SOPHIA_READY_TIMEOUT_S="60",
        SOPHIA_STOP_GRACE_S="10",
        SOPHIA_METRICS_BIND="off",
        SOPHIA_EDGE_DISCOVERY_S="0.5",  # the edge finds the planner sooner
        SOPHIA_LLM_BASE_URL=upstream.base_url,
        SOPHIA_LLM_MODEL=DEFAULT_MODEL,
        SOPHIA_LLM_CAPABILITIES="json_schema",
        SOPHIA_TASKS_RUN_TESTS="false",
        SOPHIA_CONFIG=str(tmp_path / "none.toml"),  # not the checkout's sophia.toml, if any
        OTEL_METRICS_EXPORTER="none",
        OTEL_BSP_SCHEDULE_DELAY="200",
    )
    (tmp_path / "none.toml").write_text("")
    yield env
    state = read_state(Layout(Path(env["SOPHIA_HOME"])))
    if state is not None:
        for pid in {state.pid} | {p.pid for p in state.programs if p.pid}:
            if pid_alive(pid):
                os.kill(pid, signal.SIGKILL)


def sophia(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [SOPHIA, *args], env=env, capture_output=True, text=True, timeout=120, check=False
    )


@dataclass(frozen=True)
class Run:
    status: int
    out: str
    err: str


def run_cli(capsys: pytest.CaptureFixture[str], *argv: str) -> Run:
    """``sophia ARGV…`` in this process (``sophia trace`` reads files only: no event loop)."""
    capsys.readouterr()
    status = cli.main(list(argv))
    out, err = capsys.readouterr()
    return Run(status, out, err)


async def stop_stack(layout: Layout) -> None:
    """What ``sophia down`` does, without a CLI process's start-up: SIGTERM the supervisor,
    which stops every program gracefully, and wait until it has exited."""
    state = read_state(layout)
    assert state is not None
    os.kill(state.pid, signal.SIGTERM)
    with anyio.fail_after(60):
        while pid_alive(state.pid):  # noqa: ASYNC110 (another process: nothing to wait on)
            await anyio.sleep(0.1)
    stopped = read_state(layout)
    assert stopped is not None and stopped.phase == "stopped"
    assert all(p.pid is None or not pid_alive(p.pid) for p in stopped.programs)


async def edge_token(env: dict[str, str]) -> str:
    settings = load(Settings, env)
    async with open_bus(settings) as bus:
        kv = await bus.js.key_value(bus.subjects.config_bucket)
        return await create_token(kv, "tracer", ["*"])


async def submit_over_http(edge_url: str, token: str, repo: Path) -> str:
    """Submit over ``POST /v1/tasks/submit`` once the edge has found the planner; wait for
    the task to end; return its id."""
    headers = {"Authorization": f"Bearer {token}"}
    async with httpx.AsyncClient(base_url=edge_url, headers=headers, timeout=90) as http:
        body = {"goal": "add a --json flag to report", "repo": str(repo)}
        with anyio.fail_after(30):
            reply = await http.post("/v1/tasks/submit", json=body)
            # 401: the edge has not seen the token yet; 404: nor found the planner
            while reply.status_code in (401, 404):
                await anyio.sleep(0.2)
                reply = await http.post("/v1/tasks/submit", json=body)
        assert reply.status_code == 200, reply.text
        task_id = reply.json()["task_id"]
        waited = await http.post("/v1/tasks/wait", json={"task_id": task_id, "timeout_s": 80})
    assert waited.status_code == 200, waited.text
    assert waited.json()["state"] == "done", waited.json()
    return task_id


def ancestry(span: Span, by_id: dict[bytes, Span]) -> list[Span]:
    """``span`` and its ancestors, up to the root."""
    chain = [span]
    while chain[-1].parent_span_id:
        chain.append(by_id[chain[-1].parent_span_id])
    return chain


def services_along(chain: list[Span]) -> list[str]:
    """The consumer groups of the handler spans on ``chain``, root first, repeats merged."""
    groups = [
        str(attrs(s)["messaging.consumer.group.name"])
        for s in reversed(chain)
        if s.kind in (SERVER, CONSUMER) and "messaging.consumer.group.name" in attrs(s)
    ]
    return [g for i, g in enumerate(groups) if i == 0 or groups[i - 1] != g]


async def test_one_task_is_one_trace_from_the_edge_to_the_model(
    receiver: tuple[str, Received],
    stack_env: dict[str, str],
    upstream: OpenAIUpstream,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    otlp_url, received = receiver
    env = {**stack_env, "OTEL_EXPORTER_OTLP_ENDPOINT": otlp_url}
    upstream.respond_with(ScriptedModel())
    repo = make_repo(tmp_path / "repo")
    up = await anyio.to_thread.run_sync(
        lambda: sophia(env, "up", "--detach", *(f"--only={p}" for p in PROGRAMS))
    )
    assert up.returncode == 0, up.stdout + up.stderr
    token = await edge_token(env)
    task_id = await submit_over_http(f"http://{env['SOPHIA_EDGE_BIND']}", token, repo)
    await stop_stack(Layout(Path(env["SOPHIA_HOME"])))  # every process flushes its exporters
    monkeypatch.setenv("SOPHIA_HOME", env["SOPHIA_HOME"])
    traced = run_cli(capsys, "trace", task_id)
    as_json = run_cli(capsys, "trace", task_id, "--json")
    unknown = run_cli(capsys, "trace", "0123456789abcdef")

    spans = received.trace_of(task_id)
    by_id = {s.span_id: s for s in spans}
    roots = [s for s in spans if not s.parent_span_id]
    assert [(r.name, r.kind) for r in roots] == [("POST /v1/tasks/submit", SERVER)]
    assert all(s.parent_span_id in by_id for s in spans if s.parent_span_id)
    for span in spans:  # a message's handler is the child of the span that sent it
        a = attrs(span)
        if a.get("messaging.system") != "nats":
            continue
        assert a["messaging.destination.name"] and a["messaging.operation.name"], a
        if span.kind in (SERVER, CONSUMER):
            sent = attrs(by_id[span.parent_span_id])
            assert a["messaging.operation.type"] == "process"
            assert sent["messaging.destination.name"] == a["messaging.destination.name"]
            assert sent["messaging.operation.type"] == "send"
            assert by_id[span.parent_span_id].kind == (CLIENT if span.kind == SERVER else PRODUCER)

    chats = [s for s in spans if attrs(s).get("gen_ai.operation.name") == "chat"]
    assert {attrs(c)["sophia.llm.task"] for c in chats} >= {"plan", "code", "review"}
    for chat in chats:
        a = attrs(chat)
        assert chat.kind == CLIENT and a["gen_ai.request.model"] == DEFAULT_MODEL
        assert a["gen_ai.system"] == a["gen_ai.provider.name"] == "openai"
        assert a["gen_ai.usage.input_tokens"] > 0 and a["gen_ai.usage.output_tokens"] > 0
        assert attrs(by_id[chat.parent_span_id])["messaging.destination.name"].endswith(
            ".llm.complete"
        )
    review = next(c for c in chats if attrs(c)["sophia.llm.task"] == "review")
    assert services_along(ancestry(review, by_id)) == [
        "tasks",
        "coder",
        "tasks",
        "reviewer",
        "llm",
    ]
    memory = [s for s in spans if attrs(s).get("messaging.consumer.group.name") == "memory"]
    assert any("tasks" in services_along(ancestry(m, by_id)) for m in memory)

    assert traced.status == 0, traced.err
    lines = traced.out.splitlines()
    assert lines[0].startswith(f"trace {roots[0].trace_id.hex()}: ")
    assert lines[2].startswith("POST /v1/tasks/submit ") and " edge " in lines[2]
    assert sum("◀ slowest" in line for line in lines) == 1
    tree = json.loads(as_json.out)["spans"]
    walked = list(walk(tree))
    assert [n["name"] for n in tree] == ["POST /v1/tasks/submit"]
    # the span files hold the tree the OTLP receiver got: the same spans, the same parents
    assert {n["span_id"]: n["parent_id"] for _, n in walked} == {
        s.span_id.hex(): s.parent_span_id.hex() for s in spans
    }
    width = lines[1].index("SERVICE")  # the text shows that tree, each row indented by depth
    cells = [row[:width].rstrip() for row in lines[2:-1]]
    shown = [((len(c) - len(c.lstrip(" │├└─"))) // 3, c.lstrip(" │├└─")) for c in cells]
    assert [depth for depth, _ in shown] == [depth for depth, _ in walked]
    assert all(
        n["name"].startswith(name.removesuffix("…"))
        for (_, name), (_, n) in zip(shown, walked, strict=True)
    )
    assert unknown.status == 2
    assert unknown.err.count("\n") == 1 and "no recorded spans" in unknown.err


def walk(nodes: list[dict[str, Any]], depth: int = 0) -> Iterator[tuple[int, dict[str, Any]]]:
    """The JSON tree's nodes in the order ``sophia trace`` prints them, with their depth."""
    for node in nodes:
        yield depth, node
        yield from walk(node["children"], depth + 1)
