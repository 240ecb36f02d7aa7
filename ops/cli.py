"""The ``sophia`` command: subcommands come from the modules in ``ops.commands``.

Exit status: 0 success, 1 error, 2 bad input or configuration (4xx), 3 unavailable
or timed out (503/408), 130 interrupted.
"""

from __future__ import annotations

import argparse
import importlib
import pkgutil
import sys
from collections.abc import Awaitable, Callable, Sequence
from typing import Any, TypeVar

import anyio

import ops.commands
from bus.errors import SophiaError
from bus.runner import backend_options

T = TypeVar("T")


def exit_status(error: SophiaError) -> int:
    """The CLI's translation of an error code into an exit status."""
    if error.code in (408, 503):
        return 3
    if 400 <= error.code < 500:
        return 2
    return 1


def run_async(fn: Callable[..., Awaitable[T]], *args: Any) -> T:
    """Run ``fn(*args)`` on the event loop (uvloop when installed)."""
    return anyio.run(fn, *args, backend="asyncio", backend_options=backend_options())


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="sophia", description="Sophia: agents for AI-assisted coding over NATS."
    )
    subparsers = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for info in sorted(pkgutil.iter_modules(ops.commands.__path__), key=lambda m: m.name):
        module = importlib.import_module(f"ops.commands.{info.name}")
        module.register(subparsers)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        status = int(args.func(args) or 0)
    except SophiaError as exc:
        print(f"sophia: {exc.description}", file=sys.stderr)
        status = exit_status(exc)
    except KeyboardInterrupt:
        status = 130
    return status


def console() -> None:
    """Console-script entry point."""
    sys.exit(main())


if __name__ == "__main__":
    console()
