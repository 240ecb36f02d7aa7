"""Tasks benchmark: what the task machinery adds around its model calls, and how close a pool of
coders and reviewers comes to the model-bound ideal.

Everything runs in this one process, end to end, as ``tests/tasks/test_flow.py`` does: a real
nats-server (JetStream), the scripted OpenAI-compatible upstream
(tests/fixtures/openai_upstream.py, on a thread of its own) answering by kind
(:class:`tests.tasks.harness.ScriptedModel`: the plan, the SEARCH/REPLACE edit, the review),
and the real agents in-process: the llm gateway, memory, the planner (service ``tasks``),
coders and reviewers, over a small real git repository (``make_repo``: ``report.py`` and its
test). Each part has a home, a bus prefix and a repository of its own; within a part every
task works on that one repository (the user's repository is shared, as in real use; each task
has its own branch and worktrees). Every goal is unique (``... (task N)``), so no call is
answered from the gateway's exact cache: every model call reaches the upstream (checked:
``upstream_calls``). The model entry allows 64 concurrent calls (its default is 16), so the
upstream serves the calls of every task at once. One "replica" of a coder or a reviewer is
one agent with ``work_max_inflight = 1`` (the default, 64, would let one agent take 64 steps
at once): one step at a time, like one worker. The planner runs as one agent with the default
``work_max_inflight`` (64), so it advances every task at once and is never the bottleneck.

Part 1, overhead (``overhead_ms_*``): an instant model (``delay_s = 0``), 1 coder + 1 reviewer,
one untimed warm-up task (imports, the embedder's first use, the first index of the
repository), then ``--tasks`` (20) ``balanced`` tasks one after another (plan call, code call,
review call, the reviewer's tools and the repository's own tests). For each task the client
measures ``wall`` from ``submit`` until ``wait`` returns ``done``; ``overhead = wall -
timings["model_s"] - timings["tools_s"]``, where ``model_s`` is the time the task's callers
spent inside ``sophia.llm.complete`` requests (with an instant model: the gateway's own time)
and ``tools_s`` the reviewer's tools (ruff, bandit, semgrep where installed, the tests). What
is left is the planner, the coder and the reviewer themselves: KV record writes, work items,
memory indexing and searches, git worktrees and commits, the coder's own ruff checks, the
repository map, the outcome stored in memory. A task that does not end ``done`` counts in
``failed`` and not in the percentiles.

Part 2, throughput (``throughput_ratio``): every model call takes 500 ms (``delay_s = 0.5``),
4 coder + 2 reviewer replicas and 1 planner, ``--burst`` (50) balanced tasks submitted at
once; ``makespan_s`` runs from the first submit until the last ``wait`` returns. Only model
time counts in the ideal. With ``d`` the delay of one call and ``P``, ``C``, ``R`` the plan,
code and review calls the upstream served (150 when each task makes one of each)::

    plan_bound   = ceil(P / 64) * d + d + d        (one planner, 64 tasks at once)
    code_bound   = d + C * d / 4 + d               (first plan, code on 4 coders, last review)
    review_bound = d + d + R * d / 2               (first plan and code, reviews on 2 reviewers)
    ideal_s      = max(plan_bound, code_bound, review_bound)
    throughput_ratio = ideal_s / makespan_s        (1.0 = ideal)

i.e. the flow-shop lower bound: a stage cannot start before the first task has passed the
stages ahead of it and its last item still has the stages behind it to pass; 50 tasks give
``ideal_s = 0.5 + 0.5 + 25 / 2 = 13.5`` s (the reviewers are the bottleneck). Everything else
the replicas do (their tools, git, the records) is overhead and lowers the ratio. This part
sets ``SOPHIA_TASKS_RUN_TESTS=false`` (the reviewer still runs ruff, bandit and semgrep, but
not the repository's tests: a pytest start-up per review on this 2-core machine would measure
pytest). It runs twice, ``throughput_ratio`` with the default memory context
(``SOPHIA_TASKS_CONTEXT_ITEMS`` = 6: the repository indexed and searched before each plan)
and ``throughput_no_context`` with ``SOPHIA_TASKS_CONTEXT_ITEMS=0``. Note that every agent
shares one Python process and event loop, so replicas add concurrency, not CPU: only the
subprocesses (git, ruff, bandit) run in parallel.

Part 3, ``edits``: :func:`bench.edits.measure` on the edits evaluation set.

Prints one JSON object with ``targets`` and ``met``. ``--quick`` runs 5 and 12 tasks.

    python bench/tasks.py [--quick] [--tasks 20] [--burst 50] [--part all|overhead|throughput]
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import os
import sys
import tempfile
import time
import uuid
from collections.abc import AsyncIterator, Iterator
from contextlib import AsyncExitStack, asynccontextmanager, contextmanager
from pathlib import Path
from typing import Any

import anyio
import msgspec
import nats

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from agents.coder import CoderAgent  # noqa: E402
from agents.llm import LlmAgent  # noqa: E402
from agents.memory import MemoryAgent  # noqa: E402
from agents.planner import PlannerAgent  # noqa: E402
from agents.reviewer import ReviewerAgent  # noqa: E402
from bench.edits import measure as measure_edits  # noqa: E402
from bus.client import Bus  # noqa: E402
from bus.config import Settings  # noqa: E402
from bus.schemas import tasks as t  # noqa: E402
from bus.topology import ensure_streams  # noqa: E402
from ops.natsserver import NatsServer  # noqa: E402
from tests.fixtures.nats_server import running  # noqa: E402
from tests.fixtures.openai_upstream import DEFAULT_MODEL, OpenAIUpstream, serving  # noqa: E402
from tests.tasks.harness import ScriptedModel, make_repo, submit  # noqa: E402

GOAL = "add a --json flag to report"
#: concurrent calls the gateway allows the scripted model (its default is 16)
MODEL_CONCURRENCY = 64
#: the planner's own work_max_inflight (the Settings default)
PLANNER_INFLIGHT = 64
CODERS, REVIEWERS, PLANNERS = 4, 2, 1
CALL_DELAY_S = 0.5
TARGETS: dict[str, float] = {
    "overhead_ms_p50": 150,
    "throughput_ratio": 0.8,
    "edits_wrongly_applied": 0,
}


def percentile(samples: list[float], q: float) -> float:
    ordered = sorted(samples)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def ms(seconds: float) -> float:
    return round(seconds * 1000, 1)


@contextmanager
def environment(values: dict[str, str | None]) -> Iterator[None]:
    """``os.environ`` with ``values`` set (None: unset) for the block, restored after it."""
    saved = {name: os.environ.get(name) for name in values}
    try:
        for name, value in values.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value
        yield
    finally:
        for name, value in saved.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value


def write_model_config(home: Path, upstream: OpenAIUpstream) -> Path:
    """One OpenAI-compatible model, JSON schema capable (as the tests' ``model_env``)."""
    toml = home / "sophia.toml"
    toml.parent.mkdir(parents=True, exist_ok=True)
    toml.write_text(
        "[llm]\nattempt_timeout_s = 30.0\ndeadline_s = 60.0\nmax_retries = 1\n"
        "backoff_base_s = 0.01\nbackoff_max_s = 0.05\n"
        "[[llm.models]]\n"
        f'name = "{DEFAULT_MODEL}"\nbase_url = "{upstream.base_url}"\n'
        'capabilities = ["json_schema"]\ncontext_window = 128000\n'
        f"concurrency = {MODEL_CONCURRENCY}\n"
        "input_usd_per_mtok = 1.0\noutput_usd_per_mtok = 2.0\n"
    )
    return toml


@asynccontextmanager
async def task_stack(
    server: NatsServer,
    upstream: OpenAIUpstream,
    model: ScriptedModel,
    *,
    coders: int,
    reviewers: int,
    env: dict[str, str] | None = None,
) -> AsyncIterator[Bus]:
    """The llm, memory, planner, coder and reviewer agents in-process on a fresh home and
    prefix; yields a client bus on that prefix."""
    home = Path(tempfile.mkdtemp(prefix="sophia-bench-tasks-"))
    settings = Settings(
        home=str(home / "home"),
        nats_url=server.url,
        prefix=f"b{uuid.uuid4().hex[:10]}",
        drain_grace_s=5.0,
    )
    worker = msgspec.structs.replace(settings, work_max_inflight=1)  # one replica: one step
    config = write_model_config(settings.home_path, upstream)
    values: dict[str, str | None] = {
        "SOPHIA_CONFIG": str(config),
        "PORTKEY_API_KEY": None,
        "PORTKEY_GATEWAY_URL": None,
        "SOPHIA_LLM_BASE_URL": None,
        "SOPHIA_LLM_MODEL": None,
        **(env or {}),
    }
    upstream.respond_with(model)
    with environment(values):
        nc = await nats.connect(server.url)
        bus = Bus(nc, settings)
        await ensure_streams(bus.js, settings)
        try:
            async with AsyncExitStack() as stack:
                await stack.enter_async_context(running(LlmAgent(settings)))
                await stack.enter_async_context(running(MemoryAgent(settings)))
                for _ in range(PLANNERS):
                    await stack.enter_async_context(running(PlannerAgent(settings)))
                for _ in range(coders):
                    await stack.enter_async_context(running(CoderAgent(worker)))
                for _ in range(reviewers):
                    await stack.enter_async_context(running(ReviewerAgent(worker)))
                yield bus
        finally:
            await nc.drain()
            upstream.respond_with(None)


async def wait_record(bus: Bus, task_id: str, timeout: float) -> t.TaskRecord:
    req = t.WaitRequest(task_id=task_id, timeout_s=timeout)
    return await bus.request("tasks", "wait", req, t.TaskRecord, timeout=timeout + 5)


def failure_of(record: t.TaskRecord) -> str:
    return f"{record.state}: {record.reason} {record.error[:200]}".strip()


async def one_task(bus: Bus, repo: Path, n: int, timeout: float = 120.0) -> dict[str, Any]:
    """Submit task ``n``, wait for it; the client's wall time and the record's timings."""
    started = time.perf_counter()
    task_id = await submit(bus, repo, goal=f"{GOAL} (task {n})")
    record = await wait_record(bus, task_id, timeout)
    wall = time.perf_counter() - started
    return {"wall": wall, "record": record, "done_at": time.perf_counter()}


async def overhead(server: NatsServer, upstream: OpenAIUpstream, tasks: int) -> dict[str, Any]:
    """Part 1: ``tasks`` balanced tasks in a row on an instant model, 1 coder, 1 reviewer."""
    model = ScriptedModel(delay_s=0.0)
    repo = make_repo(Path(tempfile.mkdtemp(prefix="sophia-bench-repo-")) / "report-repo")
    rows: list[dict[str, float]] = []
    failures: list[str] = []
    async with task_stack(server, upstream, model, coders=1, reviewers=1) as bus:
        warm = await one_task(bus, repo, 0)
        if warm["record"].state != "done":
            failures.append("warm-up " + failure_of(warm["record"]))
        for n in range(1, tasks + 1):
            got = await one_task(bus, repo, n)
            record: t.TaskRecord = got["record"]
            if record.state != "done":
                failures.append(failure_of(record))
                continue
            timings = record.timings
            model_s, tools_s = timings.get("model_s", 0.0), timings.get("tools_s", 0.0)
            rows.append(
                {
                    "wall": got["wall"],
                    "model": model_s,
                    "tools": tools_s,
                    "overhead": got["wall"] - model_s - tools_s,
                    "plan": timings.get("plan_s", 0.0),
                    "code": timings.get("code_s", 0.0),
                    "review": timings.get("review_s", 0.0),
                    "record_total": timings.get("total_s", 0.0),
                }
            )
    out: dict[str, Any] = {"tasks": tasks, "failed": len(failures)}
    if rows:
        col = {k: [r[k] for r in rows] for k in rows[0]}
        out |= {
            "overhead_ms_p50": ms(percentile(col["overhead"], 0.5)),
            "overhead_ms_p95": ms(percentile(col["overhead"], 0.95)),
            "wall_ms_p50": ms(percentile(col["wall"], 0.5)),
            "model_ms_p50": ms(percentile(col["model"], 0.5)),
            "tools_ms_p50": ms(percentile(col["tools"], 0.5)),
            "plan_ms_p50": ms(percentile(col["plan"], 0.5)),
            "code_ms_p50": ms(percentile(col["code"], 0.5)),
            "review_ms_p50": ms(percentile(col["review"], 0.5)),
            "record_total_ms_p50": ms(percentile(col["record_total"], 0.5)),
        }
    if failures:
        out["failures"] = failures[:5]
    out["upstream_calls"] = {k: len(model.asked(k)) for k in ("plan", "code", "review")}
    return out


def ideal_seconds(calls: dict[str, int], delay: float) -> dict[str, float]:
    """The flow-shop lower bound of the module docstring."""
    plan_bound = math.ceil(calls["plan"] / (PLANNERS * PLANNER_INFLIGHT)) * delay + 2 * delay
    code_bound = delay + calls["code"] * delay / CODERS + delay
    review_bound = 2 * delay + calls["review"] * delay / REVIEWERS
    return {
        "plan_bound_s": round(plan_bound, 3),
        "code_bound_s": round(code_bound, 3),
        "review_bound_s": round(review_bound, 3),
        "ideal_s": round(max(plan_bound, code_bound, review_bound), 3),
    }


async def throughput(
    server: NatsServer, upstream: OpenAIUpstream, burst: int, context_items: int | None
) -> dict[str, Any]:
    """Part 2: ``burst`` balanced tasks at once, 500 ms per model call, 4 coders, 2 reviewers."""
    model = ScriptedModel(delay_s=CALL_DELAY_S)
    repo = make_repo(Path(tempfile.mkdtemp(prefix="sophia-bench-repo-")) / "report-repo")
    env = {"SOPHIA_TASKS_RUN_TESTS": "false"}
    if context_items is not None:
        env["SOPHIA_TASKS_CONTEXT_ITEMS"] = str(context_items)
    results: list[dict[str, Any]] = []
    async with task_stack(
        server, upstream, model, coders=CODERS, reviewers=REVIEWERS, env=env
    ) as bus:
        # warm the stack (imports, the embedder, the first index) outside the clock
        warm = await one_task(bus, repo, 0)
        warm_state = warm["record"].state
        with model._lock:  # the calls of the warm-up do not count
            model.seen.clear()
        started = time.perf_counter()

        async def task(n: int) -> None:
            results.append(await one_task(bus, repo, n, timeout=600.0))

        async with anyio.create_task_group() as tg:
            for n in range(1, burst + 1):
                tg.start_soon(task, n)
    done = [r for r in results if r["record"].state == "done"]
    makespan = max(r["done_at"] for r in results) - started
    calls = {k: len(model.asked(k)) for k in ("plan", "code", "review")}
    ideal = ideal_seconds(calls, CALL_DELAY_S)
    out: dict[str, Any] = {
        "throughput_ratio": round(ideal["ideal_s"] / makespan, 3),
        "tasks_done": len(done),
        "tasks_total": burst,
        "makespan_s": round(makespan, 3),
        **ideal,
        "upstream_calls": calls,
        "task_wall_s_p50": round(percentile([r["wall"] for r in results], 0.5), 3),
        "warm_up": warm_state,
    }
    failed = [failure_of(r["record"]) for r in results if r["record"].state != "done"]
    if failed:
        out["failures"] = failed[:5]
    return out


async def run(args: argparse.Namespace) -> dict[str, Any]:
    store = Path(tempfile.mkdtemp(prefix="sophia-bench-nats-"))
    server = NatsServer(store_dir=store)
    server.start()
    out: dict[str, Any] = {}
    try:
        with serving(record=False) as upstream:
            if args.part in ("all", "overhead"):
                part = await overhead(server, upstream, args.tasks)
                out |= {k: part.pop(k) for k in list(part) if k.startswith("overhead_ms")}
                out["failed"] = part.pop("failed")
                out |= {k: part.pop(k) for k in ("wall_ms_p50", "model_ms_p50", "tools_ms_p50")}
                out["overhead"] = part
            if args.part in ("all", "throughput"):
                part = await throughput(server, upstream, args.burst, None)
                for key in ("throughput_ratio", "tasks_done", "tasks_total"):
                    out[key] = part.pop(key)
                out["makespan_s"], out["ideal_s"] = part.pop("makespan_s"), part.pop("ideal_s")
                out["throughput"] = part
                if not args.no_context_run:
                    out["throughput_no_context"] = await throughput(server, upstream, args.burst, 0)
    finally:
        server.stop()
    if args.part == "all":
        out["edits"] = measure_edits()
    return out


def with_targets(out: dict[str, Any]) -> dict[str, Any]:
    out["targets"] = TARGETS
    met: dict[str, bool] = {}
    if "overhead_ms_p50" in out:
        met["overhead_ms_p50"] = out["overhead_ms_p50"] <= TARGETS["overhead_ms_p50"]
    if "throughput_ratio" in out:
        met["throughput_ratio"] = out["throughput_ratio"] >= TARGETS["throughput_ratio"]
    if "edits" in out:
        wrong = out["edits"]["edits_wrongly_applied"]
        met["edits_wrongly_applied"] = wrong <= TARGETS["edits_wrongly_applied"]
    out["met"] = met
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="5 and 12 tasks (a smoke run)")
    parser.add_argument("--tasks", type=int, default=20, help="tasks in a row (overhead)")
    parser.add_argument("--burst", type=int, default=50, help="tasks at once (throughput)")
    parser.add_argument("--part", choices=("all", "overhead", "throughput"), default="all")
    parser.add_argument(
        "--no-context-run",
        action="store_true",
        help="skip the second throughput run with SOPHIA_TASKS_CONTEXT_ITEMS=0",
    )
    args = parser.parse_args()
    if args.quick:
        args.tasks, args.burst = 5, 12
    logging.basicConfig(level=logging.ERROR)
    print(json.dumps(with_targets(anyio.run(run, args))))


if __name__ == "__main__":
    main()
