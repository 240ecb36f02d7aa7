"""Bounded subprocesses, and a repository's own tests run in a sandbox.

:func:`run_bounded` is how every quality tool runs: its own session (process group), stdout and
stderr captured up to a bound, a wall-clock timeout; on timeout, cancellation or exit the whole
process group is killed with SIGKILL and reaped, so nothing it started in that group outlives
the call.

:func:`run_tests` runs ``python -m pytest`` on a tree it does not trust, with:

- a wall-clock timeout (the process group killed);
- resource limits set in the child before it execs (address space, CPU seconds ≈ the timeout,
  file size, number of processes, no core files): a small Python shim calls
  ``resource.setrlimit`` and then ``execvp``, since ``anyio.open_process`` has no
  ``preexec_fn``; limits are only ever lowered, and an unprivileged child cannot raise them
  back (not even as root of its own user namespace);
- the environment of :func:`clean_env`: an allowlist (PATH, LANG, LC_*, a fresh HOME and
  TMPDIR, ``PYTHONPATH`` = the tree, ``PYTHONDONTWRITEBYTECODE``) less any name that looks like
  a secret, so no key, token or ``SOPHIA_*`` setting reaches the tests;
- no network when ``unshare -rn`` works here (:func:`network_isolation`, probed once): a new
  user and network namespace, where only a loopback that is down exists; with a pid namespace
  too when ``unshare --pid --kill-child`` works, so that even a process that left the group
  dies with the run. When it does not work the record's ``note`` says that the tests ran WITH
  network access, and why.

What it does not do: confine the filesystem. The tests run as this user and can read and
write whatever this user can; the tree should be a disposable worktree.
"""

from __future__ import annotations

import json
import math
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
import xml.etree.ElementTree as ET  # nosec B405 - our own pytest's junit file, size-capped
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import anyio
from anyio.abc import ByteReceiveStream, ByteSendStream

from bus.schemas.tasks import ToolFindingRecord, ToolRunRecord

#: what :func:`run_bounded` keeps of each of stdout and stderr: this much from the start...
OUTPUT_HEAD_BYTES = 16 * 1024 * 1024
#: ...and this much from the end, when there was more
OUTPUT_TAIL_BYTES = 256 * 1024
#: how long a killed process group may take to be reaped before we stop waiting
REAP_TIMEOUT_S = 10.0

#: limits of a test run's processes (each process has its own, except NPROC: per user)
MEMORY_BYTES = 4 * 1024**3
FILE_BYTES = 512 * 1024**2
#: processes the test run may add to those this user already has
NPROC_HEADROOM = 512
#: CPU seconds beyond the wall-clock timeout before SIGXCPU, and before SIGKILL
CPU_GRACE_S = 5

JUNIT_MAX_BYTES = 64 * 1024 * 1024
MAX_TEST_FINDINGS = 200
FINDING_MESSAGE_CHARS = 1_000

_KEEP = frozenset({"PATH", "LANG", "LANGUAGE"})
_SECRET = re.compile(
    r"(^SOPHIA_|^AWS_|^PORTKEY_|KEY$|TOKEN$|SECRET|PASSWORD|PASSWD|CREDENTIAL|_AUTH$|^AUTH_)",
    re.IGNORECASE,
)


# ---- bounded subprocesses ----------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Completed:
    """How a bounded subprocess ended. ``returncode`` is None when it was killed on timeout."""

    argv: tuple[str, ...]
    returncode: int | None
    stdout: bytes
    stderr: bytes
    timed_out: bool
    seconds: float
    truncated: bool  # stdout or stderr lost its middle to the output bounds


class _Capture:
    """The head of a stream up to a bound, and its tail after that."""

    def __init__(self, head: int, tail: int) -> None:
        self._head_limit, self._tail_limit = head, tail
        self._head = bytearray()
        self._tail = bytearray()
        self.truncated = False

    async def drain(self, stream: ByteReceiveStream) -> None:
        async for chunk in stream:
            room = self._head_limit - len(self._head)
            if room > 0:
                self._head += chunk[:room]
                chunk = chunk[room:]
            if chunk:
                self._tail += chunk
                if len(self._tail) > self._tail_limit:
                    self.truncated = True
                    del self._tail[: len(self._tail) - self._tail_limit]

    def value(self) -> bytes:
        if self.truncated:
            return bytes(self._head) + b"\n[... output truncated ...]\n" + bytes(self._tail)
        return bytes(self._head + self._tail)


