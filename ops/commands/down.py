"""``sophia down``: stop the stack that ``sophia up`` runs from this ``SOPHIA_HOME``.

SIGTERM goes to the supervisor, which stops the agents and the edge (they drain),
then nats-server; this command waits a bounded time for it and reports.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import signal
import time
from typing import Any

from bus.config import Settings, load
from bus.errors import ForbiddenError, TimeoutError_
from ops.commands.up import stop_timeout
from ops.stack import (
    NATS,
    Layout,
    ProgramState,
    StackState,
    pid_alive,
    read_pid,
    read_state,
    runs,
    write_state,
)
from ops.supervisor import Policy

POLL_S = 0.1


def register(subparsers: Any) -> None:
    parser = subparsers.add_parser(
        "down",
        help="stop the stack started by `sophia up`",
        description="Stop the agents (SIGTERM, so they drain), the edge and the nats-server "
        "that `sophia up` started. Does nothing when no stack runs.",
    )
    parser.set_defaults(func=down)


def down(args: argparse.Namespace) -> int:
    """Stop the stack and report what stopped.

    Raises TimeoutError_ (exit 3), ForbiddenError (the supervisor is another user's).
    """
    settings = load(Settings)
    layout = Layout(settings.home_path)
    timeout = stop_timeout(load(Policy))
    pid = read_pid(layout)
    if pid is None:
        return _sweep(layout, timeout)
    print(f"stopping sophia (supervisor pid {pid})", flush=True)
    try:
        os.kill(pid, signal.SIGTERM)
    except ProcessLookupError:
        pass  # it stopped meanwhile
    except PermissionError:
        raise ForbiddenError(
            f"not allowed to stop the supervisor (pid {pid}): it runs as another user"
        ) from None
    deadline = time.monotonic() + timeout
    while pid_alive(pid) and time.monotonic() < deadline:
        time.sleep(POLL_S)
    if pid_alive(pid):
        raise TimeoutError_(
            f"the supervisor (pid {pid}) is still running after {timeout:g}s; "
            f"see {layout.log_file('supervisor')}"
        )
    print(_report(layout))
    return 0


def _sweep(layout: Layout, timeout: float) -> int:
    """Stop what a supervisor that died without stopping left running (agents, then NATS)."""
    state = read_state(layout)
    left = [] if state is None or state.phase == "stopped" else _left_running(state)
    if state is None or not left:
        print(f"no stack is running from {layout.home}")
        return 0
    print(f"the supervisor is gone; stopping what it left: {', '.join(p.name for p in left)}")
    _terminate([p for p in left if p.kind != NATS], timeout / 2)
    _terminate([p for p in left if p.kind == NATS], timeout / 2)
    for program in state.programs:
        program.pid = None
        if program.status != "failed":
            program.status = "stopped"
    state.phase = "stopped"
    write_state(layout, state)
    layout.pid_file.unlink(missing_ok=True)
    print(_report(layout))
    return 0


def _left_running(state: StackState) -> list[ProgramState]:
    return [p for p in state.programs if p.pid is not None and runs(p.pid, p.argv)]


def _terminate(programs: list[ProgramState], timeout: float) -> None:
    """SIGTERM, wait at most ``timeout``, SIGKILL whatever still runs."""
    for sig in (signal.SIGTERM, signal.SIGKILL):
        live = [p.pid for p in programs if p.pid is not None and runs(p.pid, p.argv)]
        for pid in live:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.kill(pid, sig)
        deadline = time.monotonic() + timeout
        while any(pid_alive(pid) for pid in live) and time.monotonic() < deadline:
            time.sleep(POLL_S)


def _report(layout: Layout) -> str:
    state = read_state(layout)
    if state is None:
        return "stopped"
    stopped = [p.name for p in state.programs if p.status == "stopped"]
    failed = [p.name for p in state.programs if p.status == "failed"]
    line = f"stopped: {', '.join(stopped) or 'nothing'}"
    if failed:
        line += f"; already down after repeated crashes: {', '.join(failed)}"
    return line
