"""A local stack on disk: where its files live, what it runs, and the state it reports.

``sophia up`` writes a pid file and a state file under ``SOPHIA_HOME``; ``sophia up
--detach``, ``sophia down`` and ``sophia status`` read them. The state file is
replaced atomically, so a reader sees the previous state or the next, never half.

The agents are found, not listed: every public module of the ``agents`` package is one
agent, run as ``python -m bus.runner agents.<module>``. :func:`agent_modules` answers only
for a consistent package (each module imports and defines exactly one Agent subclass, no two
agents share a name) and otherwise names the module and what is wrong.
"""

from __future__ import annotations

import importlib
import importlib.util
import os
import pkgutil
import sys
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlsplit

import msgspec

from bus.config import Settings
from bus.errors import BadRequestError, ConfigError
from bus.processes import pid_alive
from bus.runner import load_agent
from bus.subjects import is_token
from ops.natsserver import NatsServer

NATS = "nats"
EDGE = "edge"
SUPERVISOR = "supervisor"
#: the package whose modules are the agents (read at call time, so a test can point it away)
AGENTS_PACKAGE = "agents"
RUNNER = "bus.runner"
_LOCAL_HOSTS = {"localhost", "127.0.0.1", "::1", "0.0.0.0", ""}


@dataclass(frozen=True, slots=True)
class Layout:
    """The files of one stack, all under ``home``."""

    home: Path

    @property
    def nats_dir(self) -> Path:
        return self.home / "nats"

    @property
    def logs_dir(self) -> Path:
        return self.home / "logs"

    @property
    def pid_file(self) -> Path:
        return self.home / "sophia.pid"

    @property
    def state_file(self) -> Path:
        return self.home / "stack.json"

    def log_file(self, name: str) -> Path:
        return self.logs_dir / f"{name}.log"

    def create(self) -> None:
        """Make the home, data and log directories (private to the user).

        Raises ConfigError naming ``SOPHIA_HOME`` when they cannot be made.
        """
        for path in (self.home, self.nats_dir, self.logs_dir):
            try:
                path.mkdir(parents=True, exist_ok=True, mode=0o700)
            except OSError as exc:
                reason = exc.strerror or type(exc).__name__
                raise ConfigError(f"SOPHIA_HOME: cannot create {path} ({reason})") from None


@dataclass(frozen=True, slots=True)
class Program:
    """One long-running process the supervisor keeps up."""

    name: str
    argv: tuple[str, ...]
    kind: str = "agent"  # "agent" | "edge" | "nats"
    env: dict[str, str] = field(default_factory=dict)


class ProgramState(msgspec.Struct, kw_only=True):
    """What the supervisor knows about one program right now."""

    name: str
    kind: str
    status: str = "starting"  # starting | running | backoff | failed | stopped
    pid: int | None = None
    argv: list[str] = msgspec.field(default_factory=list)
    restarts: int = 0
    last_exit: int | None = None
    #: when it last exited on its own (Unix time), and how many such exits fall within the
    #: supervisor's crash window: a crash loop shows here before the program is left down
    last_exit_at: float | None = None
    crashes: int = 0
    log: str = ""


class StackState(msgspec.Struct, kw_only=True):
    """The state file: where everything is and how each program is doing."""

    pid: int
    phase: str  # starting | running | stopping | stopped
    home: str
    nats_url: str
    nats_started: bool
    nats_dir: str
    edge_url: str | None
    supervisor_log: str
    programs: list[ProgramState]
    #: the restart policy: a program that exits this often within the window is left down
    crash_limit: int = 0
    crash_window_s: float = 0.0


def local_nats_address(url: str) -> tuple[str, int] | None:
    """(host, port) when ``url`` is one plain ``nats://`` address on this machine, else None."""
    if "," in url:
        return None
    parts = urlsplit(url)
    if parts.scheme != "nats":
        return None
    host = parts.hostname or ""
    if host not in _LOCAL_HOSTS and not host.startswith("127."):
        return None
    bind = "127.0.0.1" if host in {"localhost", ""} else host
    return bind, parts.port or 4222


def edge_available() -> bool:
    """Whether this install has an edge process (``python -m edge``)."""
    return importlib.util.find_spec("edge.__main__") is not None


