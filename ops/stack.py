"""A local stack on disk: where its files live, what it runs, and the state it reports.

``sophia up`` writes a pid file and a state file under ``SOPHIA_HOME``; ``sophia up
--detach``, ``sophia down`` and ``sophia status`` read them. The state file is
replaced atomically, so a reader sees the previous state or the next, never half.
"""

from __future__ import annotations

import contextlib
import importlib.util
import os
import sys
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlsplit

import msgspec

from agents import AGENT_NAMES
from bus.config import Settings
from ops.natsserver import NatsServer

NATS = "nats"
EDGE = "edge"
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
        """Make the home, data and log directories (private to the user)."""
        for path in (self.home, self.nats_dir, self.logs_dir):
            path.mkdir(parents=True, exist_ok=True, mode=0o700)


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
    """The environment every program gets: ours, with the resolved core settings pinned."""
    env = dict(os.environ)
    env.update(
        SOPHIA_HOME=str(settings.home_path),
        SOPHIA_NATS_URL=settings.nats_url,
        SOPHIA_PREFIX=settings.prefix,
        SOPHIA_EDGE_BIND=settings.edge_bind,
        PYTHONUNBUFFERED="1",
    )
    return env


def default_programs(settings: Settings, only: list[str] | None = None) -> list[Program]:
    """One program per agent, plus the edge when installed; ``only`` picks by name.

    Raises ValueError naming an unknown program.
    """
    names = [*AGENT_NAMES, *([EDGE] if edge_available() else [])]
    for name in only or []:
        if name not in names:
            raise ValueError(f"unknown program {name!r}: choose from {', '.join(names)}")
    env = child_env(settings)
    programs = []
    for name in names:
        if only and name not in only:
            continue
        module = EDGE if name == EDGE else f"agents.{name}"
        kind = EDGE if name == EDGE else "agent"
        programs.append(Program(name, (sys.executable, "-m", module), kind, env))
    return programs


def nats_program(layout: Layout, host: str, port: int) -> Program:
    """nats-server with JetStream storing under the layout's data dir. Raises UnavailableError."""
    server = NatsServer(store_dir=layout.nats_dir, host=host, port=port)
    return Program(NATS, tuple(server.command()), NATS)


def pid_alive(pid: int) -> bool:
    """Whether process ``pid`` exists and is not a zombie (a zombie child is reaped)."""
    with contextlib.suppress(ChildProcessError, OSError):
        done, _ = os.waitpid(pid, os.WNOHANG)
        if done == pid:
            return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return True
    return stat.rsplit(")", 1)[-1].split()[0] != "Z"


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
