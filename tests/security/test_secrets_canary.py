"""Secrets never leak: canaries planted everywhere a user's secrets go, then every sink read.

The stack runs as a user runs it: ``sophia up --detach`` (its own nats-server, one process
per agent, the edge, each with its log file under ``SOPHIA_HOME/logs``), OTLP export to a
receiver on loopback, a scripted model server. Canary secrets (an AWS key id and secret key,
a GitHub token, an RSA private key, a Portkey key; fresh values every run) are planted:

- in the processes' environment: ``AWS_ACCESS_KEY_ID``/``AWS_SECRET_ACCESS_KEY``,
  ``GITHUB_TOKEN``, ``SSH_PRIVATE_KEY``, ``PORTKEY_API_KEY`` (the gateway's key) and the
  variable the model's ``api_key_env`` names (both reach the model server: checked);
- in memory writes (text, metadata, tags; one body large enough for the archive tier), a
  session's summary and context, a search query, a model call's prompt;
- in code being indexed (``sophia memory index`` of a repository holding them);
- in a task's goal (``tasks.submit``), and in every model answer (plan, edit, chat);
- in requests that fail validation, over HTTP and straight over the bus.

Then every sink is read and searched for each canary and its fragments (so a half-redacted
key counts): every log file and every CLI's output, every error reply, every message left in
every JetStream stream (the whole ``SOPHIA_EVENTS`` stream, task records, sessions, config),
every file under ``SOPHIA_HOME`` (NATS storage, the memory tiers) except the user's own code
in task worktrees, every span and metric exported over OTLP, ``/metrics`` of every process,
``sophia status`` (text and JSON), and this process's own log records. A failure lists which
sink held which canary. A marker word (no secret) planted beside the canaries must show up
in the sinks that hold user data, so a search that cannot see into a sink does not pass.

The default run (CI) is the fast-pattern task (no review); ``SOPHIA_CANARY_FULL=1`` adds the
reviewer with the repository's own tests printing the canaries (tool output), a balanced task
and the S3 archive tier on moto with the AWS canaries as its credentials:

    SOPHIA_CANARY_FULL=1 python -m pytest -q tests/security -s
"""

from __future__ import annotations

import json
import logging
import os
import secrets
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import anyio
import httpx
import nats
import pytest

from memory.redact import redact
from ops.natsserver import free_port
from ops.stack import Layout, pid_alive, read_state
from tests.fixtures.openai_upstream import OpenAIUpstream, Reply
from tests.security.canaries import Canary, CanarySet, Findings, leaks
from tests.security.otlp import OtlpReceiver
from tests.security.sinks import home_files, metrics_pages, s3_objects, stream_messages

FULL = os.environ.get("SOPHIA_CANARY_FULL") == "1"
SOPHIA = str(Path(sys.executable).parent / "sophia")
MODEL = "canary-model"
AGENTS = ("llm", "memory", "tasks", "coder", *(("reviewer",) if FULL else ()), "edge")
CLI_TIMEOUT_S = 90
TASK_WAIT_S = 60.0


def _python(canaries: CanarySet) -> str:
    return (
        '"""Billing settings."""\n\n'
        f'AWS_ACCESS_KEY_ID = "{canaries.aws_key_id.value}"\n'
        f'AWS_SECRET_ACCESS_KEY = "{canaries.aws_secret.value}"\n'
        f'GITHUB_TOKEN = "{canaries.github_token.value}"\n'
        f'PORTKEY_API_KEY = "{canaries.portkey_key.value}"\n'
        f'DEPLOY_KEY = """{canaries.private_key.value}"""\n\n\n'
        "def total(rows):\n"
        '    """Sum the rows."""\n'
        "    return sum(rows)\n"
    )


def _tests(marker: str) -> str:
    # tool output: the repository's own tests print the secrets (from its code and from the
    # environment, which the reviewer's sandbox must not pass on)
    return (
        "import os\n\nimport settings\n\n\n"
        "def test_prints_the_secrets():\n"
        f'    print("{marker}", settings.AWS_SECRET_ACCESS_KEY, settings.GITHUB_TOKEN)\n'
        '    print(settings.DEPLOY_KEY, os.environ.get("GITHUB_TOKEN"))\n'
        "    assert settings.total([1, 2]) == 3\n\n\n"
        "def test_fails_showing_secrets():\n"
        '    print(f"PORTKEY_API_KEY={settings.PORTKEY_API_KEY}", settings.DEPLOY_KEY)\n'
        "    assert settings.GITHUB_TOKEN == settings.AWS_ACCESS_KEY_ID\n"
    )


