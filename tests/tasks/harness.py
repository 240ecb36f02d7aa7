"""Tasks end to end: real agents in-process over a real nats-server, a scripted model behind
the real gateway, and small real git repositories.

:class:`ScriptedModel` answers the OpenAI-compatible upstream by what is asked: a request
whose ``response_format`` is named ``plan`` gets the plan, one named ``review`` the next
scripted review, any other the next scripted edit (SEARCH/REPLACE text). Requests arrive
from several agents in no fixed order, so the answers are picked by kind, never by position.
"""

from __future__ import annotations

import json
import subprocess
import threading
from collections import deque
from collections.abc import AsyncIterator, Callable
from contextlib import AsyncExitStack, asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import anyio
import nats.errors
import pytest

from agents.coder import CoderAgent
from agents.llm import LlmAgent
from agents.memory import MemoryAgent
from agents.planner import PlannerAgent
from agents.reviewer import ReviewerAgent
from bus import Bus
from bus.config import Settings
from bus.schemas import tasks as t
from tests.fixtures.nats_server import running
from tests.fixtures.openai_upstream import DEFAULT_MODEL, OpenAIUpstream, Reply

REPORT = '''"""Reports."""


def report(rows):
    """Render rows as text."""
    lines = []
    for row in rows:
        lines.append(f"{row['name']}: {row['value']}")
    return "\\n".join(lines)
'''

TEST_REPORT = """from report import report


def test_report():
    assert report([{"name": "a", "value": 1}]) == "a: 1"
"""

#: the edit a scripted coder makes: a json flag on report()
JSON_EDIT = '''I will add the flag.

report.py
```python
<<<<<<< SEARCH
def report(rows):
    """Render rows as text."""
    lines = []
=======
def report(rows, as_json=False):
    """Render rows as text, or as JSON with ``as_json``."""
    if as_json:
        import json

        return json.dumps(rows)
    lines = []
>>>>>>> REPLACE
```
'''

FIX_EDIT = """report.py
```python
<<<<<<< SEARCH
    if as_json:
        import json

        return json.dumps(rows)
=======
    if as_json:
        import json

        return json.dumps(rows, sort_keys=True)
>>>>>>> REPLACE
```
"""


def git(repo: Path, *args: str) -> str:
    return subprocess.run(
        ["git", "-C", str(repo), *args], check=True, capture_output=True, text=True
    ).stdout


def make_repo(root: Path, files: dict[str, str] | None = None) -> Path:
    """A git repository with ``report.py`` and its test, one commit on ``main``."""
    root.mkdir(parents=True, exist_ok=True)
    for path, text in (files or {"report.py": REPORT, "tests/test_report.py": TEST_REPORT}).items():
        target = root / path
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_text(text)
    subprocess.run(["git", "init", "-q", "-b", "main", str(root)], check=True)
    git(root, "add", "-A")
    git(root, "-c", "user.name=t", "-c", "user.email=t@t", "commit", "-qm", "first")
    return root


def review(verdict: str = "approve", covered: list[str] | None = None, **fields: Any) -> str:
    return json.dumps(
        {"verdict": verdict, "findings": [], "covered": covered or ["report.py"], **fields}
    )


def plan(*steps: dict[str, Any]) -> str:
    return json.dumps({"steps": list(steps)})


def code_step(id: str = "s1", files: list[str] | None = None, **fields: Any) -> dict[str, Any]:
    return {
        "id": id,
        "capability": "code",
        "description": f"edit for {id}",
        "files": files if files is not None else ["report.py"],
        "depends_on": [],
        **fields,
    }


def _schema_name(body: dict[str, Any]) -> str:
    fmt = body.get("response_format")
    if isinstance(fmt, dict) and fmt.get("type") == "json_schema":
        return str(fmt.get("json_schema", {}).get("name", ""))
    return ""


def prompt_text(body: dict[str, Any]) -> str:
    return "\n".join(str(m.get("content", "")) for m in body.get("messages", []))


@dataclass
class ScriptedModel:
    """Answers by kind; each kind's queue gives its next answer, the last one repeats."""

    plans: deque[str] = field(default_factory=lambda: deque([plan(code_step())]))
    edits: deque[str | Callable[[dict[str, Any]], str]] = field(
        default_factory=lambda: deque([JSON_EDIT])
    )
    reviews: deque[str | Callable[[dict[str, Any]], str]] = field(
        default_factory=lambda: deque([review()])
    )
    delay_s: float = 0.0
    #: how long a code answer waits, when it differs from ``delay_s``
    code_delay_s: float | None = None
    seen: list[tuple[str, dict[str, Any]]] = field(default_factory=list)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def _take(self, queue: deque[Any], body: dict[str, Any]) -> str:
        with self._lock:
            answer = queue.popleft() if len(queue) > 1 else queue[0]
        return answer(body) if callable(answer) else answer

    def __call__(self, body: dict[str, Any]) -> Reply:
        kind = _schema_name(body) or "code"
        with self._lock:
            self.seen.append((kind, body))
        queue = {"plan": self.plans, "review": self.reviews}.get(kind, self.edits)
        delay = self.delay_s
        if kind == "code" and self.code_delay_s is not None:
            delay = self.code_delay_s
        return Reply(text=self._take(queue, body), delay_s=delay)

    def asked(self, kind: str) -> list[dict[str, Any]]:
        with self._lock:
            return [body for k, body in self.seen if k == kind]


