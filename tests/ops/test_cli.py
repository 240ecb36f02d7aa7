"""The ``sophia`` command never shows a traceback: one line on stderr and a documented status."""

from __future__ import annotations

import logging
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from bus.errors import (
    BadRequestError,
    ConfigError,
    ConflictError,
    ForbiddenError,
    InternalError,
    NotFoundError,
    OverLimitError,
    PayloadTooLargeError,
    SophiaError,
    TimeoutError_,
    UnavailableError,
    error_from_code,
)
from ops import cli
from ops.commands import status as status_command
from ops.natsserver import find_nats_server, free_port, port_open
from ops.supervisor import StackRunningError
from tests.ops.conftest import Sophia

pytestmark = pytest.mark.anyio

SOPHIA = str(Path(sys.executable).parent / "sophia")


@pytest.fixture
def nowhere(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> str:
    """Point the CLI at a port where nothing answers: a command that connects exits 3."""
    url = f"nats://127.0.0.1:{free_port()}"
    monkeypatch.setenv("SOPHIA_NATS_URL", url)
    monkeypatch.setenv("SOPHIA_HOME", str(tmp_path / "home"))
    monkeypatch.delenv("SOPHIA_LOG_LEVEL", raising=False)
    return url


def console(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    """The installed ``sophia`` script, as a user runs it."""
    return subprocess.run(
        [SOPHIA, *args],
        env=env or dict(os.environ),
        capture_output=True,
        text=True,
        timeout=90,
        check=False,
    )


@pytest.mark.parametrize(
    ("argv", "problem"),
    [
        (["req", "", "{}"], "sophia req: argument subject: must be dot-separated tokens"),
        (["req", "a b", "{}"], "sophia req: argument subject: must be dot-separated tokens"),
        (["req", "a.*", "{}"], "sophia req: argument subject: must be dot-separated tokens"),
        (["req", "x..y", "{}"], "sophia req: argument subject: must be dot-separated tokens"),
        (["req", "x", "--timeout", "-5"], "argument --timeout: must be a number of seconds"),
        (["req", "x", "--timeout", "0"], "argument --timeout: must be a number of seconds"),
        (["req", "x", "--timeout", "nan"], "argument --timeout: must be a number of seconds"),
        (["req", "x", "--timeout", "inf"], "argument --timeout: must be a number of seconds"),
        (["req", "x", "-H", "no-colon"], "argument -H/--header: must be NAME:VALUE"),
        (["req", "x", "-H", "a b:c"], "argument -H/--header: must be NAME:VALUE"),
        (["req", "x", "-H", "X:a\nb"], "argument -H/--header: must be NAME:VALUE on one line"),
        (["req", "x", "{nope"], "sophia: body is not valid JSON"),
        (["status", "--wait", "-1"], "argument --wait: must be a number of seconds"),
        (["dlq", "show", "0"], "argument id: must be a whole number of at least 1"),
        (["dlq", "ls", "--limit", "x"], "argument --limit: must be a whole number of at least 1"),
    ],
    ids=[
        "empty-subject",
        "subject-with-space",
        "wildcard-subject",
        "empty-token",
        "negative-timeout",
        "zero-timeout",
        "nan-timeout",
        "infinite-timeout",
        "header-without-colon",
        "header-name-with-space",
        "header-value-with-newline",
        "body-not-json",
        "negative-wait",
        "zero-id",
        "limit-not-a-number",
    ],
)
def test_cli_bad_argument_is_one_line_and_exit_2_before_connecting(
    nowhere: str, capsys: pytest.CaptureFixture[str], argv: list[str], problem: str
) -> None:
    status = cli.main(argv)
    out, err = capsys.readouterr()
    assert status == 2  # 3 would mean it tried to connect
    assert problem in err
    assert err.count("\n") == 1 and err.endswith("\n")
    assert "Traceback" not in err
    assert out == ""


@pytest.mark.parametrize(
    "argv",
    [
        ["req", "s3cret value", "{}"],
        ["req", "x", "--timeout", "s3cret"],
        ["req", "x", "-H", "s3cret value"],
        ["dlq", "show", "s3cret"],
        ["up", "--only", "s3cret"],
    ],
    ids=["subject", "timeout", "header", "letter-id", "program"],
)
def test_cli_error_names_the_argument_without_quoting_it(
    nowhere: str, capsys: pytest.CaptureFixture[str], argv: list[str]
) -> None:
    assert cli.main(argv) == 2
    assert "s3cret" not in capsys.readouterr().err


@pytest.mark.parametrize("subject", ["", "a b", "a.>"], ids=["empty", "with-space", "wildcard"])
def test_console_bad_subject_is_one_line_without_traceback(nowhere: str, subject: str) -> None:
    run = console("req", subject, "{}")
    assert run.returncode == 2
    assert run.stderr.startswith("sophia req: argument subject: must be dot-separated tokens")
    assert run.stderr.count("\n") == 1
    assert run.stdout == ""


@pytest.mark.parametrize(
    ("error", "status"),
    [
        (BadRequestError(), 2),
        (ConfigError(), 2),
        (NotFoundError(), 2),
        (ForbiddenError(), 2),
        (ConflictError(), 2),
        (StackRunningError(), 2),
        (PayloadTooLargeError(), 2),
        (OverLimitError(), 2),
        (error_from_code(418, "teapot"), 2),
        (UnavailableError(), 3),
        (TimeoutError_(), 3),
        (InternalError(), 1),
        (error_from_code(502, "bad gateway"), 1),
        (SophiaError(), 1),
    ],
    ids=lambda v: repr(v) if isinstance(v, SophiaError) else str(v),
)
def test_exit_status_follows_the_error_hierarchy(error: SophiaError, status: int) -> None:
    assert cli.exit_status(error) == status


def test_cli_unexpected_error_is_one_line_without_its_text(
    nowhere: str, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    def boom(args: object) -> int:
        raise RuntimeError("db password is hunter2")

    monkeypatch.setattr(status_command, "status", boom)
    assert cli.main(["status"]) == 1
    err = capsys.readouterr().err
    assert err == (
        "sophia: internal error (RuntimeError); SOPHIA_LOG_LEVEL=debug shows the traceback\n"
    )


@pytest.mark.parametrize(
    ("raised", "status", "err"),
    [
        (ExceptionGroup("g", [ValueError("x"), UnavailableError("down")]), 3, "sophia: down\n"),
        (
            ExceptionGroup("g", [ExceptionGroup("h", [KeyError("k")])]),
            1,
            "sophia: internal error (KeyError)",
        ),
        (KeyboardInterrupt(), 130, ""),
    ],
    ids=["group-with-sophia-error", "nested-group", "interrupt"],
)
def test_cli_reports_what_a_group_holds_and_ctrl_c_as_130(
    nowhere: str,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
    raised: BaseException,
    status: int,
    err: str,
) -> None:
    def fail(args: object) -> int:
        raise raised

    monkeypatch.setattr(status_command, "status", fail)
    assert cli.main(["status"]) == status
    shown = capsys.readouterr().err
    assert err in shown and shown.count("\n") == (1 if err else 0)


DEBUG_CRASH = """
import sys
from ops import cli
from ops.commands import status
def boom(args):
    raise RuntimeError("unexpected")
status.status = boom
sys.exit(cli.main(["status"]))
"""


@pytest.mark.parametrize("level", ["info", "debug"])
def test_cli_traceback_of_an_unexpected_error_only_in_the_debug_log(
    nowhere: str, level: str
) -> None:
    env = {**os.environ, "SOPHIA_LOG_LEVEL": level}
    run = subprocess.run(
        [sys.executable, "-c", DEBUG_CRASH],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert run.returncode == 1
    assert run.stderr.endswith(
        "sophia: internal error (RuntimeError); SOPHIA_LOG_LEVEL=debug shows the traceback\n"
    )
    if level == "debug":
        assert "debug sophia.cli command_crashed" in run.stderr
        assert "Traceback" in run.stderr and "RuntimeError: unexpected" in run.stderr
    else:
        assert run.stderr.count("\n") == 1


def test_console_with_stdout_closed_early_exits_141_quietly(nowhere: str) -> None:
    read, write = os.pipe()
    os.close(read)  # the reader is gone before anything is written
    try:
        run = subprocess.run(
            [SOPHIA, "down"], stdout=write, stderr=subprocess.PIPE, text=True, timeout=60
        )
    finally:
        os.close(write)
    assert run.returncode == 141
    assert run.stderr == ""


@pytest.fixture
def plain_nats(tmp_path: Path) -> Iterator[str]:
    """A nats-server without JetStream that wants user ``u`` with password ``p``."""
    port = free_port()
    process = subprocess.Popen(
        [str(find_nats_server()), "-a", "127.0.0.1", "-p", str(port), "--user", "u", "--pass", "p"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        wait_for_port(port)
        yield f"127.0.0.1:{port}"
    finally:
        process.kill()
        process.wait(10)


def wait_for_port(port: int) -> None:
    deadline = time.monotonic() + 10
    while not port_open("127.0.0.1", port):
        assert time.monotonic() < deadline, f"nothing listens on {port}"
        time.sleep(0.02)


@pytest.mark.parametrize(
    "argv", [["status"], ["dlq", "ls"], ["dlq", "replay", "1"]], ids=["status", "ls", "replay"]
)
async def test_cli_without_jetstream_says_so_in_one_line(
    plain_nats: str, sophia: Sophia, monkeypatch: pytest.MonkeyPatch, argv: list[str]
) -> None:
    monkeypatch.setenv("SOPHIA_NATS_URL", f"nats://u:p@{plain_nats}")
    run = await sophia(*argv)
    assert run.status == 3
    assert run.err == (
        f"sophia: JetStream does not answer at nats://u:***@{plain_nats}; is it enabled (-js)?\n"
    )


async def test_cli_names_refused_credentials_without_showing_them(
    plain_nats: str, sophia: Sophia, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("SOPHIA_NATS_URL", f"nats://u:wrong@{plain_nats}")
    run = await sophia("status")
    assert run.status == 2
    assert run.err == (
        f"sophia: NATS at nats://u:***@{plain_nats} refused the credentials; "
        "check SOPHIA_NATS_URL\n"
    )


def test_console_up_without_jetstream_stops_with_one_line(plain_nats: str, tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("SOPHIA_")}
    env.update(
        SOPHIA_HOME=str(tmp_path / "home"),
        SOPHIA_NATS_URL=f"nats://u:p@{plain_nats}",
        SOPHIA_LOG_LEVEL="warning",
    )
    run = console("up", "--only", "tasks", env=env)
    assert run.returncode == 3
    assert run.stderr.endswith(
        f"sophia: JetStream does not answer at nats://u:***@{plain_nats}; is it enabled (-js)?\n"
    )
    assert "Traceback" not in run.stderr
    assert not (tmp_path / "home" / "sophia.pid").exists()


def test_cli_library_error_log_is_one_line(
    nowhere: str, capsys: pytest.CaptureFixture[str]
) -> None:
    assert cli.main(["down"]) == 0  # every command routes nats-py's and asyncio's logs
    capsys.readouterr()
    try:
        raise OSError("connection reset")
    except OSError as exc:
        logging.getLogger("nats.aio.client").error("nats: encountered error", exc_info=exc)
    assert capsys.readouterr().err == "sophia: nats.aio.client: nats: encountered error (OSError)\n"
