"""Metrics end to end: real agents as processes, found and scraped by a real Prometheus.

A nats-server, the OpenAI-compatible upstream, and the memory, llm and planner agents each in a
process of its own with metrics on a free port (``SOPHIA_METRICS_BIND=127.0.0.1:0``), found by
Prometheus through the files they register under ``$SOPHIA_HOME/metrics/``. Traffic of every
kind the dashboard shows goes through the bus twice; after the first round each expected
series exists, after the second each counter has grown. Every wait is bounded.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Awaitable, Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import anyio
import pytest

from bus import Bus
from bus.config import Settings, load
from bus.errors import ConfigError
from bus.metrics import otlp_wanted, registry_dir
from tests.fixtures.openai_upstream import OpenAIUpstream
from tests.fixtures.prometheus import Prometheus
from tests.ops.test_dashboard import dashboard_metrics, load_dashboard, panel_queries, promql

AGENTS = {"memory": "memory", "llm": "llm", "planner": "tasks"}  # module: service
MODEL = "metrics-model"
START_S = 45.0
SERIES_S = 40.0

#: PromQL that must return a positive value after traffic, and grow with more of it
GROWING = (
    'sum(sophia_request_duration_seconds_count{service="memory", code="ok"})',
    'sum(sophia_request_duration_seconds_count{service="memory", code="400"})',
    'sum(sophia_request_duration_seconds_count{service="llm", endpoint="complete"})',
    "sum(sophia_memory_search_duration_seconds_count)",
    'sum(sophia_memory_cache_lookups_total{result="hit"})',
    'sum(sophia_memory_cache_lookups_total{result="miss"})',
    f'sum(sophia_llm_calls_total{{model="{MODEL}", outcome="ok"}})',
    f'sum(sophia_llm_tokens_total{{model="{MODEL}", type="output"}})',
    f'sum(sophia_llm_cost_usd_total{{model="{MODEL}"}})',
    f'sum(sophia_llm_call_duration_seconds_count{{model="{MODEL}"}})',
    'sum(sophia_task_transitions_total{state="queued"})',
    'sum(sophia_work_items_total{service="tasks", outcome="dead_lettered"})',
    'sum(sophia_dlq_depth{service="tasks"})',
)
#: gauges that must exist (their value is whatever the backlog is)
PRESENT = (
    'sophia_consumer_lag{service="tasks"}',
    'sophia_consumer_ack_pending{service="tasks"}',
    'sophia_work_in_flight{service="tasks"}',
)


def agent_env(settings: Settings, upstream: OpenAIUpstream) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("SOPHIA_", "OTEL_"))}
    env.update(
        SOPHIA_HOME=settings.home,
        SOPHIA_NATS_URL=settings.nats_url,
        SOPHIA_PREFIX=settings.prefix,
        SOPHIA_LOG_LEVEL="warning",
        SOPHIA_METRICS_BIND="127.0.0.1:0",
        SOPHIA_WORK_MAX_DELIVER="1",
        SOPHIA_LLM_BASE_URL=upstream.base_url,
        SOPHIA_LLM_MODEL=MODEL,
        SOPHIA_LLM_INPUT_USD_PER_MTOK="1.5",
        SOPHIA_LLM_OUTPUT_USD_PER_MTOK="3",
    )
    return env


@contextmanager
def agent_processes(env: dict[str, str], logs: Path) -> Iterator[list[subprocess.Popen[bytes]]]:
    """The agents running, then stopped with SIGTERM (killed when they overstay)."""
    logs.mkdir(parents=True, exist_ok=True)
    procs = [
        subprocess.Popen(
            [sys.executable, "-m", "bus.runner", f"agents.{module}"],
            env=env,
            stdout=(logs / f"{module}.log").open("wb"),
            stderr=subprocess.STDOUT,
        )
        for module in AGENTS
    ]
    try:
        yield procs
    finally:
        for proc in procs:
            proc.terminate()
        for proc in procs:
            try:
                proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(timeout=5)


async def until(
    check: Callable[[], Awaitable[bool]], limit_s: float, what: str | Callable[[], str]
) -> None:
    """Poll ``check`` every 0.25 s until it holds. Fails the test naming ``what`` otherwise."""
    with anyio.move_on_after(limit_s):
        while not await check():  # noqa: ASYNC110 — the state lives in other processes
            await anyio.sleep(0.25)
        return
    pytest.fail(f"not within {limit_s} s: {what() if callable(what) else what}")


async def healthy(bus: Bus, service: str) -> bool:
    try:
        await bus.request_raw(bus.subjects.endpoint(service, "health"), b"{}", timeout=1)
    except Exception:
        return False
    return True


async def value(prometheus: Prometheus, promql: str) -> float | None:
    result = await prometheus.query(promql)
    return float(result[0]["value"][1]) if result else None


async def traffic(bus: Bus, repo: Path, round_: int) -> None:
    """One request of every kind the dashboard shows; errors on purpose included."""
    s = bus.subjects

    async def ask(service: str, endpoint: str, body: object, raw: bytes | None = None) -> None:
        payload = raw if raw is not None else json.dumps(body).encode()
        await bus.request_raw(s.endpoint(service, endpoint), payload, timeout=20)

    await ask("memory", "search", {"query": f"where are metrics configured {round_}"})
    await ask("memory", "search", None, raw=b"{not json")  # a 400
    entry = {"model": MODEL, "prompt": f"what is two and two, take {round_}", "response": "4"}
    await ask("memory", "cache.put", entry)
    await ask("memory", "cache.lookup", {"model": MODEL, "prompt": entry["prompt"]})
    await ask("memory", "cache.lookup", {"model": MODEL, "prompt": f"unseen {round_}"})
    hello = {"messages": [{"role": "user", "content": f"say hello, round {round_}"}]}
    await ask("llm", "complete", hello)
    await ask("tasks", "submit", {"goal": f"add a metrics note, round {round_}", "repo": str(repo)})
    await bus.js.publish(s.work("tasks"), b"{not a work item")  # dead-lettered at once


def git_repo(path: Path) -> Path:
    path.mkdir()
    for args in (["init", "-q"], ["commit", "-q", "--allow-empty", "-m", "start"]):
        subprocess.run(
            ["git", "-c", "user.name=t", "-c", "user.email=t@example.com", *args],
            cwd=path,
            check=True,
        )
    return path


@pytest.mark.parametrize(
    ("value", "ok"),
    [
        ("127.0.0.1:0", True),
        ("0.0.0.0:9464", True),
        ("[::1]:9464", True),
        ("off", True),
        ("9464", False),
        ("127.0.0.1:65536", False),
        ("host name:1", False),
    ],
    ids=["free-port", "fixed-port", "ipv6", "off", "no-host", "port-too-big", "space"],
)
def test_metrics_bind_setting_is_checked(value: str, ok: bool) -> None:
    env = {"SOPHIA_METRICS_BIND": value}
    if ok:
        assert load(Settings, env).metrics_bind == value
        return
    with pytest.raises(ConfigError) as raised:
        load(Settings, env)
    assert "SOPHIA_METRICS_BIND" in raised.value.description


@pytest.mark.parametrize(
    ("env", "pushed"),
    [
        ({}, False),
        ({"OTEL_EXPORTER_OTLP_ENDPOINT": "http://collector:4318"}, True),
        ({"OTEL_EXPORTER_OTLP_METRICS_ENDPOINT": "http://collector:4318/v1/metrics"}, True),
        ({"OTEL_EXPORTER_OTLP_ENDPOINT": "http://c:4318", "OTEL_METRICS_EXPORTER": "none"}, False),
        (
            {
                "OTEL_EXPORTER_OTLP_ENDPOINT": "http://c:4318",
                "OTEL_METRICS_EXPORTER": "prometheus,otlp",
            },
            True,
        ),
    ],
    ids=["unset", "endpoint", "metrics-endpoint", "exporter-none", "exporter-list"],
)
def test_metrics_pushed_over_otlp_only_when_configured(env: dict[str, str], pushed: bool) -> None:
    assert otlp_wanted(env) is pushed


@pytest.mark.anyio
@pytest.mark.slow
async def test_metrics_every_series_exists_and_moves_in_prometheus(
    settings: Settings,
    bus: Bus,
    upstream: OpenAIUpstream,
    prometheus_for: Callable[[Path], Prometheus],
    tmp_path: Path,
) -> None:
    repo = git_repo(tmp_path / "repo")
    with agent_processes(agent_env(settings, upstream), tmp_path / "logs") as procs:
        for service in AGENTS.values():
            await until(lambda s=service: healthy(bus, s), START_S, f"{service} answers")
        registered = sorted(registry_dir(settings.home_path).glob("*.json"))
        assert {p.stem for p in registered} == {str(proc.pid) for proc in procs}

        prometheus = prometheus_for(settings.home_path)

        async def scraped() -> bool:
            targets = await prometheus.targets()
            return len(targets) == len(procs) and all(t["health"] == "up" for t in targets)

        await until(scraped, SERIES_S, "every process scraped")

        await traffic(bus, repo, 1)
        first: dict[str, float] = {}

        async def all_positive() -> bool:
            for promql in GROWING:
                seen = await value(prometheus, promql)
                if seen is not None and seen > 0:
                    first[promql] = seen
            present = [await value(prometheus, promql) is not None for promql in PRESENT]
            return len(first) == len(GROWING) and all(present)

        await until(all_positive, SERIES_S, lambda: f"after one round: {set(GROWING) - set(first)}")
        missing = [q for q in GROWING if q not in first]
        assert not missing

        await traffic(bus, repo, 2)
        grown: set[str] = set()

        async def all_grown() -> bool:
            for promql in GROWING:
                seen = await value(prometheus, promql)
                if seen is not None and seen > first[promql]:
                    grown.add(promql)
            return len(grown) == len(GROWING)

        await until(all_grown, SERIES_S, lambda: f"not grown: {set(GROWING) - grown}")

        dashboard = load_dashboard()
        for name in sorted(dashboard_metrics()):  # what the dashboard reads is really there
            assert await prometheus.query(f"count({name})"), f"{name}: not scraped"
        for expr in panel_queries(dashboard):
            await prometheus.query(promql(expr))  # raises on a query Prometheus refuses

    assert not list(registry_dir(settings.home_path).glob("*.json"))  # each removed its own
