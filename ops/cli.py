"""The ``sophia`` command: subcommands come from the modules in ``ops.commands``.

Guarantee: whatever goes wrong, the user sees one line on stderr and an exit status, never a
traceback. A SophiaError prints its description; anything unexpected prints ``sophia:
internal error (<type>)`` and its traceback goes to the log only at debug level
(``SOPHIA_LOG_LEVEL=debug``). A usage error prints one line naming the argument.

Exit status (from the error hierarchy, :func:`exit_status`):

- 0 success
- 1 error: a server-side failure (5xx other than 503/408) or an unexpected one
- 2 bad input, configuration or a refusal: any 4xx ClientError (429 over limit included:
  the command as given was refused) and argparse usage errors
- 3 unavailable or timed out (503/408): a RetryableError on the server side; the same
  command may pass later
- 130 interrupted (Ctrl-C); 141 stdout was closed early (``sophia dlq ls | head``)
"""

from __future__ import annotations

import argparse
import contextlib
import importlib
import logging
import math
import os
import pkgutil
import sys
from collections.abc import Awaitable, Callable, Sequence
from typing import Any, NoReturn, TypeVar

import anyio

import ops.commands
from bus import logs
from bus.errors import ClientError, RetryableError, SophiaError
from bus.runner import backend_options

T = TypeVar("T")

log = logging.getLogger("sophia.cli")

USAGE = 2
INTERRUPTED = 130
BROKEN_PIPE = 141


def exit_status(error: SophiaError) -> int:
    """The CLI's translation of an error into an exit status (see the module docstring)."""
    if isinstance(error, RetryableError) and not isinstance(error, ClientError):
        return 3
    if isinstance(error, ClientError):
        return 2
    return 1


def run_async(fn: Callable[..., Awaitable[T]], *args: Any) -> T:
    """Run ``fn(*args)`` on the event loop (uvloop when installed)."""
    return anyio.run(fn, *args, backend="asyncio", backend_options=backend_options())


def seconds(text: str) -> float:
    """argparse type: a finite number of seconds greater than 0."""
    try:
        value = float(text)
    except ValueError:
        value = math.nan
    if not (math.isfinite(value) and value > 0):
        raise argparse.ArgumentTypeError("must be a number of seconds greater than 0")
    return value


def whole(text: str) -> int:
    """argparse type: a whole number of at least 1."""
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value < 1:
        raise argparse.ArgumentTypeError("must be a whole number of at least 1")
    return value


class Parser(argparse.ArgumentParser):
    """argparse whose usage error is one line: ``sophia req: argument --timeout: …``."""

    def error(self, message: str) -> NoReturn:
        self.exit(USAGE, f"{self.prog}: {message} (see `{self.prog} --help`)\n")


def build_parser() -> argparse.ArgumentParser:
    parser = Parser(prog="sophia", description="Sophia: agents for AI-assisted coding over NATS.")
    subparsers = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for info in sorted(pkgutil.iter_modules(ops.commands.__path__), key=lambda m: m.name):
        module = importlib.import_module(f"ops.commands.{info.name}")
        module.register(subparsers)
    return parser


class OneLine(logging.Handler):
    """What nats-py and asyncio log on their own (``nats: encountered error`` with a
    traceback, a task's unretrieved exception) as one line on stderr; the traceback goes to
    Sophia's log at debug level."""

    def emit(self, record: logging.LogRecord) -> None:
        error = record.exc_info[1] if record.exc_info else None
        reason = f" ({type(error).__name__})" if error is not None else ""
        first = (record.getMessage().splitlines() or [""])[0]  # asyncio adds context lines
        print(f"sophia: {record.name}: {first}{reason}", file=sys.stderr)
        if error is not None:
            log.debug("library_error", exc_info=record.exc_info, extra={"logger": record.name})


def _quiet_libraries() -> None:
    """Route the loggers of the libraries the CLI runs through :class:`OneLine` (once)."""
    for name in ("nats", "asyncio"):
        logger = logging.getLogger(name)
        if not any(isinstance(h, OneLine) for h in logger.handlers):
            logger.addHandler(OneLine(logging.WARNING))  # found, so no lastResort traceback


def main(argv: Sequence[str] | None = None) -> int:
    """Run one ``sophia`` command; returns its exit status and raises nothing."""
    if os.environ.get("SOPHIA_LOG_LEVEL", "").strip().lower() == "debug":
        logs.configure("debug")
    _quiet_libraries()
    try:
        return _run(argv)
    except KeyboardInterrupt:
        return INTERRUPTED
    except Exception as exc:  # the CLI's one translation place: see the module docstring
        return failed(exc)


def _run(argv: Sequence[str] | None) -> int:
    try:
        args = build_parser().parse_args(argv)
    except SystemExit as exc:  # argparse after --help (0) or a usage error (2), already said
        return exc.code if isinstance(exc.code, int) else USAGE
    status = int(args.func(args) or 0)
    sys.stdout.flush()  # here, so a reader that went away is reported like any failure
    return status


def failed(exc: Exception) -> int:
    """Say what went wrong in one line on stderr; return the exit status for it."""
    error = _first(exc)
    if isinstance(error, BrokenPipeError):
        _silence_stdout()
        return BROKEN_PIPE
    if isinstance(error, SophiaError):
        log.debug("command_failed", exc_info=exc, extra={"code": error.code})
        print(f"sophia: {error.description}", file=sys.stderr)
        return exit_status(error)
    log.debug("command_crashed", exc_info=exc)
    print(
        f"sophia: internal error ({type(error).__name__}); "
        "SOPHIA_LOG_LEVEL=debug shows the traceback",
        file=sys.stderr,
    )
    return 1


def _first(exc: BaseException) -> BaseException:
    """The error to report: ``exc``, or inside an exception group its first SophiaError
    (else its first error)."""
    if not isinstance(exc, BaseExceptionGroup):
        return exc
    leaves = [_first(inner) for inner in exc.exceptions]
    return next((e for e in leaves if isinstance(e, SophiaError)), leaves[0])


def _silence_stdout() -> None:
    """Point stdout at /dev/null, so the flush at exit does not fail again on the pipe."""
    with contextlib.suppress(OSError, ValueError, AttributeError):
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())


def console() -> None:
    """Console-script entry point."""
    sys.exit(main())


if __name__ == "__main__":
    console()
