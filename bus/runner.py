"""Running one agent as a process: uvloop when installed, SIGTERM/SIGINT drain, exit codes.

Guarantee: the first SIGTERM or SIGINT asks the agent to stop gracefully (finish
in-flight work within the grace period, then drain); a second one cancels at once.
Exit status: 0 after a clean stop, 2 for a configuration error, 1 otherwise.
"""

from __future__ import annotations

import signal
import sys
from collections.abc import Awaitable, Callable
from typing import Any, NoReturn, TypeVar

import anyio

from bus import logs
from bus.agent import Agent
from bus.config import Settings, load
from bus.errors import ConfigError, SophiaError

T = TypeVar("T")


def backend_options() -> dict[str, Any]:
    """anyio backend options: uvloop when it is installed."""
    try:
        import uvloop  # noqa: F401
    except ImportError:
        return {}
    return {"use_uvloop": True}


async def _watch_signals(agent: Agent, scope: anyio.CancelScope) -> None:
    with anyio.open_signal_receiver(signal.SIGTERM, signal.SIGINT) as signals:
        async for _ in signals:
            if agent.stopping:
                scope.cancel()
                return
            agent.stop()


async def serve(agent: Agent) -> None:
    """Run ``agent`` until it is told to stop by a signal."""
    async with anyio.create_task_group() as tg:
        tg.start_soon(_watch_signals, agent, tg.cancel_scope)
        await agent.run()
        tg.cancel_scope.cancel()


def run_agent(cls: type[Agent]) -> NoReturn:
    """Entry point of ``python -m agents.<name>``: never returns.

    Every setting (the bus's and the agent's own, loaded in its ``__init__``) is checked
    before anything connects: a bad one exits 2 with its one-line message.
    """
    agent = configured(cls.name, lambda: cls(load(Settings)))
    logs.configure(agent.settings.log_level)
    run_process(cls.name, serve, agent)


def configured(name: str, load_all: Callable[[], T]) -> T:
    """``load_all()``, or exit 2 with its one-line message when a setting is bad."""
    try:
        return load_all()
    except ConfigError as exc:
        print(f"sophia {name}: {exc.description}", file=sys.stderr)
        sys.exit(2)


def run_process(name: str, main: Callable[..., Awaitable[object]], *args: Any) -> NoReturn:
    """Run ``main(*args)`` on the event loop as a process's whole life, then exit: 0 after a
    clean stop, 2 for a configuration error, 1 for another error, 130 on Ctrl-C."""
    try:
        anyio.run(main, *args, backend="asyncio", backend_options=backend_options())
    except SophiaError as exc:
        print(f"sophia {name}: {exc.description}", file=sys.stderr)
        sys.exit(2 if isinstance(exc, ConfigError) else 1)
    except KeyboardInterrupt:
        sys.exit(130)
    sys.exit(0)