async def _feed(stream: ByteSendStream, data: bytes) -> None:
    try:
        await stream.send(data)
        await stream.aclose()
    except (anyio.BrokenResourceError, anyio.ClosedResourceError):
        pass  # the process exited without reading all of it: its answer says why


def _kill_group(pid: int) -> None:
    try:
        os.killpg(pid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass  # the group is gone already


async def run_bounded(
    argv: Sequence[str],
    *,
    cwd: Path | str,
    timeout_s: float,
    env: Mapping[str, str] | None = None,
    stdin: bytes | None = None,
    head_bytes: int = OUTPUT_HEAD_BYTES,
    tail_bytes: int = OUTPUT_TAIL_BYTES,
) -> Completed:
    """Run ``argv`` in its own process group, at most ``timeout_s`` seconds, and return how it
    ended. The group is killed (SIGKILL) and the process reaped on every way out: exit, timeout,
    cancellation. Raises OSError when the program cannot be started."""
    if not timeout_s > 0:
        raise ValueError(f"timeout_s must be positive, not {timeout_s!r}")
    started = time.monotonic()
    process = await anyio.open_process(
        list(argv),
        stdin=subprocess.PIPE if stdin is not None else subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        cwd=str(cwd),
        env=dict(env) if env is not None else None,
        start_new_session=True,
    )
    out = _Capture(head_bytes, tail_bytes)
    err = _Capture(head_bytes, tail_bytes)
    timed_out = False

    async def wait_then_reap() -> None:
        await process.wait()
        # what the leader left behind in its group would hold our pipes open
        _kill_group(process.pid)

    try:
        with anyio.move_on_after(timeout_s) as scope:
            async with anyio.create_task_group() as tg:
                assert process.stdout is not None and process.stderr is not None
                tg.start_soon(out.drain, process.stdout)
                tg.start_soon(err.drain, process.stderr)
                if stdin is not None:
                    assert process.stdin is not None
                    tg.start_soon(_feed, process.stdin, stdin)
                tg.start_soon(wait_then_reap)
        timed_out = scope.cancelled_caught
    finally:
        _kill_group(process.pid)
        with anyio.CancelScope(shield=True), anyio.move_on_after(REAP_TIMEOUT_S):
            await process.wait()
            await process.aclose()
    return Completed(
        argv=tuple(argv),
        returncode=None if timed_out else process.returncode,
        stdout=out.value(),
        stderr=err.value(),
        timed_out=timed_out,
        seconds=time.monotonic() - started,
        truncated=out.truncated or err.truncated,
    )


def tail_text(data: bytes, chars: int = 2_000) -> str:
    """The last ``chars`` characters of a process's output, as text."""
    text = data.decode("utf-8", errors="replace").strip()
    return text[-chars:]


# ---- environment ------------------------------------------------------------------------------


def is_secret_name(name: str) -> bool:
    """Whether an environment variable's name looks like it holds a secret or Sophia's own
    settings (``SOPHIA_*``, ``AWS_*``, ``PORTKEY_*``, ``*_KEY``, ``*_TOKEN``, ``*SECRET*``...)."""
    return bool(_SECRET.search(name))


_shared_home: str | None = None
_shared_home_lock = threading.Lock()


def _default_home() -> str:
    """One empty directory per process for the HOME of tools that get no HOME of their own."""
    global _shared_home
    with _shared_home_lock:
        if _shared_home is None or not os.path.isdir(_shared_home):
            _shared_home = tempfile.mkdtemp(prefix="sophia-home-")
        return _shared_home


def clean_env(
    root: Path | str | None = None,
    *,
    home: Path | str | None = None,
    tmpdir: Path | str | None = None,
    source: Mapping[str, str] | None = None,
) -> dict[str, str]:
    """The environment for a subprocess that runs code we do not trust: from ``source``
    (default ``os.environ``) only PATH, LANG, LANGUAGE and LC_*; HOME = ``home`` (default an
    empty directory of this process's own); TMPDIR = ``tmpdir`` when given, else the caller's
    TMPDIR when it has one; ``PYTHONPATH`` = ``root`` when given; ``PYTHONDONTWRITEBYTECODE=1``.
    A name that looks like a secret (:func:`is_secret_name`) is never copied."""
    source = os.environ if source is None else source
    env = {
        name: value
        for name, value in source.items()
        if (name in _KEEP or name.startswith("LC_")) and not is_secret_name(name)
    }
    env.setdefault("PATH", os.defpath)
    env["HOME"] = str(home) if home is not None else _default_home()
    if tmpdir is not None:
        env["TMPDIR"] = str(tmpdir)
    elif source.get("TMPDIR"):
        env["TMPDIR"] = source["TMPDIR"]
    if root is not None:
        env["PYTHONPATH"] = str(root)
    env["PYTHONDONTWRITEBYTECODE"] = "1"
    return env


# ---- network isolation ------------------------------------------------------------------------

_PROBE_TIMEOUT_S = 10.0
_isolation: tuple[tuple[str, ...], str] | None = None  # (unshare prefix or (), reason)
_isolation_lock = threading.Lock()


def _probe(argv: list[str]) -> str:
    """ "" when ``argv`` ran and exited 0, else why not."""
    try:
        done = subprocess.run(  # nosec B603 - fixed argv, no shell
            argv,
            stdin=subprocess.DEVNULL,
            capture_output=True,
            timeout=_PROBE_TIMEOUT_S,
            check=False,
        )
    except subprocess.TimeoutExpired:
        return f"`{' '.join(argv)}` did not finish within {_PROBE_TIMEOUT_S:g}s"
    except OSError as exc:
        return f"`{' '.join(argv)}` could not start: {exc.strerror or exc}"
    if done.returncode != 0:
        why = done.stderr.decode("utf-8", errors="replace").strip()[-300:]
        return f"`{' '.join(argv)}` exited {done.returncode}" + (f": {why}" if why else "")
    return ""


def _isolation_prefix() -> tuple[tuple[str, ...], str]:
    global _isolation
    with _isolation_lock:
        if _isolation is None:
            unshare = shutil.which("unshare")
            if unshare is None:
                _isolation = ((), "unshare is not on PATH")
            elif not (why := _probe([unshare, "-rn", "true"])):
                full = (unshare, "-rn", "--pid", "--kill-child")
                if not _probe([*full, "true"]):
                    _isolation = (full, "user, network and pid namespaces (unshare -rn --pid)")
                else:
                    _isolation = ((unshare, "-rn"), "user and network namespaces (unshare -rn)")
            else:
                _isolation = ((), why)
        return _isolation


def network_isolation() -> tuple[bool, str]:
    """Whether test runs get no network (``unshare -rn`` works here), and how or why not.
    Probed once per process; blocks up to a few seconds the first time."""
    prefix, how = _isolation_prefix()
    return bool(prefix), how


# ---- resource limits --------------------------------------------------------------------------

#: run as ``python -c _SHIM LIMITS_JSON PROGRAM ARGS...``: lower the limits, then exec
_SHIM = """\
import json, os, resource, sys
for name, soft, hard in json.loads(sys.argv[1]):
    which = getattr(resource, name)
    _, current = resource.getrlimit(which)
    if current != resource.RLIM_INFINITY:
        hard = min(hard, current)
    resource.setrlimit(which, (min(soft, hard), hard))
os.execvp(sys.argv[2], sys.argv[2:])
"""


def _user_processes() -> int | None:
    """How many processes this user has now (Linux ``/proc``), or None when unknown."""
    uid = os.getuid()
    try:
        entries = os.listdir("/proc")
    except OSError:
        return None
    count = 0
    for entry in entries:
        if entry.isdigit():
            try:
                if os.stat(f"/proc/{entry}").st_uid == uid:
                    count += 1
            except OSError:
                continue
    return count


def _limits(timeout_s: float, memory_bytes: int) -> list[tuple[str, int, int]]:
    cpu = math.ceil(timeout_s) + CPU_GRACE_S
    limits = [
        ("RLIMIT_AS", memory_bytes, memory_bytes),
        ("RLIMIT_CPU", cpu, cpu + CPU_GRACE_S),
        ("RLIMIT_FSIZE", FILE_BYTES, FILE_BYTES),
        ("RLIMIT_CORE", 0, 0),
    ]
    processes = _user_processes()
    if processes is not None:
        nproc = processes + NPROC_HEADROOM
        limits.append(("RLIMIT_NPROC", nproc, nproc))
    return limits


def limited_argv(argv: Sequence[str], *, timeout_s: float, memory_bytes: int) -> list[str]:
    """``argv`` behind the shim that sets the resource limits of a test run."""
    limits = json.dumps(_limits(timeout_s, memory_bytes))
    return [sys.executable, "-I", "-S", "-c", _SHIM, limits, *argv]


# ---- pytest -----------------------------------------------------------------------------------

_SUMMARY = re.compile(
    r"^=*\s*((?:\d+ (?:passed|failed|errors?|skipped|xfailed|xpassed|warnings?|deselected)"
    r"(?:, )?)+)(?: in [\d.]+s.*)?\s*=*$"
)
_SHORT = re.compile(r"^(FAILED|ERROR) (\S+?)(?: - (.*))?$")


def _summary_line(stdout: str) -> str:
    for line in reversed(stdout.splitlines()):
        match = _SUMMARY.match(line.strip())
        if match:
            return match.group(1).strip().rstrip(",")
    return ""


def _module_of(file: str) -> str:
    return file.removesuffix(".py").replace("/", ".")


def _node_id(case: ET.Element) -> tuple[str, str]:
    """(file, node id) of a junit ``testcase`` written with ``junit_family=xunit1``."""
    classname = case.get("classname", "")
    name = case.get("name", "")
    file = (case.get("file") or "").replace(os.sep, "/")
    if not file:
        return "", f"{classname}::{name}" if classname else name
    module = _module_of(file)
    if classname == module:
        return file, f"{file}::{name}"
    if classname.startswith(module + "."):
        classes = classname[len(module) + 1 :].split(".")
        return file, "::".join([file, *classes, name])
    return file, f"{file}::{name}"


def _failure_line(text: str, file: str, fallback: int) -> int:
    """The last line of ``file`` the traceback names (``file:NN:``), else ``fallback``."""
    if file:
        hits = re.findall(rf"(?m)^{re.escape(file)}:(\d+):", text)
        if hits:
            return int(hits[-1])
    return fallback


def _junit_findings(path: Path) -> list[ToolFindingRecord] | None:
    """The failed and erroring test cases of a junit file; None when there is none to read."""
    try:
        if path.stat().st_size > JUNIT_MAX_BYTES:
            return None
        tree = ET.parse(path)  # nosec B314 - written by the pytest we ran, size-capped
    except (OSError, ET.ParseError):
        return None
    found: list[ToolFindingRecord] = []
    for case in tree.iter("testcase"):
        for kind in ("failure", "error"):
            problem = case.find(kind)
            if problem is None:
                continue
            file, node = _node_id(case)
            try:
                fallback = int(case.get("line", "-1")) + 1  # pytest writes it 0-based
            except ValueError:
                fallback = 0
            text = problem.text or ""
            line = _failure_line(text, file, max(fallback, 0))
            message = (problem.get("message") or "").strip().splitlines()
            what = "failed" if kind == "failure" else "error"
            found.append(
                ToolFindingRecord(
                    id="",
                    tool="pytest",
                    file=file,
                    line=line,
                    code=what,
                    message=f"{node} {what}: {message[0] if message else kind}"[
                        :FINDING_MESSAGE_CHARS
                    ],
                    severity="high",
                )
            )
            break
    return found


def _stdout_findings(stdout: str) -> list[ToolFindingRecord]:
    """FAILED/ERROR lines of pytest's short summary, when there is no junit file."""
    found = []
    for line in stdout.splitlines():
        match = _SHORT.match(line.strip())
        if match:
            node = match.group(2)
            what = "failed" if match.group(1) == "FAILED" else "error"
            file = node.split("::", 1)[0] if node.endswith(".py") or "::" in node else ""
            found.append(
                ToolFindingRecord(
                    id="",
                    tool="pytest",
                    file=file,
                    code=what,
                    message=f"{node} {what}: {match.group(3) or ''}".strip()[
                        :FINDING_MESSAGE_CHARS
                    ],
                    severity="high",
                )
            )
    return found


def _numbered(found: list[ToolFindingRecord]) -> list[ToolFindingRecord]:
    found = found[:MAX_TEST_FINDINGS]
    for i, finding in enumerate(found, 1):
        finding.id = f"pytest-{i}"
    return found


async def run_tests(
    root: Path,
    *,
    timeout_s: float = 300,
    python: str | None = None,
    memory_bytes: int = MEMORY_BYTES,
) -> ToolRunRecord:
    """Run the tree's own tests (``python -m pytest`` in ``root``) in the sandbox described
    above. ``ok`` is True when every test passed or there were none (summary ``no tests``);
    failing and erroring tests are findings ``pytest-1``... with file and line where known.
    ``ran`` is False only when pytest could not be started at all."""
    root = Path(await anyio.Path(root).resolve())
    python = python or sys.executable
    prefix, how = await anyio.to_thread.run_sync(_isolation_prefix)
    notes = []
    if not prefix:
        notes.append(f"tests ran WITH network access: unshare -rn is not available here ({how})")
    with tempfile.TemporaryDirectory(prefix="sophia-tests-", ignore_cleanup_errors=True) as scratch:
        home, tmp, out = (Path(scratch) / part for part in ("home", "tmp", "out"))
        for part in (home, tmp, out):
            part.mkdir(mode=0o700)
        junit = out / "junit.xml"
        pytest = [
            python,
            "-m",
            "pytest",
            "-q",
            "-rfE",
            # assertion messages with whole values: pytest otherwise cuts the middle out of a
            # long one ('ghp_shF3V0yY...b1FrAdThMZAp8'), so a token loses the shape redaction
            # knows while half of it is still there (pytest 8+; older ones ignore the option)
            "-o",
            "verbosity_assertions=2",
            "-p",
            "no:cacheprovider",
            "-o",
            "junit_family=xunit1",
            "--junitxml",
            str(junit),
        ]
        argv = limited_argv([*prefix, *pytest], timeout_s=timeout_s, memory_bytes=memory_bytes)
        try:
            done = await run_bounded(
                argv,
                cwd=root,
                timeout_s=timeout_s,
                env=clean_env(root, home=home, tmpdir=tmp),
            )
        except OSError as exc:
            return ToolRunRecord(
                tool="pytest", ran=False, ok=False, note=f"could not start pytest: {exc}"
            )
        stdout = done.stdout.decode("utf-8", errors="replace")
        stderr = done.stderr.decode("utf-8", errors="replace")
        junit_found = await anyio.to_thread.run_sync(_junit_findings, junit)
    found = junit_found if junit_found is not None else _stdout_findings(stdout)
    findings = _numbered(found)
    summary = _summary_line(stdout)
    if done.timed_out:
        notes.append(f"timed out after {timeout_s:g}s; the run was killed")
        return ToolRunRecord(
            tool="pytest",
            ran=True,
            ok=False,
            note="; ".join(notes),
            seconds=done.seconds,
            findings=findings,
            summary=summary or "timed out",
        )
    code = done.returncode
    if code == 5:
        return ToolRunRecord(
            tool="pytest",
            ran=True,
            ok=True,
            note="; ".join(notes),
            seconds=done.seconds,
            summary="no tests",
        )
    if code != 0 and "No module named pytest" in stderr:
        notes.append(f"pytest is not installed for {python}")
        return ToolRunRecord(tool="pytest", ran=False, ok=False, note="; ".join(notes))
    if code not in (0, 1):
        reason = {2: "interrupted", 3: "internal error", 4: "usage error"}.get(
            code or 0, f"exit code {code}"
        )
        if code is not None and code < 0:
            reason = f"killed by signal {-code}"
        detail = tail_text(done.stderr or done.stdout, 500)
        notes.append(f"pytest {reason}" + (f": {detail}" if detail else ""))
    elif code == 1 and not findings:
        detail = tail_text(done.stderr or done.stdout, 500)
        notes.append("pytest failed without naming a test" + (f": {detail}" if detail else ""))
    return ToolRunRecord(
        tool="pytest",
        ran=True,
        ok=code == 0,
        note="; ".join(notes),
        seconds=done.seconds,
        findings=findings,
        summary=summary,
    )
