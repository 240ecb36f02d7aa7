"""Pure parts of the stack: which NATS URL gets a local server, redaction, restart policy,
the programs ``sophia up`` runs."""

from __future__ import annotations

import pytest

from bus.config import Settings, load, redact_url
from bus.errors import BadRequestError, ConfigError, ConflictError
from ops.stack import default_programs, local_nats_address
from ops.supervisor import CrashWindow, Policy, StackRunningError


@pytest.mark.parametrize(
    ("url", "expected"),
    [
        ("nats://127.0.0.1:4222", ("127.0.0.1", 4222)),
        ("nats://localhost:5000", ("127.0.0.1", 5000)),
        ("nats://127.0.0.1", ("127.0.0.1", 4222)),
        ("nats://user:pw@127.0.0.1:4223", ("127.0.0.1", 4223)),
        ("nats://nats.example.com:4222", None),
        ("tls://127.0.0.1:4222", None),
        ("nats://127.0.0.1:4222,nats://127.0.0.1:4223", None),
    ],
    ids=["loopback", "localhost", "default-port", "credentials", "remote", "tls", "cluster"],
)
def test_local_nats_address_only_for_one_plain_local_url(
    url: str, expected: tuple[str, int] | None
) -> None:
    assert local_nats_address(url) == expected


@pytest.mark.parametrize(
    ("url", "shown"),
    [
        ("nats://user:s3cret@host:4222", "nats://user:***@host:4222"),
        ("nats://host:4222", "nats://host:4222"),
    ],
    ids=["password", "none"],
)
def test_redact_url_hides_the_password(url: str, shown: str) -> None:
    assert redact_url(url) == shown


def test_crash_window_backoff_doubles_up_to_the_cap_then_gives_up() -> None:
    window = CrashWindow(Policy(restart_backoff_s=1, restart_backoff_max_s=3, crash_limit=4))
    delays, gave_up = [], []
    for t in range(4):
        gave_up.append(window.record(float(t)))
        delays.append(window.backoff())
    assert delays == [1, 2, 3, 3]
    assert gave_up == [False, False, False, True]


def test_crash_window_forgets_crashes_older_than_the_window() -> None:
    window = CrashWindow(Policy(restart_backoff_s=1, crash_limit=2, crash_window_s=10))
    assert window.record(0.0) is False
    assert window.record(11.0) is False  # the first crash left the window
    assert window.backoff() == 1


def test_policy_reads_sophia_variables_and_names_a_bad_one() -> None:
    policy = load(Policy, {"SOPHIA_CRASH_LIMIT": "7", "SOPHIA_RESTART_BACKOFF_S": "0.1"})
    assert (policy.crash_limit, policy.restart_backoff_s) == (7, 0.1)
    with pytest.raises(ConfigError) as caught:
        load(Policy, {"SOPHIA_CRASH_LIMIT": "0"})
    assert caught.value.description == "SOPHIA_CRASH_LIMIT: must be a whole number of at least 1"


@pytest.mark.parametrize(
    "name",
    [
        "SOPHIA_RESTART_BACKOFF_S",
        "SOPHIA_RESTART_BACKOFF_MAX_S",
        "SOPHIA_CRASH_WINDOW_S",
        "SOPHIA_STOP_GRACE_S",
        "SOPHIA_READY_TIMEOUT_S",
    ],
)
@pytest.mark.parametrize("value", ["0", "-1", "nan"], ids=["zero", "negative", "nan"])
def test_policy_durations_must_be_positive(name: str, value: str) -> None:
    with pytest.raises(ConfigError) as caught:
        load(Policy, {name: value})
    assert caught.value.description == f"{name}: must be a number greater than 0 and at most 604800"


def test_stack_running_error_is_a_409_conflict() -> None:
    error = StackRunningError()
    assert isinstance(error, ConflictError)
    assert (error.code, error.description) == (409, "a stack is already running")


def test_default_programs_run_each_agent_module_through_the_runner_with_pinned_settings() -> None:
    settings = Settings(home="/tmp/h", nats_url="nats://127.0.0.1:4999", prefix="px")
    programs = {p.name: p for p in default_programs(settings, ["tasks", "coder"])}
    assert set(programs) == {"tasks", "coder"}
    assert programs["coder"].argv[1:] == ("-m", "bus.runner", "agents.coder")
    assert programs["coder"].kind == "agent"
    assert programs["coder"].env["SOPHIA_NATS_URL"] == "nats://127.0.0.1:4999"
    assert programs["coder"].env["SOPHIA_PREFIX"] == "px"


def test_default_programs_name_no_unknown_program_they_were_given() -> None:
    with pytest.raises(BadRequestError) as caught:
        default_programs(Settings(), ["nope-secret"])
    assert caught.value.description.startswith("--only: no such program; choose from ")
    assert "tasks" in caught.value.description
    assert "nope-secret" not in caught.value.description