def make_repo(root: Path, canaries: CanarySet, marker: str) -> Path:
    files = {
        "settings.py": _python(canaries),
        "README.md": f"# billing\n\n{canaries.text(marker)}",
        "tests/test_settings.py": _tests(marker),
    }
    for path, text in files.items():
        (root / path).parent.mkdir(parents=True, exist_ok=True)
        (root / path).write_text(text)
    for args in (["init", "-q", "-b", "main"], ["add", "-A"]):
        subprocess.run(["git", "-C", str(root), *args], check=True)
    who = ["-c", "user.name=t", "-c", "user.email=t@t"]
    subprocess.run(["git", "-C", str(root), *who, "commit", "-qm", "first"], check=True)
    return root


def _schema_name(body: dict[str, Any]) -> str:
    fmt = body.get("response_format")
    if isinstance(fmt, dict) and fmt.get("type") == "json_schema":
        return str(fmt.get("json_schema", {}).get("name", ""))
    return ""


def responder(canaries: CanarySet, marker: str) -> Any:
    """Model answers that carry the canaries: in a plan's step, an edit, a review, a chat."""
    line = canaries.line(marker)
    edit = (
        f"I will add the total. Note: {line}\n\n"
        "settings.py\n```python\n<<<<<<< SEARCH\n"
        'def total(rows):\n    """Sum the rows."""\n'
        "=======\n"
        f'def total(rows):\n    """Sum the rows ({marker})."""\n'
        ">>>>>>> REPLACE\n```\n"
    )
    plan = {
        "steps": [
            {
                "id": "s1",
                "capability": "code",
                "description": f"edit total; {line}",
                "files": ["settings.py"],
                "depends_on": [],
            }
        ]
    }
    review = {
        "verdict": "approve",
        "findings": [
            {
                "file": "settings.py",
                "line": 3,
                "severity": "high",
                "message": f"hard-coded secret: {line}",
                "evidence": f'AWS_SECRET_ACCESS_KEY = "{canaries.aws_secret.value}"',
            }
        ],
        "covered": ["settings.py"],
    }

    def answer(body: dict[str, Any]) -> Reply:
        kind = _schema_name(body)
        if kind == "plan":
            return Reply(text=json.dumps(plan))
        if kind == "review":
            return Reply(text=json.dumps(review))
        if kind or body.get("response_format"):
            return Reply(text=json.dumps({"answer": line}))
        task_prompt = any("SEARCH" in str(m.get("content", "")) for m in body["messages"])
        return Reply(text=edit if task_prompt else canaries.text(marker))

    return answer