def child_env(settings: Settings) -> dict[str, str]:
    """The environment every program gets: ours, with the resolved core settings pinned.

    Span files are on unless turned off, so ``sophia trace`` can show what the stack did.
    """
    env = dict(os.environ)
    env.update(
        SOPHIA_HOME=str(settings.home_path),
        SOPHIA_NATS_URL=settings.nats_url,
        SOPHIA_PREFIX=settings.prefix,
        SOPHIA_EDGE_BIND=settings.edge_bind,
        SOPHIA_TRACE_FILES="off" if settings.trace_files == "off" else "on",
        PYTHONUNBUFFERED="1",
    )
    return env


def agent_modules(package: str | None = None) -> dict[str, str]:
    """``{agent name: module}`` for every public module of ``package`` (default
    :data:`AGENTS_PACKAGE`), in module-name order; a module whose name starts with ``_`` is a
    helper, not an agent.

    Raises ConfigError naming the module: it does not import, it defines no Agent subclass or
    more than one, its agent's name is taken (by another module or by the stack itself) or
    is not one subject token.
    """
    package = package or AGENTS_PACKAGE
    try:
        imported = importlib.import_module(package)
    except Exception as exc:  # whatever fails at import time, nothing can be discovered
        raise ConfigError(f"{package}: cannot be imported ({type(exc).__name__}: {exc})") from None
    path = getattr(imported, "__path__", None)
    if path is None:
        raise ConfigError(f"{package}: is a module, not a package of agent modules")
    found: dict[str, str] = {}
    for info in sorted(pkgutil.iter_modules(path), key=lambda m: m.name):
        if info.name.startswith("_"):
            continue
        module = f"{package}.{info.name}"
        name = load_agent(module).name
        if not is_token(name):
            raise ConfigError(f"{module}: its agent name must be letters, digits, '_' or '-'")
        taken = found.get(name) or (
            "the stack itself" if name in (NATS, EDGE, SUPERVISOR) else None
        )
        if taken:
            raise ConfigError(f"{module}: agent name {name!r} is taken by {taken}")
        found[name] = module
    return found


def default_programs(settings: Settings, only: list[str] | None = None) -> list[Program]:
    """One program per discovered agent, plus the edge when installed; ``only`` picks by name.

    Raises ConfigError (see :func:`agent_modules`), BadRequestError for a name in ``only``
    that is no program.
    """
    modules = agent_modules()
    names = [*modules, *([EDGE] if edge_available() else [])]
    if any(name not in names for name in only or []):
        raise BadRequestError(f"--only: no such program; choose from {', '.join(names)}")
    env = child_env(settings)
    programs = []
    for name in names:
        if only and name not in only:
            continue
        if name == EDGE:
            programs.append(Program(EDGE, (sys.executable, "-m", EDGE), EDGE, env))
        else:
            argv = (sys.executable, "-m", RUNNER, modules[name])
            programs.append(Program(name, argv, "agent", env))
    return programs


def nats_program(layout: Layout, host: str, port: int) -> Program:
    """nats-server with JetStream storing under the layout's data dir. Raises UnavailableError."""
    server = NatsServer(store_dir=layout.nats_dir, host=host, port=port)
    return Program(NATS, tuple(server.command()), NATS)


def runs(pid: int, argv: list[str]) -> bool:
    """Whether ``pid`` is alive and still runs exactly ``argv`` (not a reused pid)."""
    if not argv or not pid_alive(pid):
        return False
    try:
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return False
    return cmdline.rstrip(b"\0").split(b"\0") == [a.encode() for a in argv]


def read_pid(layout: Layout) -> int | None:
    """The supervisor pid from the pid file when that process is alive, else None."""
    try:
        pid = int(layout.pid_file.read_text().strip())
    except (OSError, ValueError):
        return None
    return pid if pid_alive(pid) else None


def read_state(layout: Layout) -> StackState | None:
    """The last state the supervisor wrote, or None when there is none readable."""
    try:
        return msgspec.json.decode(layout.state_file.read_bytes(), type=StackState)
    except (OSError, msgspec.DecodeError):
        return None


def write_state(layout: Layout, state: StackState) -> None:
    """Replace the state file atomically."""
    tmp = layout.state_file.with_suffix(".tmp")
    tmp.write_bytes(msgspec.json.format(msgspec.json.encode(state)))
    tmp.replace(layout.state_file)