def model_env(monkeypatch: pytest.MonkeyPatch, upstream: OpenAIUpstream, home: Path) -> None:
    """The quickest model set-up: one OpenAI-compatible server, JSON schema capable."""
    for name in ("PORTKEY_API_KEY", "PORTKEY_GATEWAY_URL"):
        monkeypatch.delenv(name, raising=False)
    toml = home / "sophia.toml"
    toml.parent.mkdir(parents=True, exist_ok=True)
    toml.write_text(
        "[llm]\nattempt_timeout_s = 10.0\ndeadline_s = 30.0\nmax_retries = 1\n"
        "backoff_base_s = 0.01\nbackoff_max_s = 0.05\n"
        "[[llm.models]]\n"
        f'name = "{DEFAULT_MODEL}"\nbase_url = "{upstream.base_url}"\n'
        'capabilities = ["json_schema"]\ncontext_window = 128000\n'
        "input_usd_per_mtok = 1.0\noutput_usd_per_mtok = 2.0\n"
    )
    monkeypatch.setenv("SOPHIA_CONFIG", str(toml))
    monkeypatch.delenv("SOPHIA_LLM_BASE_URL", raising=False)
    monkeypatch.delenv("SOPHIA_LLM_MODEL", raising=False)


@asynccontextmanager
async def task_stack(
    settings: Settings,
    monkeypatch: pytest.MonkeyPatch,
    upstream: OpenAIUpstream,
    model: ScriptedModel,
    *,
    planner: bool = True,
    coders: int = 1,
    reviewers: int = 1,
    env: dict[str, str] | None = None,
    run_tests: bool = False,
) -> AsyncIterator[dict[str, Any]]:
    """The llm, memory, tasks, coder and reviewer agents serving in-process; without
    ``planner`` (or with ``coders=0``) that agent runs elsewhere (a test's subprocess, say).

    The reviewer runs ruff and bandit; it runs the repository's tests only with ``run_tests``
    (seconds a round: the tests about them ask for it, the rest are about the flow)."""
    model_env(monkeypatch, upstream, settings.home_path)
    monkeypatch.setenv("SOPHIA_TASKS_RUN_TESTS", "true" if run_tests else "false")
    for name, value in (env or {}).items():
        monkeypatch.setenv(name, value)
    upstream.respond_with(model)
    async with AsyncExitStack() as stack:
        agents: dict[str, Any] = {}
        agents["llm"] = await stack.enter_async_context(running(LlmAgent(settings)))
        agents["memory"] = await stack.enter_async_context(running(MemoryAgent(settings)))
        if planner:
            agents["tasks"] = await stack.enter_async_context(running(PlannerAgent(settings)))
        agents["coders"] = [
            await stack.enter_async_context(running(CoderAgent(settings))) for _ in range(coders)
        ]
        agents["reviewers"] = [
            await stack.enter_async_context(running(ReviewerAgent(settings)))
            for _ in range(reviewers)
        ]
        yield agents


async def submit(
    bus: Bus, repo: Path, goal: str = "add a --json flag to report", **fields: Any
) -> str:
    req = t.SubmitRequest(goal=goal, repo=str(repo), **fields)
    return (await bus.request("tasks", "submit", req, t.SubmitResult)).task_id


async def wait_done(bus: Bus, task_id: str, timeout: float = 60.0) -> t.TaskRecord:
    req = t.WaitRequest(task_id=task_id, timeout_s=timeout)
    record = await bus.request("tasks", "wait", req, t.TaskRecord, timeout=timeout + 5)
    if record.state not in t.TERMINAL:
        raise AssertionError(f"task {task_id} still {record.state} after {timeout} s")
    return record


async def events_of(bus: Bus, task_id: str, timeout: float = 5.0) -> list[t.TaskEvent]:
    """Every event of the task so far, from the events stream, in order."""
    import msgspec

    subject = bus.subjects.event("task", task_id)
    sub = await bus.js.subscribe(subject, ordered_consumer=True)
    found: list[t.TaskEvent] = []
    try:
        with anyio.move_on_after(timeout):
            while True:
                msg = await sub.next_msg(timeout=1.0)
                found.append(msgspec.json.decode(msg.data, type=t.TaskEvent))
    except nats.errors.TimeoutError:  # no more events
        pass
    finally:
        await sub.unsubscribe()
    return found
