"""Chaos: self-healing exercised — the supervisor's restarts, health checks, the edge's gate.

A stack as ``sophia up`` runs it (the supervisor in-process, its programs as processes: the
planner agent ``tasks``, the edge, and ``broken``, a real agent that dies at start on a bad
setting). The planner is killed with SIGKILL: the supervisor restarts it, the edge's
``/readyz`` goes not-ready (no service left) and ready again, the new instance answers its
health check (``ops.probe``, the one containers use) and is the only one. ``broken`` crash-loops
until the supervisor leaves it down; ``sophia status`` reports the loop while it lasts and
the failure after.
"""

from __future__ import annotations

import json
import os
import signal
import sys
import time
from collections.abc import AsyncIterator, Iterable
from contextlib import asynccontextmanager
from pathlib import Path

import anyio
import httpx
import msgspec
import pytest

from bus import Bus, Settings
from bus.micro import PingResponse
from bus.schemas.common import Empty, Health
from bus.subjects import srv
from ops import cli
from ops.natsserver import free_port
from ops.session import discover
from ops.stack import Layout, Program, child_env, default_programs
from ops.supervisor import Policy, Supervisor
from tests.chaos.figures import counted, figure
from tests.polling import settle, wait_for

pytestmark = [pytest.mark.anyio, pytest.mark.chaos]

ROOT = Path(__file__).resolve().parents[2]
POLICY = Policy(
    restart_backoff_s=0.2,
    restart_backoff_max_s=1.0,
    crash_limit=4,
    crash_window_s=60.0,
    stop_grace_s=5.0,
    ready_timeout_s=30.0,
)
UP_BOUND_S = 60.0  # the stack's processes start on a loaded machine
RECOVERY_BOUND_S = 30.0  # kill -9 to ready again: backoff, a process start, one discovery


@asynccontextmanager
async def supervising(settings: Settings, programs: Iterable[Program]) -> AsyncIterator[Supervisor]:
    """The supervisor for the block; leaving it stops every process it started."""
    supervisor = Supervisor(settings, Layout(settings.home_path), programs, POLICY)
    async with anyio.create_task_group() as tg:
        await tg.start(supervisor.run)
        try:
            yield supervisor
        finally:
            supervisor.stop()


async def readyz(client: httpx.AsyncClient) -> tuple[int, list[str]]:
    """The edge's readiness: status code and the services it sees (0 while it is not up)."""
    try:
        answer = await client.get("/readyz", timeout=2.0)
    except httpx.HTTPError:
        return 0, []
    return answer.status_code, answer.json().get("services", [])


async def sophia_status(capsys: pytest.CaptureFixture[str], *args: str) -> str:
    capsys.readouterr()
    code = await anyio.to_thread.run_sync(cli.main, ["status", "--wait", "0.3", *args])
    out = capsys.readouterr().out
    assert code == 0, out
    return out


def line_of(out: str, name: str) -> str:
    return next(line for line in out.splitlines() if line.startswith(f"  {name}: "))


async def instances(bus: Bus, service: str) -> list[PingResponse]:
    pings = await discover(bus.nc, srv("PING", service), PingResponse, 0.3)
    return [p for p in pings if p.metadata.get("prefix") == bus.settings.prefix]


async def probe(settings: Settings, service: str) -> int:
    env = child_env(settings) | {"PYTHONPATH": str(ROOT)}
    done = await anyio.run_process(
        [sys.executable, "-m", "ops.probe", service], env=env, check=False
    )
    return done.returncode


async def test_supervisor_restarts_a_killed_agent_readyz_follows_and_a_crash_loop_is_reported(
    settings: Settings,
    cli_env: Settings,
    bus: Bus,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    tmp_path: Path,
) -> None:
    empty = tmp_path / "empty.toml"  # the planner with no model: it serves all the same
    empty.write_text("")
    for name, value in {
        "SOPHIA_CONFIG": str(empty),
        "SOPHIA_EDGE_DISCOVERY_S": "0.5",
        "SOPHIA_EDGE_DISCOVERY_WINDOW_S": "0.1",
        "SOPHIA_METRICS_BIND": "off",
        "PYTHONPATH": str(ROOT),
    }.items():
        monkeypatch.setenv(name, value)
    own = msgspec.structs.replace(settings, edge_bind=f"127.0.0.1:{free_port()}")
    broken_env = child_env(own) | {"SOPHIA_WORK_BATCH": "0"}  # refused at start: exit 2
    broken = Program("broken", (sys.executable, "-m", "bus.runner", "agents.reviewer"))
    broken = Program(broken.name, broken.argv, "agent", broken_env)
    programs = [*default_programs(own, ["tasks", "edge"]), broken]
    edge_url = f"http://{own.edge_bind}"
    async with (
        supervising(own, programs) as supervisor,
        httpx.AsyncClient(base_url=edge_url) as client,
    ):
        looping = supervisor.states["broken"]
        await wait_for(lambda: looping.crashes >= 2, UP_BOUND_S)
        during_loop = line_of(await sophia_status(capsys), "broken")

        assert await settle(lambda: readyz(client), (200, ["tasks"]), UP_BOUND_S) == (
            200,
            ["tasks"],
        )
        planner = supervisor.states["tasks"]
        [before] = await instances(bus, "tasks")
        assert await probe(own, "tasks") == 0
        killed = planner.pid
        assert killed is not None and before.metadata["pid"] == str(killed)

        os.kill(killed, signal.SIGKILL)
        killed_at = time.monotonic()
        not_ready_s = ready_s = None
        with anyio.fail_after(RECOVERY_BOUND_S):
            while ready_s is None:
                code, services = await readyz(client)
                now = time.monotonic() - killed_at
                if code == 503 and not_ready_s is None:
                    not_ready_s = now
                if code == 200 and "tasks" in services and not_ready_s is not None:
                    ready_s = now
                await anyio.sleep(0.02)
        after = await instances(bus, "tasks")
        health = await bus.request("tasks", "health", Empty(), Health)
        probed = await probe(own, "tasks")
        restarted = (planner.status, planner.restarts, planner.last_exit, planner.pid)

        await wait_for(lambda: looping.status == "failed", UP_BOUND_S)
        failed = line_of(await sophia_status(capsys), "broken")
        report = json.loads(await sophia_status(capsys, "--json"))
    assert "crash loop:" in during_loop, during_loop
    assert restarted[:3] == ("running", 1, -signal.SIGKILL)
    assert [p.metadata["pid"] for p in after] == [str(restarted[3])] != [str(killed)]
    assert health.status == "ok" and health.nats_connected
    assert probed == 0
    assert failed.startswith("  broken: failed (restarts 3, last exit 2) — crash loop: left down")
    stack = {p["name"]: p for p in report["stack"]["programs"]}
    assert (stack["broken"]["status"], stack["broken"]["crashes"]) == ("failed", POLICY.crash_limit)
    assert stack["tasks"]["status"] == stack["edge"]["status"] == "running"
    counts = counted(["tasks"], [p.name for p in after])
    figure(
        "self_healing",
        counts,
        ready_s or 0.0,
        killed="tasks",
        readyz_not_ready_after_s=round(not_ready_s or 0.0, 3),
        readyz_ready_again_after_s=round(ready_s or 0.0, 3),
        restarts=restarted[1],
        crash_loop={"status": "failed", "crashes": stack["broken"]["crashes"]},
        status_during_loop=during_loop.strip(),
        status_after=failed.strip(),
    )