@dataclass
class Stack:
    """The planted stack of one test: where it lives and what it has said so far."""

    home: Path
    env: dict[str, str]
    edge_url: str
    outputs: list[tuple[str, str]] = field(default_factory=list)  # CLI runs: (argv, output)
    replies: list[tuple[str, bytes]] = field(default_factory=list)  # every reply received

    def sophia(self, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        done = subprocess.run(
            [SOPHIA, *args],
            env=self.env,
            capture_output=True,
            text=True,
            timeout=CLI_TIMEOUT_S,
            check=False,
        )
        shown = done.stderr if args[:2] == ("token", "create") else done.stdout + done.stderr
        self.outputs.append((f"sophia {' '.join(args)}", shown))
        if check and done.returncode != 0:
            raise AssertionError(f"sophia {args} -> {done.returncode}: {done.stderr[-2000:]}")
        return done


def _toml(path: Path, upstream: OpenAIUpstream) -> Path:
    path.write_text(
        "[llm]\nattempt_timeout_s = 20.0\ndeadline_s = 40.0\nmax_retries = 1\n"
        "[[llm.models]]\n"
        f'name = "{MODEL}"\nprovider = "openai"\nbase_url = "{upstream.base_url}"\n'
        'api_key_env = "SOPHIA_CANARY_MODEL_KEY"\ncapabilities = ["json_schema"]\n'
        "context_window = 128000\n"
    )
    return path


def _env(tmp: Path, canaries: CanarySet, upstream: OpenAIUpstream, otlp: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("SOPHIA_", "OTEL_"))}
    for name in ("PORTKEY_API_KEY", "PORTKEY_GATEWAY_URL", "AWS_PROFILE"):
        env.pop(name, None)
    env.update(
        SOPHIA_HOME=str(tmp / "home"),
        SOPHIA_NATS_URL=f"nats://127.0.0.1:{free_port()}",
        SOPHIA_EDGE_BIND=f"127.0.0.1:{free_port()}",
        SOPHIA_CONFIG=str(_toml(tmp / "sophia.toml", upstream)),
        SOPHIA_READY_TIMEOUT_S="60",
        SOPHIA_STOP_GRACE_S="15",
        SOPHIA_EDGE_DISCOVERY_S="0.5",
        SOPHIA_TASKS_RUN_TESTS="true" if FULL else "false",
        OTEL_EXPORTER_OTLP_ENDPOINT=otlp,
        OTEL_BSP_SCHEDULE_DELAY="500",
        # the planted environment: what a user's shell or CI holds
        AWS_ACCESS_KEY_ID=canaries.aws_key_id.value,
        AWS_SECRET_ACCESS_KEY=canaries.aws_secret.value,
        GITHUB_TOKEN=canaries.github_token.value,
        SSH_PRIVATE_KEY=canaries.private_key.value,
        SOPHIA_CANARY_MODEL_KEY=canaries.portkey_key.value,
        # the model server stands in for a self-hosted Portkey gateway (it answers any path
        # under /v1 and ignores the x-portkey-* headers), so the Portkey key travels too
        PORTKEY_GATEWAY_URL=upstream.base_url,
        PORTKEY_API_KEY=canaries.portkey_key.value,
    )
    return env


@pytest.fixture
def canaries() -> CanarySet:
    return CanarySet.fresh()


@pytest.fixture
def marker() -> str:
    return f"canarymarker{secrets.token_hex(6)}"


@pytest.fixture
def otlp() -> Iterator[OtlpReceiver]:
    receiver = OtlpReceiver().start()
    yield receiver
    receiver.stop()


@pytest.fixture
def stack(
    tmp_path: Path,
    canaries: CanarySet,
    marker: str,
    upstream: OpenAIUpstream,
    otlp: OtlpReceiver,
    request: pytest.FixtureRequest,
) -> Iterator[Stack]:
    """``sophia up --detach`` with the planted environment; always torn down (down, then
    SIGKILL for whatever the state file still names)."""
    upstream.respond_with(responder(canaries, marker))
    env = _env(tmp_path, canaries, upstream, otlp.url)
    if FULL:
        s3 = request.getfixturevalue("s3_endpoint")
        env.update(
            SOPHIA_S3_BUCKET=f"canary-{secrets.token_hex(4)}",
            SOPHIA_S3_ENDPOINT_URL=s3,
            SOPHIA_S3_REGION="us-east-1",
            SOPHIA_S3_ACCESS_KEY_ID=canaries.aws_key_id.value,
            SOPHIA_S3_SECRET_ACCESS_KEY=canaries.aws_secret.value,
        )
    planted = Stack(Path(env["SOPHIA_HOME"]), env, f"http://{env['SOPHIA_EDGE_BIND']}")
    try:
        planted.sophia("up", "--detach", *[f"--only={name}" for name in AGENTS])
        yield planted
    finally:
        layout = Layout(planted.home)
        state = read_state(layout)
        if state is not None and state.phase != "stopped":
            planted.sophia("down", check=False)
        state = read_state(layout)
        for pid in {state.pid, *(p.pid for p in state.programs)} if state else ():
            if pid and pid_alive(pid):
                os.kill(pid, 9)


# -- planting ---------------------------------------------------------------------------


def _call(stack: Stack, client: httpx.Client, path: str, body: Any) -> httpx.Response:
    """One HTTP API call, its reply kept; waits (bounded) while the edge has not seen the
    service yet (503)."""
    content = body if isinstance(body, bytes) else json.dumps(body).encode()
    deadline = time.monotonic() + 30
    while True:
        reply = client.post(path, content=content, headers={"Content-Type": "application/json"})
        if reply.status_code != 503 or time.monotonic() > deadline:
            break
        time.sleep(0.25)
    kept = json.dumps(dict(reply.headers)).encode() + b"\n" + reply.content
    stack.replies.append((f"HTTP POST {path} -> {reply.status_code}", kept))
    return reply


