"""``sophia up --detach``, ``status``, ``down`` end to end: real processes, own NATS.

Runs the installed ``sophia`` script with a temp ``SOPHIA_HOME`` and a free port
where nothing answers, so ``up`` starts its own nats-server. Whatever happens, the
test ends by killing every process the state file ever named.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from ops.natsserver import free_port, port_open
from ops.stack import Layout, pid_alive, read_state

SOPHIA = str(Path(sys.executable).parent / "sophia")
AGENTS = ("tasks", "coder")


@pytest.fixture
def stack_env(tmp_path: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("SOPHIA_")}
    env.update(
        SOPHIA_HOME=str(tmp_path / "home"),
        SOPHIA_NATS_URL=f"nats://127.0.0.1:{free_port()}",
        SOPHIA_EDGE_BIND=f"127.0.0.1:{free_port()}",
        SOPHIA_READY_TIMEOUT_S="45",
        SOPHIA_STOP_GRACE_S="10",
    )
    return env


@pytest.fixture
def pids(stack_env: dict[str, str]) -> Iterator[set[int]]:
    """Pids seen during the test; any still alive at the end are killed."""
    seen: set[int] = set()
    yield seen
    state = read_state(Layout(Path(stack_env["SOPHIA_HOME"])))
    if state is not None:
        seen |= {state.pid} | {p.pid for p in state.programs if p.pid}
    for pid in seen:
        if pid_alive(pid):
            os.kill(pid, signal.SIGKILL)


def sophia(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [SOPHIA, *args], env=env, capture_output=True, text=True, timeout=90, check=False
    )


@pytest.mark.slow
def test_up_detach_then_status_then_down(stack_env: dict[str, str], pids: set[int]) -> None:
    only = [f"--only={name}" for name in AGENTS]
    up = sophia(stack_env, "up", "--detach", *only)
    layout = Layout(Path(stack_env["SOPHIA_HOME"]))
    state = read_state(layout)
    if state is not None:
        pids.update({state.pid} | {p.pid for p in state.programs if p.pid})
    assert up.returncode == 0, up.stdout + up.stderr
    assert state is not None and state.phase == "running"
    assert "sophia is up" in up.stdout
    assert f"{stack_env['SOPHIA_NATS_URL']} (started by sophia" in up.stdout
    assert {p.name: p.status for p in state.programs} == {
        "nats": "running",
        **dict.fromkeys(AGENTS, "running"),
    }

    status = sophia(stack_env, "status", "--json")
    assert status.returncode == 0, status.stderr
    report = json.loads(status.stdout)
    assert sorted(s["name"] for s in report["services"]) == sorted(AGENTS)
    assert {s["pid"] for s in report["services"]} == {
        p.pid for p in state.programs if p.name in AGENTS
    }
    assert all(s["exists"] for s in report["streams"])
    assert report["stack"]["pid"] == state.pid

    again = sophia(stack_env, "up", "--detach", *only)
    assert again.returncode == 2
    assert "already running" in again.stderr

    down = sophia(stack_env, "down")
    assert down.returncode == 0, down.stderr
    assert f"supervisor pid {state.pid}" in down.stdout
    assert not any(pid_alive(pid) for pid in pids)
    assert not port_open("127.0.0.1", int(stack_env["SOPHIA_NATS_URL"].rsplit(":", 1)[1]))
    assert not layout.pid_file.exists()
    assert sophia(stack_env, "down").stdout.startswith("no stack is running")


@pytest.mark.slow
def test_down_stops_what_a_killed_supervisor_left(
    stack_env: dict[str, str], pids: set[int]
) -> None:
    up = sophia(stack_env, "up", "--detach", "--only=tasks")
    state = read_state(Layout(Path(stack_env["SOPHIA_HOME"])))
    assert up.returncode == 0, up.stdout + up.stderr
    assert state is not None
    left = {p.pid for p in state.programs if p.pid}
    pids.update(left | {state.pid})
    os.kill(state.pid, signal.SIGKILL)
    down = sophia(stack_env, "down")
    assert down.returncode == 0, down.stderr
    assert "the supervisor is gone; stopping what it left: nats, tasks" in down.stdout
    assert len(left) == 2
    assert not any(pid_alive(pid) for pid in left)
    assert sophia(stack_env, "down").stdout.startswith("no stack is running")
