"""``sophia up [--detach] [--only NAME …]``: run the local stack and keep it up.

Without ``--detach`` the stack runs in this process until Ctrl-C or SIGTERM. With
it, the same supervisor runs in the background (its own session, output in
``$SOPHIA_HOME/logs/supervisor.log``) and the command returns once every agent
answers ``$SRV.PING``; if they do not within ``SOPHIA_READY_TIMEOUT_S`` the stack
is stopped again and the exit status is 3.
"""

from __future__ import annotations

import argparse
import os
import signal
import subprocess
import sys
import time
from typing import Any

import anyio

from bus import logs
from bus.config import Settings, load
from bus.errors import UnavailableError
from ops.cli import run_async
from ops.natsserver import port_open
from ops.render import table
from ops.session import wait_ready
from ops.stack import (
    Layout,
    Program,
    StackState,
    default_programs,
    local_nats_address,
    nats_program,
    read_pid,
    read_state,
)
from ops.supervisor import Policy, StackRunningError, Supervisor, unwrap

STATE_POLL_S = 0.1


def register(subparsers: Any) -> None:
    parser = subparsers.add_parser(
        "up",
        help="start NATS (when local and not running), the agents and the edge",
        description="Start nats-server with JetStream when SOPHIA_NATS_URL is a local address "
        "where nothing answers, create streams, consumers and buckets, start one process per "
        "agent (and the edge) and restart any that crash. Ctrl-C stops everything.",
        epilog="Tuning (environment): SOPHIA_RESTART_BACKOFF_S (0.5), SOPHIA_RESTART_BACKOFF_MAX_S "
        "(30), SOPHIA_CRASH_LIMIT (5) crashes within SOPHIA_CRASH_WINDOW_S (60) leave a program "
        "down; SOPHIA_STOP_GRACE_S (15) before SIGKILL; SOPHIA_READY_TIMEOUT_S (60) for --detach.",
    )
    parser.add_argument(
        "-d", "--detach", action="store_true", help="run in the background; `sophia down` stops"
    )
    parser.add_argument(
        "--only",
        action="append",
        metavar="NAME",
        help="run only this agent (or `edge`); repeatable",
    )
    parser.set_defaults(func=up)


def up(args: argparse.Namespace) -> int:
    """Run the stack. Raises StackRunningError, UnavailableError, BadRequestError (an unknown
    ``--only``), ConfigError (a bad setting, or an agent module that does not load)."""
    settings = load(Settings)
    policy = load(Policy)
    programs = default_programs(settings, args.only)
    logs.configure(settings.log_level)
    layout = Layout(settings.home_path)
    if args.detach:
        return detach(settings, policy, layout, args.only or [])
    supervisor = Supervisor(settings, layout, programs, policy, nats=plan_nats(settings, layout))
    return run_async(foreground, supervisor)


def plan_nats(settings: Settings, layout: Layout) -> Program | None:
    """nats-server to start: only for a local ``nats://`` address where nothing answers."""
    address = local_nats_address(settings.nats_url)
    if address is None or port_open(*address):
        return None
    return nats_program(layout, *address)


async def foreground(supervisor: Supervisor) -> int:
    """Run ``supervisor`` until a signal; print where everything is once agents answer."""
    try:
        with anyio.open_signal_receiver(signal.SIGTERM, signal.SIGINT, signal.SIGHUP) as signals:
            async with anyio.create_task_group() as tg:
                tg.start_soon(_relay_signals, signals, supervisor)
                await tg.start(supervisor.run)
                tg.start_soon(_announce, supervisor)
                await supervisor.stopped.wait()
                tg.cancel_scope.cancel()
    except BaseExceptionGroup as group:
        raise unwrap(group) from None
    return 0


async def _relay_signals(signals: Any, supervisor: Supervisor) -> None:
    async for signum in signals:
        print(f"sophia: {signal.Signals(signum).name}: stopping", file=sys.stderr, flush=True)
        supervisor.stop()


async def _announce(supervisor: Supervisor) -> None:
    settings, policy = supervisor.settings, supervisor.policy
    agents, edge = _expected([(p.name, p.kind) for p in supervisor.programs], settings)
    missing = await wait_ready(settings, agents, edge, policy.ready_timeout_s)
    print(summary(supervisor.state(), missing), flush=True)