def plant_over_http(stack: Stack, token: str, repo: Path, canaries: CanarySet, marker: str) -> str:
    """Memory writes, a session, a search, a model call, bad requests and a task; returns
    the task's id once it has ended."""
    text, line = canaries.text(marker), canaries.line(marker)
    auth = {"Authorization": f"Bearer {token}"}
    with httpx.Client(base_url=stack.edge_url, headers=auth, timeout=TASK_WAIT_S + 15) as http:
        ok = [
            (
                "/v1/memory/store",
                {
                    "text": text,
                    "kind": "decision",
                    "metadata": {
                        "note": line,
                        "tags": [canaries.github_token.value, marker],
                        "aws_secret_access_key": canaries.aws_secret.value,
                    },
                },
            ),
            ("/v1/memory/store", {"text": (text + "padding " * 600) * 9, "kind": "doc"}),
            (
                "/v1/memory/session_save",
                {
                    "session_id": f"s-{marker}",
                    "summary": text,
                    "context": {"open_files": ["settings.py"], "notes": line, "key": text},
                },
            ),
            ("/v1/memory/search", {"query": line, "k": 3}),
            (
                "/v1/llm/complete",
                {
                    "messages": [{"role": "user", "content": f"Explain: {line}"}],
                    "task": "chat",
                    "temperature": 0,
                },
            ),
        ]
        for path, body in ok:
            reply = _call(stack, http, path, body)
            assert reply.status_code == 200, (path, reply.text)
        bad = [
            ("/v1/memory/store", {"text": line, "kind": canaries.github_token.value}),
            ("/v1/memory/store", {"text": line, "namespace": canaries.aws_key_id.value}),
            ("/v1/memory/store", {"text": 42, "metadata": {"k": canaries.portkey_key.value}}),
            ("/v1/memory/session_save", {"session_id": canaries.github_token.value}),
            ("/v1/memory/search", {"query": line, "k": canaries.aws_secret.value}),
            ("/v1/tasks/submit", {"goal": line, "repo": f"/nonexistent/{marker}"}),
            ("/v1/tasks/submit", {"goal": line, "repo": str(repo), "pattern": line}),
            ("/v1/memory/store", f'{{"text": "{line}", '.encode()),  # not JSON
        ]
        for path, body in bad:
            reply = _call(stack, http, path, body)
            assert 400 <= reply.status_code < 500, (path, reply.status_code, reply.text)
        pattern = "balanced" if FULL else "fast"
        submit = {"goal": f"tidy total(); {line}", "repo": str(repo), "pattern": pattern}
        reply = _call(stack, http, "/v1/tasks/submit", submit)
        assert reply.status_code == 200, reply.text
        task_id = reply.json()["task_id"]
        wait = _call(stack, http, "/v1/tasks/wait", {"task_id": task_id, "timeout_s": 50})
        assert wait.status_code == 200 and wait.json()["state"] == "done", wait.text
    return task_id


async def plant_over_the_bus(stack: Stack, canaries: CanarySet) -> None:
    """Bad requests straight over NATS (as ``nats req`` sends them); replies kept."""
    line = canaries.line("bus")
    bodies = {
        "memory.store": json.dumps({"text": line, "kind": canaries.aws_key_id.value}),
        "memory.session.save": json.dumps({"session_id": canaries.github_token.value}),
        "tasks.submit": json.dumps({"goal": line, "repo": canaries.portkey_key.value}),
        "llm.complete": json.dumps({"messages": [{"role": canaries.aws_secret.value}]}),
        "memory.search": f'{{"query": "{line}"',
    }
    nc = await nats.connect(stack.env["SOPHIA_NATS_URL"], connect_timeout=5)
    try:
        for endpoint, body in bodies.items():
            reply = await nc.request(f"sophia.{endpoint}", body.encode(), timeout=15)
            headers = reply.headers or {}
            assert headers.get("Nats-Service-Error-Code", "").startswith("4"), (endpoint, reply)
            kept = json.dumps(headers).encode() + b"\n" + reply.data
            stack.replies.append((f"bus sophia.{endpoint}", kept))
    finally:
        await nc.close()


