"""The whole stack for the fuzz tests, serving in a background thread's event loop.

Hypothesis and schemathesis drive their examples from plain (sync) test functions, so the
agents and the edge cannot share the test's event loop: they run in an anyio blocking
portal, and the tests reach them the way any client does — NATS on loopback, HTTP to the
edge, MCP over streamable HTTP. Bus requests are made from the portal's loop too
(:meth:`Stack.call`), on a connection of their own.

Agents: memory, llm (the model is :mod:`tests.fixtures.openai_upstream`, answering plans,
edits and reviews like :class:`tests.tasks.harness.ScriptedModel`), tasks (planner), coder,
reviewer, infra (an empty program directory but for ``scratch``; no ``pulumi`` CLI on this
machine, so its operations answer 503 once the input has passed; no Lambda key, so the GPU
endpoints answer 503 too) and the edge.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Awaitable, Callable, Iterator
from contextlib import AsyncExitStack, contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import anyio
import httpx
import nats
from anyio.abc import TaskStatus
from anyio.from_thread import BlockingPortal, start_blocking_portal
from nats.aio.client import Client

from agents.coder import CoderAgent
from agents.infra import InfraAgent
from agents.llm import LlmAgent
from agents.memory import MemoryAgent
from agents.planner import PlannerAgent
from agents.reviewer import ReviewerAgent
from bus import Settings
from bus.subjects import Subjects
from bus.topology import ensure_streams
from edge.config import EdgeSettings
from edge.serve import serve_http
from edge.tokens import create_token
from infra.config import InfraSettings
from ops.natsserver import free_port
from tests.fixtures.nats_server import running
from tests.fixtures.openai_upstream import OpenAIUpstream
from tests.tasks.harness import ScriptedModel, make_repo, model_env

T = TypeVar("T")

#: every service of the stack and how many instances of it answer ``$SRV.PING``
SERVICES = {
    "memory": 1,
    "llm": 1,
    "tasks": 1,
    "coder": 1,
    "reviewer": 1,
    "infra": 1,
    "edge": 1,
}
#: an edge call waits this long for its agent; a fuzz input never should
EDGE_CALL_TIMEOUT_S = 30.0
#: variables the stack must not inherit (a real model, a real GPU cloud)
UNSET = ("LAMBDA_API_KEY", "PORTKEY_API_KEY", "PORTKEY_GATEWAY_URL", "SOPHIA_LLM_BASE_URL")


@dataclass
class Stack:
    """What a fuzz test needs of the running stack."""

    settings: Settings
    edge_url: str
    token: str
    repo: Path  # a small git repository: tasks.submit's and memory.index's one real target
    plain_dir: Path  # a directory that is no git repository
    portal: BlockingPortal
    nc: Client  # the tests' own bus connection, on the portal's loop

    @property
    def subjects(self) -> Subjects:
        return Subjects(self.settings.prefix)

    def call(self, fn: Callable[..., Awaitable[T]], *args: Any) -> T:
        """Run ``fn(*args)`` on the stack's event loop and return its result."""
        return self.portal.call(fn, *args)


def edge_settings() -> EdgeSettings:
    """Discovery as configured by default (a shorter poll drops a loaded agent's tools after
    three slow INFO replies), no rate limit worth the name (the fuzz is not about 429s), and a
    call timeout well past what any input needs."""
    return EdgeSettings(
        edge_rate_per_s=1_000_000.0,
        edge_rate_burst=1_000_000,
        edge_call_timeout_s=EDGE_CALL_TIMEOUT_S,
        edge_keepalive_s=5.0,
    )


async def _serve(
    settings: Settings,
    root: Path,
    stop: anyio.Event,
    *,
    task_status: TaskStatus[tuple[str, str, Client]],
) -> None:
    stacks_dir = root / "stacks"
    (stacks_dir / "scratch").mkdir(parents=True)
    (stacks_dir / "scratch" / "Pulumi.yaml").write_text("name: scratch\nruntime: python\n")
    infra = InfraSettings(infra_stacks_dir=str(stacks_dir), infra_lock_ttl_s=30)
    nc = await nats.connect(settings.nats_url, max_reconnect_attempts=-1)
    await ensure_streams(nc.jetstream(), settings)
    async with AsyncExitStack() as agents:
        for agent in (
            LlmAgent(settings),
            MemoryAgent(settings),
            PlannerAgent(settings),
            CoderAgent(settings),
            ReviewerAgent(settings),
            InfraAgent(settings, infra),
        ):
            await agents.enter_async_context(running(agent))
        async with anyio.create_task_group() as tg:
            port = free_port()
            await tg.start(
                lambda task_status: serve_http(
                    settings, edge_settings(), port=port, task_status=task_status
                )
            )
            kv = await nc.jetstream().key_value(Subjects(settings.prefix).config_bucket)
            token = await create_token(kv, "fuzzer", ["*"], None)
            url = f"http://127.0.0.1:{port}"
            await _edge_lists_everything(url, token)
            task_status.started((url, token, nc))
            await stop.wait()
            tg.cancel_scope.cancel()
    await nc.drain()


async def _edge_lists_everything(url: str, token: str, limit_s: float = 60.0) -> None:
    """Wait until the edge's /openapi.json has every public endpoint of every agent."""
    from tests.fuzz.targets import declared

    wanted = {f"/v1/{d.service}/{d.name}" for d in declared(public_only=True)}
    headers = {"Authorization": f"Bearer {token}"}
    async with httpx.AsyncClient(base_url=url, headers=headers, timeout=10) as client:
        with anyio.fail_after(limit_s):
            while True:
                response = await client.get("/openapi.json")
                if response.status_code == 200 and wanted <= set(response.json()["paths"]):
                    return
                await anyio.sleep(0.2)


@contextmanager
def environment(home: Path, upstream: OpenAIUpstream) -> Iterator[None]:
    """The variables the agents read at start-up: the scripted model, nothing real."""
    import pytest

    with pytest.MonkeyPatch.context() as patch:
        for name in UNSET:
            patch.delenv(name, raising=False)
        model_env(patch, upstream, home)
        yield


@contextmanager
def stack_running(nats_url: str, root: Path, upstream: OpenAIUpstream) -> Iterator[Stack]:
    """The stack serving for the block (its own prefix under ``root``), then stopped."""
    settings = Settings(
        home=str(root / "home"),
        nats_url=nats_url,
        prefix=f"fuzz{os.getpid()}",
        drain_grace_s=5.0,
        request_timeout_s=10.0,
        reconnect_max_s=0.25,
        work_ack_wait_s=10.0,
    )
    repo = make_repo(root / "repo")
    plain = root / "plain"
    plain.mkdir()
    (plain / "notes.txt").write_text("not a repository\n")
    upstream.respond_with(ScriptedModel())
    with environment(settings.home_path, upstream), start_blocking_portal() as portal:
        stop = portal.call(anyio.Event)
        future, (url, token, nc) = portal.start_task(_serve, settings, root, stop)
        try:
            yield Stack(settings, url, token, repo, plain, portal, nc)
        finally:
            portal.call(stop.set)
            future.result(timeout=60)
    shutil.rmtree(root, ignore_errors=True)
