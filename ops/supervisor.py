"""Keeping a local stack up: nats-server, one process per agent, the edge.

Guarantees: programs start after nats-server listens and the streams, consumers and
buckets exist; a program that exits on its own is restarted after a capped
exponential backoff, and one that crashes ``crash_limit`` times within
``crash_window_s`` is left down and reported (status ``failed``). Stopping is
ordered and bounded: agents and the edge get SIGTERM (so they drain), SIGKILL after
``stop_grace_s``, then nats-server the same way. The state file always says what
is running.
"""

from __future__ import annotations

import logging
import os
import subprocess
import time
from collections import deque
from collections.abc import Iterable

import anyio
import msgspec
import nats.errors
from anyio.abc import Process, TaskGroup, TaskStatus

from bus import topology
from bus.config import Count, Seconds, Settings, redact_url
from bus.connection import Link, close, connect
from bus.errors import ConflictError, SophiaError, UnavailableError
from ops.natsserver import START_TIMEOUT_S, port_open
from ops.session import nats_failure
from ops.stack import (
    NATS,
    Layout,
    Program,
    ProgramState,
    StackState,
    read_pid,
    write_state,
)

log = logging.getLogger("sophia.ops")

KILL_WAIT_S = 5.0
TOPOLOGY_CLOSE_S = 5.0
SPAWN_FAILED = 127


class StackRunningError(ConflictError):
    """Another supervisor already runs a stack from this ``SOPHIA_HOME`` (409)."""

    default_description = "a stack is already running"


class Policy(msgspec.Struct, kw_only=True, frozen=True):
    """How the supervisor restarts and stops programs (``SOPHIA_RESTART_*`` etc.).

    Bounds are checked by :func:`bus.config.load`: every duration is a number of seconds
    greater than 0, ``crash_limit`` a whole number of at least 1.
    """

    restart_backoff_s: Seconds = 0.5
    restart_backoff_max_s: Seconds = 30.0
    crash_limit: Count = 5
    crash_window_s: Seconds = 60.0
    stop_grace_s: Seconds = 15.0
    ready_timeout_s: Seconds = 60.0


class CrashWindow:
    """Recent crash times of one program: decides the backoff and when to give up."""

    def __init__(self, policy: Policy) -> None:
        self.policy = policy
        self.times: deque[float] = deque()

    def record(self, now: float) -> bool:
        """Note a crash at ``now``; True when the limit is reached within the window."""
        self.times.append(now)
        while self.times and self.times[0] < now - self.policy.crash_window_s:
            self.times.popleft()
        return len(self.times) >= self.policy.crash_limit

    def backoff(self) -> float:
        """Delay before the next start: doubles with each recent crash, capped."""
        exponent = max(len(self.times) - 1, 0)
        delay = self.policy.restart_backoff_s * 2**exponent
        return min(delay, self.policy.restart_backoff_max_s)