# -- the test ---------------------------------------------------------------------------


@pytest.mark.slow
@pytest.mark.timeout(300 if FULL else 150)
def test_secrets_planted_everywhere_leak_nowhere(
    stack: Stack,
    tmp_path: Path,
    canaries: CanarySet,
    marker: str,
    upstream: OpenAIUpstream,
    otlp: OtlpReceiver,
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.DEBUG)
    # the canaries are shapes redaction is meant to catch
    for planted in (canaries.text(marker), canaries.line(marker)):
        assert leaks(redact(planted)[0], canaries.all) == []
    repo = make_repo(tmp_path / "billing", canaries, marker)

    started = time.monotonic()
    token = stack.sophia("token", "create", "canary", "--scope", "*").stdout.strip()
    stack.sophia("memory", "index", str(repo))
    task_id = plant_over_http(stack, token, repo, canaries, marker)
    anyio.run(plant_over_the_bus, stack, canaries)

    status = stack.sophia("status").stdout
    stack.sophia("status", "--json")
    assert "memory" in status and "tasks" in status
    streams = anyio.run(stream_messages, stack.env["SOPHIA_NATS_URL"])
    pages = metrics_pages(stack.home)
    stack.sophia("down")
    files = home_files(stack.home)
    process_log = caplog.text  # before boto3 reads the bucket: its debug log is not ours
    objects = s3_objects(stack.env) if FULL else []

    # the environment was live: both keys reached the model server as their headers
    sent = [r.headers for r in upstream.requests]
    assert any(h.get("authorization") == f"Bearer {canaries.portkey_key.value}" for h in sent)
    assert any(h.get("x-portkey-api-key") == canaries.portkey_key.value for h in sent)

    findings = Findings((*canaries.all, Canary("edge-bearer-token", token, (token,))))
    for name, output in stack.outputs:
        findings.check("cli output", name, output)
    for name, reply in stack.replies:
        if not name.startswith("HTTP POST /v1/llm/complete -> 200"):  # the model's answer
            findings.check("reply", name, reply)
    for name, message in streams:
        findings.check("stream message", name, message)
    for name, page in pages:
        findings.check("metrics", name, page)
    for name, content in files:
        kind = "log file" if name.startswith("logs/") else "file under SOPHIA_HOME"
        findings.check(kind, name, content)
    for name, content in objects:
        findings.check("s3 object", name, content)
    for i, (path, export) in enumerate(otlp.exports):
        findings.check("otlp export", f"{path} #{i}", export)
    findings.check("test process log", "caplog", process_log)
    assert not findings.held, findings.report()

    # the search could see into every sink that holds user data: the marker is there
    def holds_marker(prefix: str, where: list[tuple[str, Any]]) -> bool:
        word = marker.encode()
        return any(
            word in (c if isinstance(c, bytes) else c.encode())
            for n, c in where
            if n.startswith(prefix)
        )

    assert holds_marker("KV_sophia_tasks #", streams), f"no record of task {task_id}"
    assert any(f"sophia.events.task.{task_id}" in n for n, _ in streams), "no task event"
    assert holds_marker("memory/l3/", files), "the facts tier holds no planted item"
    assert holds_marker("memory/l2/", files), "the vector tier holds no planted item"
    archive = holds_marker("", objects) if FULL else holds_marker("memory/l4/", files)
    assert archive, "the archive tier holds no planted item"
    assert {n.split(" ")[0] for n, _ in pages} >= {"llm", "memory", "tasks", "coder", "edge"}
    assert any(p == "/v1/traces" for p, _ in otlp.exports), "no span was exported"
    logs = {n for n, _ in files if n.startswith("logs/")}
    assert logs >= {f"logs/{a}.log" for a in AGENTS}, logs
    print(
        f"secrets canary ({'full' if FULL else 'default'} run): {len(canaries.all)} canaries "
        f"+ the edge token, {sum(len(c.fragments) for c in canaries.all)} fragments; looked in "
        + ", ".join(f"{n} {kind}" for kind, n in sorted(findings.seen.items()))
        + f"; leaks 0; {time.monotonic() - started:.1f} s after up"
    )
