"""The soak's stack: one process per agent and the edge over a real nats-server, a scripted
OpenAI-compatible model, a small git repository for the coding tasks.

Every agent runs as ``python -m bus.runner <module>`` (what ``sophia up`` runs), the edge as
``python -m edge``, each with its stderr in ``<out>/logs/<name>.log``. The model is
:class:`tests.fixtures.openai_upstream.OpenAIUpstream` on a thread of the soak's own process,
answering like :class:`tests.tasks.harness.ScriptedModel` (the plan, the SEARCH/REPLACE edit,
the review, by ``response_format``) but keeping no record of what it was asked, so a long run
does not grow it.
"""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import anyio
import httpx
import nats

from bench.tasks import write_model_config
from bus.client import Bus
from bus.config import Settings
from bus.schemas.common import Empty, Health
from bus.topology import ensure_streams
from edge.tokens import create_token
from ops.natsserver import NatsServer, free_port
from tests.fixtures.openai_upstream import OpenAIUpstream, Reply, serving
from tests.tasks.harness import JSON_EDIT, code_step, make_repo, plan, review

ROOT = Path(__file__).resolve().parents[1]
#: process name -> module run by bus.runner; the service each answers ``health`` as
AGENTS: dict[str, tuple[str, str]] = {
    "llm": ("agents.llm", "llm"),
    "memory": ("agents.memory", "memory"),
    "planner": ("agents.planner", "tasks"),
    "coder": ("agents.coder", "coder"),
    "reviewer": ("agents.reviewer", "reviewer"),
    "soak_worker": ("bench.soak_worker", "soak"),
}
READY_TIMEOUT_S = 180.0
STOP_TIMEOUT_S = 30.0


def scripted_answer(body: dict[str, Any]) -> Reply:
    """The plan, the edit or the review, by the request's ``response_format`` name."""
    fmt = body.get("response_format")
    name = ""
    if isinstance(fmt, dict) and fmt.get("type") == "json_schema":
        name = str(fmt.get("json_schema", {}).get("name", ""))
    text = {"plan": plan(code_step()), "review": review()}.get(name, JSON_EDIT)
    return Reply(text=text)


@dataclass
class Stack:
    """What the load and the sampler need of the running stack."""

    bus: Bus
    repo: Path
    edge_url: str
    token: str
    pids: dict[str, int] = field(default_factory=dict)
    procs: dict[str, subprocess.Popen[bytes]] = field(default_factory=dict)

    def exited(self) -> dict[str, int]:
        """Processes that have exited, with their exit status."""
        return {
            name: code for name, proc in self.procs.items() if (code := proc.poll()) is not None
        }


def process_env(settings: Settings, config: Path, edge_port: int) -> dict[str, str]:
    env = {
        k: v
        for k, v in os.environ.items()
        if k not in ("PORTKEY_API_KEY", "PORTKEY_GATEWAY_URL", "SOPHIA_LLM_BASE_URL")
        and k != "SOPHIA_LLM_MODEL"
    }
    return env | {
        "SOPHIA_NATS_URL": settings.nats_url,
        "SOPHIA_PREFIX": settings.prefix,
        "SOPHIA_HOME": settings.home,
        "SOPHIA_CONFIG": str(config),
        "SOPHIA_LOG_LEVEL": "warning",
        "SOPHIA_EDGE_BIND": f"127.0.0.1:{edge_port}",
        "SOPHIA_EDGE_RATE_PER_S": "100000",
        "SOPHIA_EDGE_RATE_BURST": "100000",
        # the reviewer runs ruff, bandit (and semgrep where installed) but not a pytest per
        # task, as bench/tasks.py's throughput part: a pytest start-up would dominate 2 cores
        "SOPHIA_TASKS_RUN_TESTS": "false",
        "PYTHONPATH": str(ROOT),
    }


def spawn(name: str, argv: list[str], env: dict[str, str], logs: Path) -> subprocess.Popen[bytes]:
    with (logs / f"{name}.log").open("ab") as log:
        return subprocess.Popen([sys.executable, *argv], env=env, cwd=ROOT, stderr=log)


def stop_all(procs: dict[str, subprocess.Popen[bytes]]) -> None:
    for proc in procs.values():
        if proc.poll() is None:
            proc.terminate()
    for proc in procs.values():
        try:
            proc.wait(timeout=STOP_TIMEOUT_S)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=5)


async def wait_ready(bus: Bus, stack: Stack) -> None:
    """Until every agent answers ``health`` and the edge's ``/readyz`` says 200."""
    with anyio.fail_after(READY_TIMEOUT_S):
        for _, service in AGENTS.values():
            while True:
                if stack.exited():
                    raise RuntimeError(f"exited during start-up: {stack.exited()}")
                try:
                    await bus.request(service, "health", Empty(), Health, timeout=5.0)
                    break
                except Exception:  # not serving yet: any failure means "ask again"
                    await anyio.sleep(0.5)
        async with httpx.AsyncClient(timeout=5.0) as client:
            while True:
                try:
                    if (await client.get(f"{stack.edge_url}/readyz")).status_code == 200:
                        return
                except httpx.HTTPError:
                    pass
                await anyio.sleep(0.5)


@asynccontextmanager
async def running_stack(out: Path) -> AsyncIterator[Stack]:
    """The whole stack up and ready; stopped (SIGTERM, then drained) after the block."""
    base = Path(tempfile.mkdtemp(prefix="sophia-soak-"))
    logs = out / "logs"
    logs.mkdir(parents=True, exist_ok=True)
    server = NatsServer(store_dir=base / "nats")
    server.start()
    settings = Settings(
        home=str(base / "home"), nats_url=server.url, prefix=f"sk{uuid.uuid4().hex[:8]}"
    )
    procs: dict[str, subprocess.Popen[bytes]] = {}
    try:
        with serving(record=False) as upstream:
            upstream.respond_with(scripted_answer)
            async with connected_stack(settings, upstream, base, logs, procs) as stack:
                if server.process is not None:
                    stack.pids["nats_server"] = server.process.pid
                yield stack
    finally:
        with anyio.CancelScope(shield=True):  # a SIGTERM'd run still stops what it started
            await anyio.to_thread.run_sync(stop_all, procs)
        server.stop()


@asynccontextmanager
async def connected_stack(
    settings: Settings,
    upstream: OpenAIUpstream,
    base: Path,
    logs: Path,
    procs: dict[str, subprocess.Popen[bytes]],
) -> AsyncIterator[Stack]:
    config = write_model_config(settings.home_path, upstream)
    edge_port = free_port()
    env = process_env(settings, config, edge_port)
    nc = await nats.connect(settings.nats_url, name="bench-soak", max_reconnect_attempts=-1)
    bus = Bus(nc, settings)
    try:
        await ensure_streams(bus.js, settings)
        kv = await bus.js.key_value(bus.subjects.config_bucket)
        token = await create_token(kv, "soak", ["*"])
        for name, (module, _) in AGENTS.items():
            procs[name] = spawn(name, ["-m", "bus.runner", module], env, logs)
        procs["edge"] = spawn("edge", ["-m", "edge"], env, logs)
        repo = make_repo(base / "repo")
        stack = Stack(bus, repo, f"http://127.0.0.1:{edge_port}", token, procs=procs)
        stack.pids.update({name: proc.pid for name, proc in procs.items()})
        await wait_ready(bus, stack)
        yield stack
    finally:
        with anyio.CancelScope(shield=True):
            await anyio.to_thread.run_sync(stop_all, procs)
            await nc.close()