class Supervisor:
    """Runs one local stack until :meth:`stop`; see the module docstring for guarantees."""

    def __init__(
        self,
        settings: Settings,
        layout: Layout,
        programs: Iterable[Program],
        policy: Policy | None = None,
        nats: Program | None = None,
    ) -> None:
        self.settings = settings
        self.layout = layout
        self.programs = list(programs)
        self.policy = policy or Policy()
        self.nats = nats
        self.phase = "starting"
        self.states = {
            p.name: ProgramState(
                name=p.name, kind=p.kind, argv=list(p.argv), log=str(layout.log_file(p.name))
            )
            for p in ([nats] if nats else []) + self.programs
        }
        self.stopped = anyio.Event()
        self._stop = anyio.Event()
        self._stopping = False
        self._processes: dict[str, Process] = {}

    def stop(self) -> None:
        """Ask :meth:`run` to stop everything (ordered, bounded); safe to call twice."""
        self._stopping = True
        self._stop.set()

    async def run(self, *, task_status: TaskStatus[Supervisor] = anyio.TASK_STATUS_IGNORED) -> None:
        """Start the stack, report ``started()`` once every program is spawned, keep it up.

        Raises StackRunningError, UnavailableError (NATS does not start or answer).
        """
        self._claim_pid_file()
        try:
            async with anyio.create_task_group() as tg:
                try:
                    await self._start(tg)
                    task_status.started(self)
                    await self._stop.wait()
                finally:
                    with anyio.CancelScope(shield=True):
                        await self._shutdown()
                    tg.cancel_scope.cancel()
        except BaseExceptionGroup as group:
            raise unwrap(group) from None
        finally:
            for state in self.states.values():
                state.pid = None
                state.status = "failed" if state.status == "failed" else "stopped"
            self.phase = "stopped"
            self._save()
            self.layout.pid_file.unlink(missing_ok=True)
            self.stopped.set()

    async def _start(self, tg: TaskGroup) -> None:
        self._save()
        if self.nats is not None:
            await tg.start(self._keep, self.nats)
        await self._ensure_topology()
        for program in self.programs:
            await tg.start(self._keep, program)
        self.phase = "running"
        self._save()
        log.info("stack_running", extra={"programs": len(self.programs)})

    def _claim_pid_file(self) -> None:
        """Write our pid file; exclusive, so two supervisors never share one home.

        Raises StackRunningError when a live supervisor holds it.
        """
        self.layout.create()
        path = self.layout.pid_file
        if path.exists() and read_pid(self.layout) is None:
            path.unlink(missing_ok=True)  # left by a supervisor that died
        try:
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        except FileExistsError:
            other = read_pid(self.layout)
            raise StackRunningError(
                f"a stack is already running from {self.layout.home} (pid {other}); "
                "`sophia down` stops it"
            ) from None
        with os.fdopen(fd, "w") as fh:
            fh.write(f"{os.getpid()}\n")

    async def _ensure_topology(self) -> None:
        """Streams, KV buckets and one durable consumer per agent, created idempotently.

        Raises UnavailableError (no NATS, or no JetStream there), or the SophiaError for
        what JetStream refused.
        """
        link = Link()
        nc = await connect(self.settings, "sophia-supervisor", link)
        try:
            js = nc.jetstream(timeout=self.settings.request_timeout_s)
            await topology.ensure_streams(js, self.settings)
            for program in self.programs:
                if program.kind == "agent":
                    await topology.ensure_consumer(js, self.settings, program.name)
        except nats.errors.Error as exc:
            raise nats_failure(exc, self.settings.safe_nats_url) from exc
        finally:
            await close(nc, link, TOPOLOGY_CLOSE_S)  # on purpose: no "disconnected" warning

    async def _keep(self, program: Program, *, task_status: TaskStatus[None]) -> None:
        """Run ``program`` until the stack stops, restarting it after crashes."""
        state = self.states[program.name]
        crashes = CrashWindow(self.policy)
        first = True
        while True:
            code = await self._run_once(program, state, task_status, first=first)
            task_status, first = anyio.TASK_STATUS_IGNORED, False
            state.pid, state.last_exit = None, code
            if self._stopping:
                log.info("program_stopped", extra={"program": program.name, "code": code})
                break
            log.warning("program_exited", extra={"program": program.name, "code": code})
            state.last_exit_at = time.time()
            given_up = crashes.record(time.monotonic())
            state.crashes = len(crashes.times)
            if given_up:
                state.status = "failed"
                self._save()
                limit = self.policy.crash_limit
                extra = {"program": program.name, "crashes": limit, "log": state.log}
                log.error("program_failed", extra=extra)
                return
            state.status = "backoff"
            self._save()
            with anyio.move_on_after(crashes.backoff()):
                await self._stop.wait()
            if self._stopping:
                break
            state.restarts += 1
        state.status = "stopped"
        self._save()

    async def _run_once(
        self, program: Program, state: ProgramState, task_status: TaskStatus[None], *, first: bool
    ) -> int:
        """Spawn ``program`` once and wait for it to exit; returns its exit status.

        Raises UnavailableError when nats-server does not come up on its first start.
        """
        try:
            process = await self._spawn(program)
        except OSError as exc:
            log.error("program_spawn_failed", extra={"program": program.name, "error": str(exc)})
            if program.kind == NATS and first:
                raise UnavailableError(f"cannot start nats-server: {exc.strerror}") from None
            task_status.started()
            return SPAWN_FAILED
        self._processes[program.name] = process
        state.pid, state.status = process.pid, "running"
        self._save()
        log.info("program_started", extra={"program": program.name, "pid": process.pid})
        try:
            if program.kind == NATS and first:
                await self._wait_listening(process)
            task_status.started()
            if not self._stopping:
                await process.wait()
        finally:
            with anyio.CancelScope(shield=True):
                await self._reap(process)
            self._processes.pop(program.name, None)
        return process.returncode if process.returncode is not None else -1

    async def _spawn(self, program: Program) -> Process:
        with self.layout.log_file(program.name).open("ab") as out:
            return await anyio.open_process(
                program.argv,
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
                env=program.env or None,
                start_new_session=True,  # a Ctrl-C reaches the supervisor only
            )

    async def _wait_listening(self, process: Process) -> None:
        """Return once nats-server accepts connections. Raises UnavailableError."""
        host, port = self._nats_address()
        with anyio.move_on_after(START_TIMEOUT_S):
            while process.returncode is None:
                if await anyio.to_thread.run_sync(port_open, host, port):
                    return
                await anyio.sleep(0.05)
        if process.returncode is not None:
            raise UnavailableError(f"nats-server exited at start; see {self._nats_log()}")
        raise UnavailableError(f"nats-server did not listen within {START_TIMEOUT_S:g}s")

    def _nats_address(self) -> tuple[str, int]:
        assert self.nats is not None  # only called for the nats program
        argv = self.nats.argv
        return argv[argv.index("-a") + 1], int(argv[argv.index("-p") + 1])

    def _nats_log(self) -> str:
        return str(self.layout.log_file(NATS))

    async def _reap(self, process: Process) -> None:
        """SIGTERM, bounded wait, SIGKILL, bounded wait: the process is gone after this."""
        if process.returncode is None:
            process.terminate()
            with anyio.move_on_after(self.policy.stop_grace_s):
                await process.wait()
        if process.returncode is None:
            process.kill()
            with anyio.move_on_after(KILL_WAIT_S):
                await process.wait()

    async def _shutdown(self) -> None:
        """Agents and edge first (SIGTERM, bounded, SIGKILL), then nats-server."""
        if self.phase in ("stopping", "stopped"):
            return
        self.stop()
        self.phase = "stopping"
        self._save()
        log.info("stack_stopping")
        others = [p for name, p in self._processes.items() if name != NATS]
        await self._stop_all(others)
        nats = self._processes.get(NATS)
        if nats is not None:
            await self._stop_all([nats])
        log.info("stack_stopped")

    async def _stop_all(self, processes: list[Process]) -> None:
        async with anyio.create_task_group() as tg:
            for process in processes:
                tg.start_soon(self._reap, process)

    def state(self) -> StackState:
        edge = next((p for p in self.programs if p.kind == "edge"), None)
        return StackState(
            pid=os.getpid(),
            phase=self.phase,
            home=str(self.layout.home),
            nats_url=redact_url(self.settings.nats_url),
            nats_started=self.nats is not None,
            nats_dir=str(self.layout.nats_dir),
            edge_url=f"http://{self.settings.edge_bind}" if edge else None,
            supervisor_log=str(self.layout.log_file("supervisor")),
            programs=list(self.states.values()),
            crash_limit=self.policy.crash_limit,
            crash_window_s=self.policy.crash_window_s,
        )

    def _save(self) -> None:
        write_state(self.layout, self.state())


def unwrap(group: BaseExceptionGroup) -> BaseException:
    """The first SophiaError inside ``group`` (what the CLI reports), else the group."""
    for exc in group.exceptions:
        if isinstance(exc, BaseExceptionGroup):
            exc = unwrap(exc)
        if isinstance(exc, SophiaError):
            return exc
    return group
