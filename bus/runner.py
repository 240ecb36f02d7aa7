"""Running one agent as a process: uvloop when installed, SIGTERM/SIGINT drain, exit codes.

``python -m bus.runner agents.x`` imports ``agents.x``, finds the one Agent subclass it defines
and runs it, so an agent module needs no ``__main__`` block (``sophia up`` starts agents this
way; ``python -m agents.x`` works where a module keeps one).

Guarantee: the first SIGTERM or SIGINT asks the agent to stop gracefully (finish
in-flight work within the grace period, then drain); a second one cancels at once.
Exit status: 0 after a clean stop, 2 for a configuration error (a module that does not import
or does not define exactly one agent included), 1 otherwise.
"""

from __future__ import annotations

import importlib
import signal
import sys
from collections.abc import Awaitable, Callable, Sequence
from types import ModuleType
from typing import Any, NoReturn, TypeVar

import anyio

from bus import logs
from bus.agent import Agent
from bus.config import Settings, load
from bus.errors import ConfigError, SophiaError, first_of

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
    except KeyboardInterrupt:
        sys.exit(130)
    except BaseException as exc:
        error = first_of(exc, SophiaError)
        if error is None:
            raise
        print(f"sophia {name}: {error.description}", file=sys.stderr)
        sys.exit(2 if isinstance(error, ConfigError) else 1)
    sys.exit(0)


def agent_class(module: ModuleType) -> type[Agent]:
    """The one Agent subclass ``module`` defines (classes it only imports do not count).

    Raises ConfigError naming the module when it defines none or more than one.
    """
    found = [
        obj
        for obj in vars(module).values()
        if isinstance(obj, type)
        and issubclass(obj, Agent)
        and obj is not Agent
        and obj.__module__ == module.__name__
    ]
    if not found:
        raise ConfigError(f"{module.__name__}: defines no Agent subclass")
    if len(found) > 1:
        names = ", ".join(sorted(cls.__name__ for cls in found))
        raise ConfigError(
            f"{module.__name__}: defines {len(found)} Agent subclasses ({names}); "
            "one module runs one agent"
        )
    return found[0]


def load_agent(module_name: str) -> type[Agent]:
    """Import ``module_name`` and return its Agent subclass.

    Raises ConfigError naming the module: it does not import, or it does not define
    exactly one agent.
    """
    try:
        module = importlib.import_module(module_name)
    except Exception as exc:  # whatever fails at import time, the module cannot run
        raise ConfigError(
            f"{module_name}: cannot be imported ({type(exc).__name__}: {exc})"
        ) from None
    return agent_class(module)


def main(argv: Sequence[str] | None = None) -> NoReturn:
    """``python -m bus.runner MODULE``: run the agent ``MODULE`` defines; never returns."""
    args = list(sys.argv[1:] if argv is None else argv)
    if len(args) != 1 or args[0].startswith("-"):
        print("usage: python -m bus.runner MODULE  (e.g. agents.planner)", file=sys.stderr)
        sys.exit(2)
    run_agent(configured("runner", lambda: load_agent(args[0])))


if __name__ == "__main__":
    main()
