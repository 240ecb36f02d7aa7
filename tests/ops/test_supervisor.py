"""The supervisor: restarts after a crash, gives up after repeated crashes, stops in order.

Each test runs the supervisor in-process; leaving the ``supervising`` block stops it,
and its bounded shutdown (SIGTERM, then SIGKILL) ends every process it started, also
when an assertion inside the block fails.
"""

from __future__ import annotations

import json
import os
import signal
import sys
from collections.abc import AsyncIterator, Iterable
from contextlib import asynccontextmanager
from pathlib import Path

import anyio
import msgspec
import nats
import pytest

from bus import Bus, Settings
from bus.micro import PingResponse
from bus.subjects import Subjects, srv
from ops import stack
from ops.natsserver import free_port, port_open
from ops.session import discover
from ops.stack import Layout, Program, default_programs, nats_program, pid_alive, read_state
from ops.supervisor import Policy, Supervisor
from tests.ops.conftest import Package, Sophia, agent_source
from tests.polling import wait_for

pytestmark = pytest.mark.anyio

FAST = Policy(
    restart_backoff_s=0.05,
    restart_backoff_max_s=0.2,
    crash_limit=3,
    crash_window_s=60.0,
    stop_grace_s=5.0,
    ready_timeout_s=20.0,
)


def python(code: str) -> tuple[str, ...]:
    return (sys.executable, "-c", code)


@pytest.fixture
def layout(settings: Settings) -> Layout:
    return Layout(settings.home_path)


@asynccontextmanager
async def supervising(
    settings: Settings,
    layout: Layout,
    programs: Iterable[Program],
    policy: Policy = FAST,
    nats_server: Program | None = None,
) -> AsyncIterator[Supervisor]:
    supervisor = Supervisor(settings, layout, programs, policy, nats=nats_server)
    async with anyio.create_task_group() as tg:
        await tg.start(supervisor.run)
        try:
            yield supervisor
        finally:
            supervisor.stop()


async def answering(bus: Bus, name: str, other_than: str = "") -> PingResponse:
    """The instance of ``name`` on this prefix that answers PING (not ``other_than``)."""
    with anyio.fail_after(20):
        while True:
            for ping in await discover(bus.nc, srv("PING", name), PingResponse, 0.2):
                if ping.metadata.get("prefix") == bus.settings.prefix and ping.id != other_than:
                    return ping


async def test_supervisor_restarts_an_agent_killed_with_sigkill(
    settings: Settings, layout: Layout, bus: Bus
) -> None:
    [agent] = default_programs(settings, ["tasks"])  # as `sophia up` runs it: bus.runner
    async with supervising(settings, layout, [agent]) as supervisor:
        state = supervisor.states["tasks"]
        first = await answering(bus, "tasks")
        killed = state.pid
        assert killed is not None and first.metadata["pid"] == str(killed)
        os.kill(killed, signal.SIGKILL)
        second = await answering(bus, "tasks", other_than=first.id)
        assert second.metadata["pid"] == str(state.pid) != str(killed)
        assert (state.status, state.restarts, state.last_exit) == ("running", 1, -signal.SIGKILL)
        restarted = state.pid
    assert state.status == "stopped"
    assert restarted is not None and not pid_alive(restarted)


async def test_supervisor_runs_an_agent_module_that_was_only_added_to_the_package(
    settings: Settings,
    layout: Layout,
    bus: Bus,
    package: Package,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    name = package({"scout": agent_source("scout")})  # no __main__ block, listed nowhere
    monkeypatch.setattr(stack, "AGENTS_PACKAGE", name)
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join([str(tmp_path), *sys.path]))
    [scout] = default_programs(settings, ["scout"])
    assert scout.argv[1:] == ("-m", "bus.runner", f"{name}.scout")
    async with supervising(settings, layout, [scout]) as supervisor:
        ping = await answering(bus, "scout")
        assert ping.metadata["pid"] == str(supervisor.states["scout"].pid)


async def test_supervisor_leaves_a_crash_looping_program_down_and_reports_it(
    settings: Settings, layout: Layout, sophia: Sophia
) -> None:
    crasher = Program("crasher", python("raise SystemExit(3)"))
    sleeper = Program("sleeper", python("import time; time.sleep(600)"))
    async with supervising(settings, layout, [crasher, sleeper]) as supervisor:
        crashed = supervisor.states["crasher"]
        await wait_for(lambda: crashed.status == "failed")
        assert (crashed.restarts, crashed.last_exit, crashed.pid) == (FAST.crash_limit - 1, 3, None)
        assert supervisor.states["sleeper"].status == "running"
        run = await sophia("status", "--json")
        stack = {p["name"]: p for p in json.loads(run.out)["stack"]["programs"]}
        assert stack["crasher"]["status"] == "failed"
        assert stack["sleeper"]["status"] == "running"
        run = await sophia("status")
        assert "crasher: failed (restarts 2, last exit 3)" in run.out
    on_disk = read_state(layout)
    assert on_disk is not None and on_disk.phase == "stopped"
    assert {p.name: p.status for p in on_disk.programs} == {
        "crasher": "failed",
        "sleeper": "stopped",
    }
    assert not layout.pid_file.exists()


async def test_supervisor_kills_a_program_that_ignores_sigterm(
    settings: Settings, layout: Layout
) -> None:
    stubborn = Program(
        "stubborn",
        python(
            "import signal, time; signal.signal(signal.SIGTERM, signal.SIG_IGN); "
            "print('ignoring', flush=True); time.sleep(600)"
        ),
    )
    policy = msgspec.structs.replace(FAST, stop_grace_s=0.5)
    log = layout.log_file("stubborn")
    async with supervising(settings, layout, [stubborn], policy) as supervisor:
        await wait_for(lambda: log.exists() and "ignoring" in log.read_text())
        pid = supervisor.states["stubborn"].pid
    assert supervisor.states["stubborn"].last_exit == -signal.SIGKILL
    assert pid is not None and not pid_alive(pid)


ON_TERM_REPORT_NATS = """
import signal, socket, sys, time
def on_term(*_):
    try:
        socket.create_connection(("127.0.0.1", {port}), 1).close()
        seen = "nats-open"
    except OSError:
        seen = "nats-closed"
    open({path!r}, "w").write(seen)
    sys.exit(0)
signal.signal(signal.SIGTERM, on_term)
print("ready", flush=True)
time.sleep(600)
"""


async def test_supervisor_starts_nats_with_topology_and_stops_it_after_the_agents(
    settings: Settings, layout: Layout, tmp_path: Path
) -> None:
    port = free_port()
    own = msgspec.structs.replace(settings, nats_url=f"nats://127.0.0.1:{port}")
    seen = tmp_path / "seen"
    agent = Program("watcher", python(ON_TERM_REPORT_NATS.format(port=port, path=str(seen))))
    server = nats_program(layout, "127.0.0.1", port)
    log = layout.log_file("watcher")
    async with supervising(own, layout, [agent], nats_server=server) as supervisor:
        assert supervisor.states["nats"].status == "running"
        nc = await nats.connect(own.nats_url)
        subjects = Subjects(own.prefix)
        consumer = await nc.jetstream().consumer_info(subjects.work_stream, "watcher")
        await nc.close()
        assert consumer.config.filter_subject == subjects.work("watcher")
        await wait_for(lambda: log.exists() and "ready" in log.read_text())
    assert seen.read_text() == "nats-open"  # the agent stopped while NATS still served
    assert not port_open("127.0.0.1", port)
    assert supervisor.states["nats"].status == "stopped"
    assert (layout.nats_dir / "jetstream").is_dir()