def _expected(
    programs: list[tuple[str, str]], settings: Settings
) -> tuple[set[str], tuple[str, int] | None]:
    """Agents that must answer PING, and the edge address that must listen (if any)."""
    agents = {name for name, kind in programs if kind == "agent"}
    has_edge = any(kind == "edge" for _, kind in programs)
    return agents, settings.edge_host_port if has_edge else None


def detach(settings: Settings, policy: Policy, layout: Layout, only: list[str]) -> int:
    """Start the supervisor in the background and return once every agent answers.

    Raises StackRunningError, UnavailableError (the stack was stopped again).
    """
    other = read_pid(layout)
    if other is not None:
        raise StackRunningError(
            f"a stack is already running from {layout.home} (pid {other}); `sophia down` stops it"
        )
    layout.create()
    argv = [sys.executable, "-m", "ops.cli", "up", *(f"--only={name}" for name in only)]
    with layout.log_file("supervisor").open("ab") as out:
        child = subprocess.Popen(
            argv,
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
            env={**os.environ, "PYTHONUNBUFFERED": "1"},
        )
    deadline = time.monotonic() + policy.ready_timeout_s
    try:
        state = _wait_running(child, layout, deadline)
        agents, edge = _expected([(p.name, p.kind) for p in state.programs], settings)
        left = max(deadline - time.monotonic(), 1.0)
        missing = run_async(wait_ready, settings, agents, edge, left)
    except BaseException:
        _stop(child, policy)
        raise
    if missing:
        _stop(child, policy)
        raise UnavailableError(
            f"not answering within {policy.ready_timeout_s:g}s: {', '.join(sorted(missing))}; "
            f"the stack was stopped again; logs in {layout.logs_dir}"
        )
    print(summary(read_state(layout) or state, set()))
    return 0


def _wait_running(child: subprocess.Popen[bytes], layout: Layout, deadline: float) -> StackState:
    """The state file once ``child`` reports phase ``running``. Raises UnavailableError."""
    while time.monotonic() < deadline:
        code = child.poll()
        if code is not None:
            raise UnavailableError(
                f"the supervisor exited at start (status {code}): {_last_line(layout)}"
            )
        state = read_state(layout)
        if state is not None and state.pid == child.pid and state.phase == "running":
            return state
        time.sleep(STATE_POLL_S)
    raise UnavailableError(f"the supervisor did not start in time; see {_log(layout)}")


def _stop(child: subprocess.Popen[bytes], policy: Policy) -> None:
    """SIGTERM the background supervisor and wait (bounded) for it to stop everything."""
    if child.poll() is None:
        child.terminate()
        try:
            child.wait(stop_timeout(policy))
        except subprocess.TimeoutExpired:
            child.kill()
            child.wait(5)


def stop_timeout(policy: Policy) -> float:
    """How long a supervisor may take to stop: two graceful waits and two kill waits."""
    return 2 * policy.stop_grace_s + 20.0


def _log(layout: Layout) -> str:
    return str(layout.log_file("supervisor"))


def _last_line(layout: Layout) -> str:
    try:
        lines = layout.log_file("supervisor").read_text(errors="replace").strip().splitlines()
    except OSError:
        lines = []
    return lines[-1] if lines else f"see {_log(layout)}"


def summary(state: StackState, missing: set[str]) -> str:
    """Where everything is: NATS, data, edge, each program's pid and log."""
    started = "started by sophia" if state.nats_started else "already running"
    lines = [
        f"sophia is up (supervisor pid {state.pid}, home {state.home})",
        f"  NATS  {state.nats_url} ({started}; JetStream data {state.nats_dir})",
        f"  edge  {state.edge_url or 'not installed'}",
        f"  logs  {os.path.dirname(state.supervisor_log)}/",
        "",
        table(
            ("PROGRAM", "PID", "STATUS", "LOG"),
            ((p.name, p.pid, p.status, p.log) for p in state.programs),
        ),
    ]
    if missing:
        lines.append(f"not answering yet: {', '.join(sorted(missing))} (see their logs)")
    return "\n".join(lines)
